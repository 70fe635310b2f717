"""Rules for devices: provisioning, credentials, decommissioning, commands.

- A device belongs to one site for life; its entrance and unit, if any, are in that site.
- Credentials are a random secret shown once; Sesame keeps a PBKDF2 hash. Rotating
  issues a new secret and drops the live session; revoking or decommissioning leaves the
  device with none. Changes reach the broker after the transaction commits.
- A command becomes an action attempt through the device's driver (which validates it);
  see ``sesame.devices.attempts`` for what happens next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.crud import CrudService
from sesame.auth.principal import Action, Group
from sesame.devices import health, protocol
from sesame.devices.attempts import AttemptEngine
from sesame.devices.broker import (
    CredentialCheck,
    MosquittoConfig,
    hash_password,
    reload_mosquitto,
    verify_password,
)
from sesame.devices.drivers.native import OPEN_ACTIONS
from sesame.devices.repository import AttemptRepository, DeviceRepository, EventRepository
from sesame.devices.schemas import CommandRequest, DeviceCreate, OpenRequest
from sesame.kit.db import after_commit
from sesame.kit.errors import (
    Conflict,
    FieldError,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from sesame.kit.ids import parse_id
from sesame.kit.logging import get_logger
from sesame.kit.repository import insert_new
from sesame.kit.security import equal, new_token
from sesame.models import (
    AccessEvent,
    AccessMethod,
    AccessResult,
    ActionAttempt,
    Device,
    DeviceEventRecord,
    DeviceStatus,
)
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime
from sesame.sites.repository import EntranceRepository, SiteRepository, UnitRepository

log = get_logger("sesame.devices")


class NoDevice(Conflict):
    type = "no_device"


class DeviceOffline(Conflict):
    """An open is wanted now: through a device known to be offline it fails at once,
    instead of waiting in the queue until its time to live runs out."""

    type = "device_offline"


def require_online(device: Device, *, queue: bool) -> None:
    """``queue``: the caller accepts a command that waits for the device to come back."""
    if not queue and not device.online:
        raise DeviceOffline(
            "the device that opens this entrance is offline; try again later, "
            "or ask to queue the command with queue=true",
            device_id=str(device.id),
            last_seen_at=device.last_seen_at.isoformat() if device.last_seen_at else None,
        )


class DeviceService(CrudService[Device]):
    group = Group.DEVICES
    noun = "device"
    repository_class = DeviceRepository

    # -- provisioning -----------------------------------------------------------------------

    async def provision(self, data: DeviceCreate) -> tuple[Device, str]:
        """A new device and its secret, which exists only in this answer."""
        self.principal.require(self.group, Action.WRITE)
        site = await self.visible(SiteRepository(self.session), data.site_id, "site")
        secret = new_token(24)
        now = self.runtime.clock.now()
        device = Device(
            partner_id=site.partner_id,
            site_id=site.id,
            kind=data.kind,
            name=data.name,
            vendor=data.vendor,
            model=data.model,
            firmware=data.firmware,
            entrance_id=data.entrance_id,
            unit_id=data.unit_id,
            status=DeviceStatus.ACTIVE,
            credential_hash=hash_password(secret),
            credentials_issued_at=now,
            online=False,
            errors={},
            warnings={},
            reported_state={},
            recent_disconnects=[],
        )
        await self._check_placement(device)
        await self.repository.add(device)
        await outbox.append(self.session, [self._message("device.provisioned", device)])
        self._sync_broker(device.id, drop_session=False)
        return device, secret

    async def apply(self, obj: Device, changes: dict[str, Any]) -> None:
        if obj.status is DeviceStatus.DECOMMISSIONED:
            raise Conflict("the device is decommissioned")
        moved = "entrance_id" in changes and changes["entrance_id"] != obj.entrance_id
        await super().apply(obj, changes)
        await self._check_placement(obj)
        if moved:
            # What the device decides on follows it: its trust names its new entrance (or
            # none), as on a connection, once the move is committed.
            hooks, device_id = self.runtime.device_hooks, obj.id

            async def rebound() -> None:
                for hook in hooks.online:
                    await hook(device_id)

            after_commit(self.session, rebound)

    async def delete(self, object_id: UUID) -> None:
        """Decommission: the row stays (its attempts and events refer to it), credentials go."""
        self.principal.require(self.group, Action.WRITE)
        device: Device = await self.visible(self.repository, object_id, self.noun)
        if device.status is DeviceStatus.DECOMMISSIONED:
            return
        now = self.runtime.clock.now()
        device.status = DeviceStatus.DECOMMISSIONED
        device.decommissioned_at = now
        device.credential_hash = None
        health.decommissioned(device, now)
        await self.repository.flush()
        await outbox.append(self.session, [self._message("device.decommissioned", device)])
        self._sync_broker(device.id, drop_session=True)

    async def rotate_credentials(self, object_id: UUID) -> tuple[Device, str]:
        device = await self._active_for_write(object_id)
        secret = new_token(24)
        device.credential_hash = hash_password(secret)
        device.credentials_issued_at = self.runtime.clock.now()
        health.credentials_replaced(device)
        await self.repository.flush()
        await outbox.append(self.session, [self._message("device.credentials_rotated", device)])
        self._sync_broker(device.id, drop_session=True)
        return device, secret

    async def revoke_credentials(self, object_id: UUID) -> Device:
        device = await self._active_for_write(object_id)
        device.credential_hash = None
        health.went_offline(device, self.runtime.clock.now(), "credentials revoked")
        await self.repository.flush()
        await outbox.append(self.session, [self._message("device.credentials_revoked", device)])
        self._sync_broker(device.id, drop_session=True)
        return device

    # -- commands ---------------------------------------------------------------------------

    async def command(
        self, object_id: UUID, request: CommandRequest
    ) -> tuple[ActionAttempt, protocol.Command | None]:
        self.principal.require(self.group, Action.WRITE)
        device = await DeviceRepository(self.session).locked_in_scope(
            self.principal.scope, object_id
        )
        if device is None:
            raise NotFound(f"device {object_id} not found")
        return await engine_of(self.runtime).submit(
            self.session,
            device,
            request.action,
            request.params,
            ttl_seconds=request.ttl_seconds,
            requested_by=self.principal.reference(),
            locked=True,
        )

    async def open_entrance(
        self, entrance_id: UUID, request: OpenRequest, *, queue: bool = False
    ) -> tuple[ActionAttempt, protocol.Command | None]:
        """Open an entrance through the device bound to it (an online one first); an
        offline one is a ``device_offline`` error unless ``queue``."""
        self.principal.require(self.group, Action.WRITE)
        found = await DeviceRepository(self.session).opener_of(
            self.principal.scope, entrance_id, list(OPEN_ACTIONS)
        )
        if found is None:
            # Tell "no such entrance" (404) from "nothing to open it with" (409).
            await self.visible(EntranceRepository(self.session), entrance_id, "entrance")
            raise NoDevice("no active device can open this entrance")
        device, unfinished = found
        require_online(device, queue=queue)
        action = OPEN_ACTIONS[device.kind]
        params = (
            {"duration_s": request.duration_s}
            if (request.duration_s is not None and action == "open")
            else {}
        )
        requested_by = self.principal.reference()
        attempt, command = await engine_of(self.runtime).submit(
            self.session,
            device,
            action,
            params,
            ttl_seconds=request.ttl_seconds,
            requested_by=requested_by,
            locked=True,
            unfinished=unfinished,
        )
        # In the site's access log like a resident's open: who asked (staff, API key),
        # which door, which attempt carried it. Written with the attempt, or not at all.
        await insert_new(
            self.session,
            [
                AccessEvent(
                    partner_id=device.partner_id,
                    site_id=device.site_id,
                    at=self.runtime.clock.now(),
                    result=AccessResult.GRANTED,
                    method=AccessMethod.REMOTE,
                    entrance_id=entrance_id,
                    device_id=device.id,
                    action_attempt_id=attempt.id,
                    data={"requested_by": requested_by},
                )
            ],
        )
        return attempt, command

    # -- helpers ----------------------------------------------------------------------------

    async def _active_for_write(self, object_id: UUID) -> Device:
        self.principal.require(self.group, Action.WRITE)
        device: Device = await self.visible(self.repository, object_id, self.noun)
        if device.status is DeviceStatus.DECOMMISSIONED:
            raise Conflict("the device is decommissioned")
        return device

    async def _check_placement(self, device: Device) -> None:
        errors: list[FieldError] = []
        if device.entrance_id is not None:
            entrance = await self.visible(
                EntranceRepository(self.session), device.entrance_id, "entrance"
            )
            if entrance.site_id != device.site_id:
                errors.append(
                    FieldError(("body", "entrance_id"), "entrance in another site", "wrong_site")
                )
        if device.unit_id is not None:
            unit = await self.visible(UnitRepository(self.session), device.unit_id, "unit")
            if unit.site_id != device.site_id:
                errors.append(FieldError(("body", "unit_id"), "unit in another site", "wrong_site"))
        if errors:
            raise ValidationFailed("the device's placement is inconsistent", errors=errors)

    def _sync_broker(self, device_id: UUID, *, drop_session: bool) -> None:
        runtime = self.runtime

        async def apply() -> None:
            gateway = runtime.gateway
            if gateway is not None:
                gateway.ingestor.forget(device_id)
                if drop_session:
                    await gateway.disconnect_device(device_id)
            await sync_mosquitto(runtime)

        after_commit(self.session, apply)

    @staticmethod
    def _message(topic: str, device: Device) -> dict[str, Any]:
        return outbox.message(
            topic,
            partner_id=device.partner_id,
            aggregate_id=device.id,
            site_id=device.site_id,
            kind=device.kind.value,
            name=device.name,
            status=device.status.value,
        )


class AttemptService(CrudService[ActionAttempt]):
    group = Group.DEVICES
    noun = "action attempt"
    repository_class = AttemptRepository


class EventService(CrudService[DeviceEventRecord]):
    group = Group.DEVICES
    noun = "event"
    repository_class = EventRepository


def engine_of(runtime: Runtime) -> AttemptEngine:
    if runtime.gateway is None:
        raise ServiceUnavailable("the device gateway is not running")
    engine: AttemptEngine = runtime.gateway.engine
    return engine


def credential_check(runtime: Runtime) -> CredentialCheck:
    """How the embedded broker checks a connecting client's credentials."""

    async def check(username: str, password: str, client_id: str) -> bool:
        if username == protocol.GATEWAY_USERNAME:
            # The gateway of a process not yet restarted after a change of secret too.
            return any(equal(password, p) for p in runtime.keys.mqtt_gateway_passwords)
        device_id = parse_id(username)  # the canonical spelling only, as Mosquitto's
        if device_id is None:
            return False
        async with runtime.read_session_factory() as session:
            stored = await DeviceRepository(session).credential_hash(device_id)
        return verify_password(stored, password)

    return check


async def mosquitto_passwords(session: AsyncSession, runtime: Runtime) -> dict[str, str]:
    passwords = {protocol.GATEWAY_USERNAME: hash_password(runtime.keys.mqtt_gateway_password)}
    for device_id, hashed in await DeviceRepository(session).active_credentials():
        passwords[str(device_id)] = hashed
    return passwords


async def sync_mosquitto(runtime: Runtime) -> None:
    """With a local Mosquitto configured, rewrite its password file and reload it."""
    settings = runtime.settings
    if not settings.mosquitto_config_dir:
        return
    async with runtime.read_session_factory() as session:
        passwords = await mosquitto_passwords(session, runtime)
    MosquittoConfig(passwords=passwords).write_passwords(Path(settings.mosquitto_config_dir))
    if settings.mosquitto_pid_file:
        reload_mosquitto(Path(settings.mosquitto_pid_file))
