"""The application factory: ``create_app()`` for servers, ``create_app(runtime=...)`` for tests."""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext, suppress
from datetime import timedelta
from types import FrameType

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

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
STOP_STEP_FLOOR_SECONDS = 0.5
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


DOCS_ASSETS = "/docs/assets"

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


def drain(runtime: Runtime) -> None:
    """The process is stopping: long polls (``?wait=``) answer now with what they have,
    so that the requests in flight finish instead of holding the shutdown."""
    if runtime.gateway is not None:
        runtime.gateway.engine.drain()


@contextmanager
def _draining_on_signals(runtime: Runtime) -> Iterator[None]:
    """While the app serves, SIGTERM and SIGINT first drain it, then reach the server's
    own handler (uvicorn's, which stops accepting and waits for the requests in flight).

    Only over a Python handler the server installed, in the main thread: without one a
    signal keeps its default meaning."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    chained: dict[int, Callable[[int, FrameType | None], object]] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(drain, runtime)
        chained[signum](signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if callable(previous):
            chained[signum] = previous
            signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for restored, handler in chained.items():
            if signal.getsignal(restored) is on_signal:
                signal.signal(restored, handler)


async def _stop_within(
    seconds: float, steps: list[tuple[str, Callable[[], Awaitable[None]]]]
) -> None:
    """Run the stopping steps in order within ``seconds``: a step still running at the
    end is cancelled (and logged) rather than waited for, so a stuck peer cannot hold
    the process. Each step after one that overran still gets ``STOP_STEP_FLOOR_SECONDS``:
    the broker closes even when the workers would not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    for name, step in steps:
        task = asyncio.ensure_future(step())
        budget = max(STOP_STEP_FLOOR_SECONDS, deadline - loop.time())
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            task.cancel()
            log.warning("shutdown_step_overran", step=name, budget_seconds=seconds)
        elif not task.cancelled() and task.exception() is not None:
            log.warning(
                "shutdown_step_failed", step=name, error_type=type(task.exception()).__name__
            )


def serve_app() -> FastAPI:
    """The app as ``sesame serve`` runs it: drained by the signals that stop it."""
    return create_app(drain_on_signals=True)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    drain_on_signals: bool = False,
) -> FastAPI:
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
            with _draining_on_signals(runtime) if drain_on_signals else nullcontext():
                yield
        finally:
            drain(runtime)

            async def stop_maintenance() -> None:
                maintenance.cancel()
                with suppress(asyncio.CancelledError):
                    await maintenance

            # Bounded like the requests before them: the gateway and the embedded broker
            # last, so that what the workers and senders still publish gets out.
            await _stop_within(
                max(1.0, runtime.settings.shutdown_grace_seconds),
                [
                    ("workers", lambda: stop_workers(workers)),
                    ("notifications", lambda: stop_notifications(notifier, runtime)),
                    ("ledger", lambda: stop_ledger(ledger_work, runtime)),
                    ("maintenance", stop_maintenance),
                    ("devices", lambda: stop_devices(runtime)),
                ],
            )
            if owns_runtime:
                await runtime.close()

    # Swagger UI at /docs and ReDoc at /redoc, their scripts and styles served from the
    # package under /docs/assets: no CDN, so the docs work offline and behind firewalls.
    app = FastAPIOffline(
        title="Sesame",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise ask validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
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
