"""Liveness, readiness and metrics: plain routes, outside the transactional ``/v1`` routes."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sesame.api.route import runtime_of
from sesame.kit import metrics
from sesame.kit.db import ping

router = APIRouter(tags=["operations"])

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving; touches nothing else."""
    return {"status": "ok"}


class ServerTime(BaseModel):
    now: datetime = Field(description="The server's clock, UTC.")
    unix_ms: int = Field(description="The same, in milliseconds since the Unix epoch.")


@router.get("/v1/time", response_model=ServerTime, operation_id="get_time", tags=["time"])
async def server_time(request: Request) -> ServerTime:
    """The server's time, for apps that check their clock (no sign-in needed). An app
    estimates its offset as ``unix_ms - (sent + received) / 2`` with its own clock's
    times of sending the request and receiving the answer."""
    now = runtime_of(request).clock.now()
    return ServerTime(now=now, unix_ms=int(now.timestamp() * 1000))


@router.get("/readyz", operation_id="readyz", responses={503: {"description": "Not ready"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: the database answers within a short timeout."""
    runtime = runtime_of(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await ping(runtime.engine)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    """Prometheus exposition: request counts and latency by route and status, and more."""
    payload, content_type = metrics.render()
    return Response(payload, media_type=content_type)
