"""What every console response carries and checks: the session, the CSRF token, the headers.

Console routes use `ConsoleRoute`: it adds a strict Content-Security-Policy (scripts and styles
only from /admin/static, nothing inline, no framing) and no-store caching to every response,
sends a browser without a session to the sign-in page, and renders domain errors and refused
forms as pages (a stale rollback's 409 and a form's 422 included) rather than JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from app.admin import sessions
from app.admin.rendering import is_htmx, render
from app.admin.sessions import ConsoleSession
from app.core import permissions
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import DomainError, Forbidden, Unauthorized, invalid_fields

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Besides the headers every answer of the service carries (app/core/headers.py: nosniff, no
# framing, and its own `frame-ancestors` policy, which a browser enforces alongside this one).
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    # The one-time link's secret is in its URL: it never leaves in a Referer.
    "Referrer-Policy": "no-referrer",
}
SIGN_IN_PATH = "/admin/sign-in"
SAFE_METHODS = frozenset({"GET", "HEAD"})


class SignInRequired(Unauthorized):
    code = "sign_in_required"


class CsrfRefused(Forbidden):
    code = "csrf_refused"


class ConsoleRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                response = _sign_in_needed(request, exc)
            except DomainError as exc:
                response = error_page(request, exc)
            except RequestValidationError as exc:  # a form or query the schema refused
                response = error_page(request, invalid_fields(exc))
            response.headers.update(SECURITY_HEADERS)
            return response

        return console_handler


def _sign_in_needed(request: Request, exc: SignInRequired) -> Response:
    if request.method in SAFE_METHODS and not is_htmx(request):
        return RedirectResponse(SIGN_IN_PATH, status_code=303)
    return error_page(request, exc)


def error_page(request: Request, exc: DomainError) -> Response:
    template = "_error.html" if is_htmx(request) else "error.html"
    return render(
        request,
        template,
        {"status_code": exc.status_code, "code": exc.code, "detail": exc.detail},
        status_code=exc.status_code,
    )


def cookie_options(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": secure, "path": "/admin"}


def set_session_cookie(response: Response, opened: sessions.OpenedSession, *, secure: bool) -> None:
    response.set_cookie(
        sessions.SESSION_COOKIE,
        opened.token,
        expires=opened.expires_at,
        **cookie_options(secure),
    )
    response.delete_cookie(sessions.SIGN_IN_COOKIE, **cookie_options(secure))


async def _presented_csrf(request: Request) -> str | None:
    header = request.headers.get(sessions.CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(sessions.CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def get_console_session(request: Request, session: SessionDep) -> ConsoleSession:
    """The signed-in operator; a request that changes something must also carry the session's
    CSRF token (the X-CSRF-Token header, which htmx sends, or the form's csrf_token field)."""
    console = await sessions.find_session(session, request.cookies.get(sessions.SESSION_COOKIE))
    if console is None:
        raise SignInRequired("sign in to the console first")
    # The permission table is the enforcement here too: the session stands for its caller.
    permissions.rule_for(request).check(console.principal)
    if request.method not in SAFE_METHODS and not console.csrf_matches(
        await _presented_csrf(request)
    ):
        raise CsrfRefused("the request carries no valid CSRF token for this session")
    request.state.console = console
    return console


ConsoleDep = Annotated[ConsoleSession, Depends(get_console_session)]


async def check_sign_in_form(request: Request, settings: SettingsDep) -> None:
    """The sign-in forms come before any session: their CSRF token is double-submitted (a
    cookie set with the form, and the same value in the form)."""
    cookie = request.cookies.get(sessions.SIGN_IN_COOKIE)
    presented = await _presented_csrf(request)
    if not cookie or not sessions.tokens_match(cookie, presented):
        raise CsrfRefused("the sign-in form has expired: reload the page and try again")


SignInFormChecked = Depends(check_sign_in_form)
