"""The app factory: create_app(settings) builds one independent application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import Settings
from app.outage import RETRY_AFTER, unavailable
from app.routes import (
    admin_pages,
    api,
    dashboard,
    docs,
    exports,
    health,
    incidents,
    integrations,
    network,
    pages,
    people,
    web,
    webhooks,
)
from app.routes.headers import SECURITY_HEADERS, SecurityHeaders
from app.services.runtime import Runtime


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    processor: bool = True,
    dispatcher: bool = True,
    scheduler: bool = True,
) -> FastAPI:
    """Build the API, the webhooks and the background parts of one process."""
    settings = settings or Settings()
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.start(intake=True, processor=processor, dispatcher=dispatcher, scheduler=scheduler)
        try:
            yield
        finally:
            rt.stop()

    # /docs and /redoc are served from local files (routes/docs.py), not FastAPI's CDN pages.
    app = FastAPI(title="Kengele", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = rt
    # Innermost: pages, assets and API answers are compressed for slow links (a map page's first
    # load is a third of its size); the webhooks answer before reaching it, uncompressed.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    # Added first, so it runs inside the webhooks' middleware: webhooks add the same headers on
    # their own fast path (routes/webhooks.respond) and never pay for this layer.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(webhooks.Webhooks, runtime=rt)
    app.include_router(api.router)
    app.include_router(incidents.router)
    app.include_router(exports.router)
    app.include_router(people.router)
    app.include_router(integrations.router)
    app.include_router(health.router)
    app.include_router(network.router)
    app.include_router(docs.router)
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    app.include_router(dashboard.router)
    app.include_router(pages.router)
    app.include_router(admin_pages.router)
    app.mount(web.STATIC_URL, web.assets(), name="static")

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """Build the API document once: the routes, then the provider webhooks the middleware answers."""
        if app.openapi_schema is None:
            schema = build_openapi()
            schema["paths"].update(webhooks.openapi_paths())
            operations = [op for item in schema["paths"].values() for op in item.values()]
            tags = dict.fromkeys(tag for op in operations for tag in op.get("tags", ()))
            schema["tags"] = [
                {"name": tag} | ({"description": webhooks.TAG_DESCRIPTION} if tag == webhooks.TAG else {})
                for tag in tags
            ]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        if first.get("type") == "json_invalid":  # its loc ends in a character offset, not a field
            where = "body"
        detail = f"{where}: {first.get('msg', 'invalid')}"
        if web.is_page(request):
            return web.error_page(request, 422, detail)
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> Response:
        if web.is_page(request):  # a person at a browser reads a page, not JSON
            return web.error_page(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    @app.exception_handler(web.SignInNeeded)
    async def _sign_in(request: Request, exc: web.SignInNeeded) -> Response:
        return web.login_redirect(exc.next_url)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not unavailable(exc):
            raise exc  # a bug: on to `_crash`, a 500 and its traceback
        rt.signals.database.failed(where=f"{request.method} {request.url.path}", exc=exc)
        return JSONResponse(
            {"detail": f"database unavailable; retry in {RETRY_AFTER} s"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER)},
        )

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # Answered from outside every middleware, so it names the security headers itself.
        headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
        return JSONResponse({"detail": "internal error"}, status_code=500, headers=headers)

    return app


def from_environment() -> FastAPI:
    """Factory for `kengele serve` (uvicorn imports it in each worker process)."""
    import os
    import sys

    from app import logs

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    # Background threads (processing, sending) hand the GIL back to the webhooks' event loop
    # sooner than the default 5 ms, which keeps webhook latency low under load.
    sys.setswitchinterval(0.001)
    return create_app(
        settings,
        dispatcher=os.environ.get("KENGELE_RUN_DISPATCHER", "1") == "1",
        processor=os.environ.get("KENGELE_RUN_PROCESSOR", "1") == "1",
        scheduler=os.environ.get("KENGELE_RUN_SCHEDULER", "1") == "1",
    )
