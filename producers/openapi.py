"""The OpenAPI document of the HTTP app, and Swagger UI / ReDoc served without any CDN.

| route | what |
|---|---|
| ``GET /openapi.json`` | the OpenAPI 3.1 document (FastAPI's, completed by ``install``) |
| ``GET /docs`` | Swagger UI |
| ``GET /redoc`` | ReDoc |
| ``GET /docs/assets/...`` | their JavaScript, CSS and icon, from the ``fastapi-offline`` package |

``install`` completes what FastAPI generates from the routes: the ERP document JSON Schema
(``producers.api_models.openapi_schemas``) under ``components/schemas``, and no 422
"HTTPValidationError" answers (the app answers a bad query parameter with 400 and the
error body; only ``POST /v1/documents`` answers 422, with its own issues).

``python -m producers.openapi [FILE]`` writes the document (default: standard output);
``docs/openapi.json`` is its committed copy and a test fails when it is not current.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from producers.api_models import openapi_schemas

__all__ = ["ASSETS_PATH", "install", "mount_docs", "openapi_document", "render"]

ASSETS_PATH: Final = "/docs/assets"
_VALIDATION_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")


def _assets_directory() -> str:
    return str(files("fastapi_offline") / "static")


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (module docstring)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the document it builds; completing it is idempotent, so the cached
        # one may be completed again without harm.
        document = generate()
        _complete(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(openapi_schemas())
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            answer = responses.get("422", {})
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == "#/components/schemas/HTTPValidationError":
                del responses["422"]
    for name in _VALIDATION_SCHEMAS:
        schemas.pop(name, None)


def mount_docs(app: FastAPI, *, title: str) -> None:
    """``/docs`` and ``/redoc`` with every asset served by the app itself (works offline).
    The app must be created with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=_assets_directory()), name="docs-assets")

    def _urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_PATH}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = _urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} — Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # The validator badge would call validator.swagger.io from the reader's browser.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = _urls(request)
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} — ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )


def openapi_document() -> dict[str, Any]:
    """The document, from an app built on throw-away parts (nothing is connected to)."""
    from producers.bootstrap import Components
    from producers.http import create_app
    from schemas.settings import Settings
    from schemas.tenants import TenantsFile
    from store.db import make_engine, make_session_factory
    from worker.enqueue import RecordingEnqueuer

    settings = Settings(environment="development", database_url="sqlite://")
    engine = make_engine(settings.database_url)
    try:
        parts = Components(
            settings,
            TenantsFile.model_construct(tenants=[]),
            make_session_factory(engine),
            RecordingEnqueuer(),
        )
        return create_app(settings, components=parts).openapi()
    finally:
        engine.dispose()


def render(document: dict[str, Any]) -> str:
    """The file text: 2-space indent, UTF-8 characters kept, final newline."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


if __name__ == "__main__":  # pragma: no cover
    text = render(openapi_document())
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
