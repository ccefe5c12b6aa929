"""The benchmark server: the real app plus bare comparison endpoints from each section."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import FastAPI

from app.main import create_app
from bench import sections


def build() -> FastAPI:
    application = create_app()
    service_routes = list(application.router.routes)
    for module_info in pkgutil.iter_modules(sections.__path__):
        module = importlib.import_module(f"bench.sections.{module_info.name}")
        register = getattr(module, "register_bare_routes", None)
        if register is not None:
            register(application)
    # Starlette matches routes in order: bare endpoints go first, so they are not charged for
    # trying every service route before their own (which would flatter every ratio).
    bare_routes = [r for r in application.router.routes if r not in service_routes]
    application.router.routes[:] = bare_routes + service_routes
    return application


app = build()
