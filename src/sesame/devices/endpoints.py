"""``/v1/devices``, ``/v1/action-attempts``, ``/v1/events`` and ``/v1/entrances/{id}/open``."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response

from sesame.api.crud import ResourceSpec, crud_router
from sesame.api.deps import AppRuntime, CurrentPrincipal, DbSession
from sesame.api.route import API_PREFIX, SesameRoute
from sesame.devices import protocol
from sesame.devices.schemas import (
    ActionAttemptRead,
    AttemptQuery,
    CommandRequest,
    DeviceCreate,
    DeviceCredentials,
    DeviceProvisioned,
    DeviceQuery,
    DeviceRead,
    DeviceUpdate,
    EventQuery,
    EventRead,
    MqttCredentials,
    OpenRequest,
)
from sesame.devices.service import AttemptService, DeviceService, EventService
from sesame.keys import resident
from sesame.kit.db import commit
from sesame.kit.pagination import Page
from sesame.models import ActionAttempt, Device
from sesame.runtime import Runtime

MAX_WAIT_SECONDS = 30

Wait = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the attempt to finish; "
        "it is returned still pending after that.",
    ),
]


def _credentials(runtime: Runtime, device: Device, secret: str) -> DeviceCredentials:
    username = str(device.id)
    return DeviceCredentials(
        device_id=device.id,
        issued_at=device.credentials_issued_at or runtime.clock.now(),
        mqtt=MqttCredentials(
            url=runtime.settings.device_broker_url,
            client_id=username,
            username=username,
            password=secret,
            topic_prefix=f"{protocol.TOPIC_ROOT}/{device.id}",
        ),
    )


class _DeviceService(DeviceService):
    """The CRUD endpoints answer with DeviceRead.of (it adds features and actions)."""

    async def get(self, object_id: UUID) -> Any:
        return DeviceRead.of(await super().get(object_id))

    async def update(self, object_id: UUID, data: Any) -> Any:
        return DeviceRead.of(await super().update(object_id, data))

    async def list(self, query: Any) -> Any:
        rows, cursor = await super().list(query)
        return [DeviceRead.of(row) for row in rows], cursor


devices_router = crud_router(
    ResourceSpec(
        "device",
        "devices",
        _DeviceService,
        DeviceRead,
        DeviceCreate,
        DeviceUpdate,
        DeviceQuery,
        operations=frozenset({"read", "list", "update", "delete"}),
    )
)


@devices_router.post(
    "",
    status_code=201,
    response_model=DeviceProvisioned,
    operation_id="provision_device",
    summary="Provision a device",
)
async def provision_device(
    body: DeviceCreate,
    response: Response,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> DeviceProvisioned:
    """Register a device; the answer holds its MQTT credentials, shown this once."""
    device, secret = await DeviceService(session, principal, runtime).provision(body)
    response.headers["Location"] = f"{API_PREFIX}/devices/{device.id}"
    return DeviceProvisioned(
        **DeviceRead.of(device).model_dump(), credentials=_credentials(runtime, device, secret)
    )


@devices_router.post(
    "/{object_id}/credentials/rotate",
    response_model=DeviceCredentials,
    operation_id="rotate_device_credentials",
)
async def rotate_credentials(
    object_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
) -> DeviceCredentials:
    """New credentials, shown once; the old ones stop working and the live session drops."""
    device, secret = await DeviceService(session, principal, runtime).rotate_credentials(object_id)
    return _credentials(runtime, device, secret)


@devices_router.post(
    "/{object_id}/credentials/revoke",
    response_model=DeviceRead,
    operation_id="revoke_device_credentials",
)
async def revoke_credentials(
    object_id: UUID, session: DbSession, principal: CurrentPrincipal, runtime: AppRuntime
) -> DeviceRead:
    """The device can no longer connect until its credentials are rotated."""
    device = await DeviceService(session, principal, runtime).revoke_credentials(object_id)
    return DeviceRead.of(device)


async def _run(
    session: Any, runtime: Runtime, attempt: ActionAttempt, command: Any, wait: float
) -> ActionAttemptRead:
    """Commit the attempt, then send it (or let the queue do so), then wait if asked."""
    await commit(session)  # persisted before it is sent
    engine = runtime.gateway.engine
    if command is not None:
        await engine.sent(attempt, command)
    else:
        await engine.dispatch(attempt.device_id)
    finished = await engine.wait(attempt.id, wait) if wait > 0 else None
    return ActionAttemptRead.of(finished or attempt)


Queue = Annotated[
    bool,
    Query(
        description="Queue the command if the device is offline: it is sent when the "
        "device comes back within the command's time to live. Without it, an offline "
        "device is a `device_offline` error at once.",
    ),
]

_attempt_responses: dict[int | str, dict[str, Any]] = {
    201: {"description": "The attempt, finished or still pending"},
    409: {
        "description": "The device is decommissioned or offline (`device_offline`), or "
        "the entrance has no device"
    },
    503: {"description": "The device gateway is not running"},
}


@devices_router.post(
    "/{object_id}/commands",
    status_code=201,
    response_model=ActionAttemptRead,
    responses=_attempt_responses,
    operation_id="send_device_command",
)
async def send_command(
    object_id: UUID,
    body: CommandRequest,
    response: Response,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
    wait: Wait = 0,
) -> ActionAttemptRead:
    """Send a command as an action attempt; with ``wait``, answer when it finishes."""
    attempt, command = await DeviceService(session, principal, runtime).command(object_id, body)
    response.headers["Location"] = f"{API_PREFIX}/action-attempts/{attempt.id}"
    return await _run(session, runtime, attempt, command, wait)


entrances_router = APIRouter(
    prefix=f"{API_PREFIX}/entrances", tags=["entrances"], route_class=SesameRoute
)


@entrances_router.post(
    "/{entrance_id}/open",
    status_code=201,
    response_model=ActionAttemptRead,
    responses=_attempt_responses,
    operation_id="open_entrance",
)
async def open_entrance(
    entrance_id: UUID,
    response: Response,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
    body: OpenRequest | None = None,
    wait: Wait = 0,
    queue: Queue = False,
) -> ActionAttemptRead:
    """Open an entrance through its device, as an action attempt. A resident's request
    is checked against their keys first, and written to the access log either way. A
    device known to be offline is a `device_offline` error at once, unless `queue`."""
    request = body or OpenRequest()
    if principal.kind == "resident":
        attempt, command = await resident.open_entrance(
            session,
            runtime,
            principal,
            entrance_id,
            request.duration_s,
            request.ttl_seconds,
            queue=queue,
        )
    else:
        attempt, command = await DeviceService(session, principal, runtime).open_entrance(
            entrance_id, request, queue=queue
        )
    response.headers["Location"] = f"{API_PREFIX}/action-attempts/{attempt.id}"
    return await _run(session, runtime, attempt, command, wait)


attempts_router = APIRouter(
    prefix=f"{API_PREFIX}/action-attempts", tags=["action-attempts"], route_class=SesameRoute
)


@attempts_router.get(
    "/{attempt_id}", response_model=ActionAttemptRead, operation_id="get_action_attempt"
)
async def get_attempt(
    attempt_id: UUID,
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
    wait: Wait = 0,
) -> ActionAttemptRead:
    """An attempt; with ``wait``, long-poll until it finishes."""
    attempt = ActionAttemptRead.of(
        await AttemptService(session, principal, runtime).get(attempt_id)
    )
    if wait > 0 and runtime.gateway is not None:
        # End the read before the long poll: a snapshot held for seconds would keep
        # SQLite from checkpointing its log meanwhile. The wait reads afresh.
        await session.rollback()
        finished = await runtime.gateway.engine.wait(attempt.id, wait)
        return ActionAttemptRead.of(finished) if finished is not None else attempt
    return attempt


@attempts_router.get(
    "", response_model=Page[ActionAttemptRead], operation_id="list_action_attempts"
)
async def list_attempts(
    query: Annotated[AttemptQuery, Query()],
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> Any:
    rows, cursor = await AttemptService(session, principal, runtime).list(query)
    return Page[ActionAttemptRead](
        items=[ActionAttemptRead.of(r) for r in rows], next_cursor=cursor
    )


events_router = APIRouter(prefix=f"{API_PREFIX}/events", tags=["events"], route_class=SesameRoute)


@events_router.get("", response_model=Page[EventRead], operation_id="list_events")
async def list_events(
    query: Annotated[EventQuery, Query()],
    session: DbSession,
    principal: CurrentPrincipal,
    runtime: AppRuntime,
) -> Any:
    """Device events, oldest first; follow ``next_cursor`` to tail the stream."""
    rows, cursor = await EventService(session, principal, runtime).list(query)
    return Page[EventRead](items=[EventRead.model_validate(r) for r in rows], next_cursor=cursor)


routers = [devices_router, entrances_router, attempts_router, events_router]
