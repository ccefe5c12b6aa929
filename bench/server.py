"""The benchmark server: the real app plus bare comparison endpoints from each section."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import FastAPI

from app.main import create_app
from bench import sections


def build() -> FastAPI:
    application = create_app()
    for module_info in pkgutil.iter_modules(sections.__path__):
        module = importlib.import_module(f"bench.sections.{module_info.name}")
        register = getattr(module, "register_bare_routes", None)
        if register is not None:
            register(application)
    return application


app = build()
