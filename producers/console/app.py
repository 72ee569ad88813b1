"""Serves the console: ``/console/`` (one HTML page), its static files, login and session.

| route | answers |
|---|---|
| ``GET /console`` | redirect to ``/console/`` |
| ``GET /console/`` | the page (it asks ``/console/session`` and shows the login form on 401) |
| ``GET /console/static/…`` | CSS, JavaScript, icons shipped in the package (no CDN, no build) |
| ``GET /console/session`` | ``{name, role, actor, csrf_token, flower_url}`` or 401 |
| ``POST /console/login`` | JSON ``{name, password}`` → session cookie; 401 on a wrong pair |
| ``POST /console/logout`` | deletes the cookie (needs the CSRF token of the session) |

The page calls the ``/v1`` routes with the session cookie (``producers.http._caller`` accepts
it) or, for scripts, with ``Authorization: Bearer <API key>``. None of these routes is in the
OpenAPI document: the console is not part of the API contract.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRouter
from fastapi.security.utils import get_authorization_scheme_param
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from producers.console.auth import COOKIE_NAME, CSRF_HEADER, ConsoleAuth
from schemas.settings import Settings

__all__ = ["STATIC_DIR", "install_console"]

STATIC_DIR: Final = Path(__file__).parent / "static"

# The page loads nothing from elsewhere and may not be framed (clickjacking on the buttons).
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_NO_STORE: Final = {"Cache-Control": "no-store"}


def _error(status: int, code: str, message: str, message_zh: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "message_zh": message_zh}},
        status_code=status,
        headers=_NO_STORE,
    )


def install_console(app: FastAPI, settings: Settings, auth: ConsoleAuth) -> None:
    """Add the console routes and static files to ``app``; ``app.state.console_auth`` is what
    ``producers.http`` reads sessions with."""
    app.state.console_auth = auth
    flower_url = settings.console.flower_url
    router = APIRouter(include_in_schema=False)

    def who(request: Request) -> dict[str, Any] | None:
        """The caller as the page needs it: a valid API key or a valid session, else None."""
        keys = request.app.state.api_keys
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        session = None if token else auth.session(request.cookies.get(COOKIE_NAME))
        if session is None:
            # An API key (or none, when the API is open in development) acts as operator. A
            # header cannot be sent cross-site by a form: no CSRF token needed.
            actor = keys.actor_or_none(token if scheme.lower() == "bearer" else None)
            if actor is None:
                return None
            return {"name": actor, "role": "operator", "actor": actor, "csrf_token": None}
        return {
            "name": session.name,
            "role": session.role,
            "actor": session.actor,
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at,
        }

    @router.get("/console")
    async def console_root() -> Response:
        return RedirectResponse("/console/", status_code=307)

    @router.get("/console/")
    async def console_page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    @router.get("/console/session")
    async def console_session(request: Request) -> Response:
        caller = who(request)
        if caller is None:
            return _error(
                401,
                "unauthorized",
                "not signed in: log in to the console",
                "未登录：请先登录操作台",
            )
        caller["flower_url"] = flower_url
        caller["environment"] = settings.environment
        return JSONResponse(caller, headers=_NO_STORE)

    def same_origin(request: Request) -> bool:
        # Browsers send Origin on every cross-site POST; a form from elsewhere is refused here
        # (and cannot send application/json without a preflight we never answer).
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return hmac.compare_digest(origin.split("://", 1)[-1].encode(), host.encode())

    @router.post("/console/login")
    async def console_login(request: Request) -> Response:
        refused = _error(
            401,
            "login_failed",
            "wrong account name or password",
            "账号或密码错误",
        )
        if not same_origin(request):
            return _error(403, "cross_origin", "login from another site", "不允许跨站登录")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _error(
                415, "json_required", "send {name, password} as JSON", "请以JSON发送账号和密码"
            )
        try:
            body = json.loads(await request.body())
            name, password = body["name"], body["password"]
        except (ValueError, KeyError, TypeError):
            return refused
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > 1024:
            return refused
        cookie = await run_in_threadpool(auth.login, name.strip(), password)
        if cookie is None:
            return refused
        session = auth.session(cookie)
        assert session is not None  # just issued
        response = JSONResponse(
            {
                "name": session.name,
                "role": session.role,
                "actor": session.actor,
                "csrf_token": session.csrf_token,
                "expires_at": session.expires_at,
                "flower_url": flower_url,
                "environment": settings.environment,
            },
            headers=_NO_STORE,
        )
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=auth.max_age_seconds,
            path="/",
            secure=auth.secure_cookie,
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post("/console/logout")
    async def console_logout(request: Request) -> Response:
        session = auth.session(request.cookies.get(COOKIE_NAME))
        if session is not None and not auth.csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return _error(
                403,
                "csrf_failed",
                f"the {CSRF_HEADER} header is missing or wrong",
                f"缺少或错误的 {CSRF_HEADER}",
            )
        response = JSONResponse({"logged_out": True}, headers=_NO_STORE)
        response.delete_cookie(
            COOKIE_NAME,
            path="/",
            secure=auth.secure_cookie,
            httponly=True,
            samesite="strict",
        )
        return response

    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
