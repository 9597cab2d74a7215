"""The APIs' documentation pages with their assets served by the service itself: no CDN, so the
pages render in an air-gapped cluster.

FastAPI's default ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from jsdelivr.  Instead, both
apps are created with ``docs_url=None, redoc_url=None`` and :func:`install_docs` adds:

- ``/docs``: Swagger UI, its JavaScript and CSS from ``/docs/assets/`` — the files of the
  ``swagger-ui-bundle`` package (Swagger UI's own dist, installed with the project);
- ``/docs/oauth2-redirect`` as FastAPI has it;
- ``/redoc``: a redirect to ``/docs`` (ReDoc's bundle is not shipped; one documentation UI).

The pages hold no data (the OpenAPI document is open too); every API route still needs a token.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

ASSETS = "/docs/assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def assets_dir() -> str:
    import swagger_ui_bundle

    path: str = swagger_ui_bundle.swagger_ui_path
    return path


class _Assets(StaticFiles):
    """Only the three files the page loads (not the bundle's other files), cached a day."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ASSET_FILES:
            return PlainTextResponse("not found", status_code=404)
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response


def install_docs(app: FastAPI) -> None:
    """``app`` must have been created with ``docs_url=None, redoc_url=None``."""
    title = f"{app.title} — API"

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=title,
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/docs", status_code=307)

    app.router.routes.extend([
        Route("/docs", docs, include_in_schema=False),
        Route("/docs/oauth2-redirect", oauth2_redirect, include_in_schema=False),
        Route("/redoc", redoc, include_in_schema=False),
        Mount(ASSETS, app=_Assets(directory=assets_dir()), name="docs-assets"),
    ])
