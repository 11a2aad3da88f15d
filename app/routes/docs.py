"""The API's interactive documentation, served without a network: nothing is loaded from a CDN.

FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN, so on a laptop with no
internet (a district office on a bad day) they are blank pages. The same builds are served here
from an installed package instead (fastapi-offline ships Swagger UI 5 and ReDoc 2; only its files
are used, through FastAPI's documented `get_swagger_ui_html` and `get_redoc_html`).

Each page carries a Content-Security-Policy of its own: its inline script allowed by hash, every
other script, style, image and request from this server only. The assets and every other answer
keep the service's headers (routes/headers.py).
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"

# A script element without attributes: the pages' only inline code (those with `src` load a file).
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    """Serve the documentation's JavaScript, CSS and icon from the installed package."""
    return StaticFiles(packages=[ASSETS_PACKAGE])


def policy(page: bytes) -> str:
    """Write one page's Content-Security-Policy: its inline scripts by hash, nothing from elsewhere."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}".rstrip(),
            # Both renderers set style attributes and ReDoc writes <style> elements as it draws.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",  # Swagger UI's icons are data: URLs
            "font-src 'self' data:",
            "connect-src 'self'",  # the OpenAPI document, and "Try it out"
            "worker-src 'self' blob:",  # ReDoc's search index is built in a worker from a blob
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["content-security-policy"] = policy(bytes(response.body))
    return response


def _root(request: Request) -> str:
    """The path this application is mounted at behind a proxy ("" when it is not)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Show the API in Swagger UI, from local files."""
    root = _root(request)
    return _page(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_URL}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            oauth2_redirect_url=None,
            # No badge fetched from the online validator: the page asks nothing of the internet.
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """Show the API in ReDoc, from local files."""
    root = _root(request)
    return _page(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS_URL}/{FAVICON}",
            with_google_fonts=False,
        )
    )
