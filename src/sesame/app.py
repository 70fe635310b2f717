"""The application factory: ``create_app()`` for servers, ``create_app(runtime=...)`` for tests."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

from fastapi import APIRouter, FastAPI

from sesame import __version__
from sesame.api import errors, openapi
from sesame.api.health import router as health_router
from sesame.auth.endpoints import api_keys_router, auth_router, me_router
from sesame.auth.repository import purge_expired
from sesame.devices.endpoints import routers as devices_routers
from sesame.devices.lifecycle import start_devices, stop_devices
from sesame.jobs.endpoints import router as jobs_router
from sesame.jobs.install import start_workers, stop_workers
from sesame.jobs.repository import JobRepository
from sesame.keys.endpoints import routers as keys_routers
from sesame.keys.install import install as install_keys
from sesame.keys.install import install_jobs
from sesame.kit.bodies import RequestBodyLimits
from sesame.kit.logging import configure_logging, get_logger
from sesame.kit.middleware import ObservabilityMiddleware
from sesame.ledger.endpoints import routers as ledger_routers
from sesame.ledger.install import start_ledger, stop_ledger
from sesame.notifications.endpoints import routers as notifications_routers
from sesame.notifications.install import install_jobs as install_notification_jobs
from sesame.notifications.install import start_notifications, stop_notifications
from sesame.partners.endpoints import router as partners_router
from sesame.people.endpoints import routers as people_routers
from sesame.runtime import Runtime, build_runtime
from sesame.settings import Settings, load_settings
from sesame.sites.endpoints import routers as sites_routers
from sesame.staff.endpoints import router as staff_router

log = get_logger("sesame.app")

MAINTENANCE_INTERVAL_SECONDS = 600.0
GC_GEN0_THRESHOLD = 20_000

DESCRIPTION = """\
Sesame's HTTP API. Authenticate with `Authorization: Bearer <token>`: a staff access
token from `POST /v1/auth/login`, a resident token from `POST /v1/auth/codes/verify`, or
a partner API key (`ses_...`).

Every POST accepts an `Idempotency-Key` header: the same key with the same body returns
the stored response (marked `Idempotent-Replayed: true`); with another body it is a 422
`idempotency_key_reused`. Lists are paginated with `limit` and `cursor`
(`next_cursor` of the previous page). Every error has the same JSON shape with a stable
`type`.
"""


API_ROUTERS: tuple[APIRouter, ...] = (
    auth_router,
    me_router,
    partners_router,
    *sites_routers,
    *people_routers,
    staff_router,
    api_keys_router,
    *devices_routers,
    *keys_routers,
    *ledger_routers,
    jobs_router,
    *notifications_routers,
)


JOBS_KEPT = timedelta(days=7)  # finished one-off jobs, for inspection


async def _maintenance(runtime: Runtime) -> None:
    """Purge expired codes, counters, idempotency records and sessions, now and then.

    Every process may run it: deleting what has expired is idempotent.
    """
    while True:
        await asyncio.sleep(MAINTENANCE_INTERVAL_SECONDS)
        try:
            async with runtime.session_factory() as session:
                now = runtime.clock.now()
                removed = await purge_expired(session, now)
                removed["jobs"] = await JobRepository(session).purge_finished(now - JOBS_KEPT)
                await session.commit()
            log.info("purged_expired_rows", **removed)
        except Exception as exc:
            log.warning("purge_failed", error_type=type(exc).__name__)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app. Given a ``runtime``, the caller owns it (and its logging setup)."""
    owns_runtime = runtime is None
    if runtime is None:
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.log_format)
        runtime = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything allocated so far lives as long as the process: keep it out of the
        # cyclic collector's way, and collect young objects less often under load.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        maintenance = asyncio.create_task(_maintenance(runtime))
        await start_devices(runtime)
        ledger_work = await start_ledger(runtime)
        await install_jobs(runtime)
        await install_notification_jobs(runtime)
        notifier = await start_notifications(runtime)
        workers = start_workers(runtime) if runtime.settings.worker_enabled else None
        log.info(
            "started",
            version=__version__,
            database=runtime.engine.dialect.name,
            broker=runtime.settings.broker_url if runtime.gateway else None,
        )
        try:
            yield
        finally:
            await stop_workers(workers)
            await stop_notifications(notifier, runtime)
            await stop_ledger(ledger_work, runtime)
            maintenance.cancel()
            with suppress(asyncio.CancelledError):
                await maintenance
            await stop_devices(runtime)
            if owns_runtime:
                await runtime.close()

    app = FastAPI(
        title="Sesame",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_keys(runtime)
    errors.install(app)
    openapi.install(app)
    app.include_router(health_router)
    for router in API_ROUTERS:
        # Included one level deep: FastAPI matches nested routers level by level.
        app.include_router(router)
    settings = runtime.settings
    # Added innermost first: the body limits run inside the access log and metrics.
    app.add_middleware(
        RequestBodyLimits,
        max_bytes=settings.max_body_bytes,
        timeout_seconds=settings.request_timeout_seconds,
    )
    app.add_middleware(
        ObservabilityMiddleware,
        skip_access_log=frozenset({"/healthz", "/metrics"}),
        trusted_proxies=settings.trusted_proxies,
    )
    return app
