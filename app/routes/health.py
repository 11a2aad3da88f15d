"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.outage import RETRY_AFTER, describe, unavailable
from app.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "the database or a background worker is down"}},
)
def readyz(request: Request) -> Response:
    """The database answers and every background part this process started still runs."""
    runtime = request.app.state.runtime
    retry = {"Retry-After": str(RETRY_AFTER)}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        if unavailable(exc):  # one warning per outage, however often the orchestrator asks
            runtime.signals.database.failed(where="readyz", exc=exc)
        detail = describe(exc).split(":")[0]  # the error's class only: the probe is unauthenticated
        return JSONResponse({"status": "unavailable", "detail": f"database: {detail}"}, 503, retry)
    runtime.signals.database.succeeded()
    for part in runtime.dead_parts():
        return JSONResponse({"status": "unavailable", "detail": f"{part} not running"}, 503, retry)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics() -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
