"""The console's pages: one Jinja2 environment over app/admin/templates, autoescaped."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "—"


def _number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters["when"] = _when
environment.filters["number"] = _number


def is_htmx(request: Request) -> bool:
    """An htmx request wants a fragment, except when htmx restores a page from history (Back
    after a search that pushed its URL): that one needs the whole page."""
    headers = request.headers
    return (
        headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"
    )


def render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A page (or, for an htmx request, whatever fragment `template` is) with the request's
    console session and CSRF token in its context."""
    console = getattr(request.state, "console", None)
    body = environment.get_template(template).render(
        request=request,
        console=console,
        csrf_token=console.csrf_token if console is not None else None,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status_code)
