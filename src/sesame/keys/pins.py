"""PIN codes on door locks: what should be on each lock, kept here and reconciled with it.

- Each code has a status: ``unset`` (not on the lock), ``setting``, ``set``, ``removing``,
  ``removed``, or ``unknown`` (the lock's slot changed behind our back).
- The reconciler sends one command at a time per lock (through the lock's action-attempt
  queue): it takes codes off first (deleted, or past their end), then programs codes due
  within the lead time (``SESAME_PIN_LEAD_MINUTES``, 60 by default) into a free slot.
- A code tied to a key (``key_id``) follows it: off while the key is suspended, gone once
  it is revoked or expired, and with a recurring schedule on the lock only within its
  windows, in the site's time zone (``keys.schedule.LockTerms``). Such a code goes back
  to ``unset`` between windows.
- Failures stay on the one code that failed, with a precise error — ``no_space``,
  ``constraints_violated``, ``duplicate_on_device``, ``device_offline`` — and the lock's
  other codes go on. ``device_offline`` is retried; the others wait for a change.
- A lock reporting ``pin_changed`` from its keypad marks the code in that slot
  ``unknown`` with an ``external_modification`` warning.
- Codes are sealed at rest and masked in attempts; a keyed digest per lock finds
  duplicates; the code is never logged.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.api.crud import CrudService
from sesame.auth.principal import Action, Group
from sesame.devices.drivers import Feature, driver_for
from sesame.devices.repository import DeviceRepository
from sesame.devices.service import engine_of
from sesame.keys import schedule
from sesame.keys.repository import KeyRepository, PinCodeRepository
from sesame.kit.db import after_commit, commit, write_intent
from sesame.kit.errors import Conflict, FieldError, NotFound, ValidationFailed
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.models import ActionAttempt, AttemptStatus, Device, PinCode, PinStatus
from sesame.outbox import repository as outbox
from sesame.people.repository import PersonRepository
from sesame.runtime import Runtime

log = get_logger("sesame.pins")

DEFAULT_CONSTRAINTS = {"lengths": [4, 8], "slots": 10, "forbid": ["repeated", "sequential"]}
ON_LOCK = (PinStatus.SETTING, PinStatus.SET, PinStatus.REMOVING, PinStatus.UNKNOWN)
DEVICE_ERRORS = {
    "no_space": "no_space",
    "constraints_violated": "constraints_violated",
    "duplicate_code": "duplicate_on_device",
    "invalid_params": "constraints_violated",
}


class DuplicateAccessCode(Conflict):
    type = "duplicate_access_code"


def code_of(runtime: Runtime, pin: PinCode) -> str:
    return runtime.keys.pin_codes.unseal(pin.sealed_code, pin.id.bytes).decode()


def code_digests(runtime: Runtime, device_id: UUID, code: str) -> tuple[str, ...]:
    """The per-lock digest of a code under every secret of the ring; the first, under
    the current one, is the one to store."""
    return runtime.keys.pin_codes.digests(str(device_id), code)


def constraints(device: Device) -> dict[str, Any]:
    reported = ((device.reported_state or {}).get("extra") or {}).get("pin_constraints")
    return {**DEFAULT_CONSTRAINTS, **(reported or {})}


def violations(code: str, rules: dict[str, Any]) -> list[str]:
    problems = []
    low, high = rules["lengths"]
    if not low <= len(code) <= high:
        problems.append(f"length must be {low} to {high} digits")
    forbid = set(rules.get("forbid", []))
    if "repeated" in forbid and len(set(code)) == 1:
        problems.append("all digits the same")
    steps = {int(b) - int(a) for a, b in itertools.pairwise(code)}
    if "sequential" in forbid and len(code) > 1 and steps in ({1}, {-1}):
        problems.append("a run of consecutive digits")
    return problems


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


class PinService(CrudService[PinCode]):
    group = Group.KEYS
    noun = "pin code"
    repository_class = PinCodeRepository

    async def _lock(self, device_id: UUID) -> Device:
        device = await DeviceRepository(self.session).locked_in_scope(
            self.principal.scope, device_id
        )
        if device is None:
            raise NotFound(f"device {device_id} not found")
        if (
            Feature.PIN_CODES not in driver_for(device.kind).features
            or "set_pin" not in driver_for(device.kind).actions
        ):
            raise ValidationFailed(
                "this device takes no PIN codes",
                errors=[FieldError(("body", "device_id"), "not a PIN lock", "no_pin_codes")],
            )
        return device

    async def _key_at(self, key_id: UUID, device: Device) -> None:
        """A code follows its key (see ``keys.schedule.LockTerms``): the key must be one
        the caller may see, at the lock's site."""
        key = await KeyRepository(self.session).get(self.principal.scope, key_id)
        if key is None:
            raise NotFound(f"key {key_id} not found")
        if key.site_id != device.site_id:
            raise ValidationFailed(
                "the key is for another site than the lock",
                errors=[FieldError(("body", "key_id"), "another site", "wrong_site")],
            )

    async def _person_at(self, person_id: UUID, device: Device) -> None:
        """The person a code is for: one the caller may see, of the lock's partner (else
        404, exactly as for an id that does not exist)."""
        person = await self.visible(PersonRepository(self.session), person_id, "person")
        if person.partner_id != device.partner_id:
            raise NotFound(f"person {person_id} not found")

    async def generate(self, device_id: UUID) -> str:
        self.principal.require(self.group, Action.READ)
        device = await self._lock(device_id)
        return await self._free_code(device)

    async def _free_code(self, device: Device) -> str:
        rules = constraints(device)
        length = max(rules["lengths"][0], min(6, rules["lengths"][1]))
        taken = {p.code_digest for p in await PinCodeRepository(self.session).on_device(device.id)}
        for _ in range(1000):
            code = f"{secrets.randbelow(10**length):0{length}d}"
            if not violations(code, rules) and taken.isdisjoint(self._digests(device.id, code)):
                return code
        raise Conflict("no free code of that length left on this lock")

    def _digests(self, device_id: UUID, code: str) -> tuple[str, ...]:
        """The code's digest under every secret of the ring, current first: a code stored
        before a change of secret, and not yet re-sealed, is still found."""
        return code_digests(self.runtime, device_id, code)

    async def build(self, data: Any) -> PinCode:
        device = await self._lock(data.device_id)
        if data.key_id is not None:
            await self._key_at(data.key_id, device)
        if data.person_id is not None:
            await self._person_at(data.person_id, device)
        code = data.code or await self._free_code(device)
        problems = violations(code, constraints(device))
        if problems:
            raise ValidationFailed(
                "the code breaks the lock's rules",
                errors=[FieldError(("body", "code"), p, "constraints_violated") for p in problems],
            )
        digests = self._digests(device.id, code)
        if any(
            p.code_digest in digests and p.wanted
            for p in await PinCodeRepository(self.session).on_device(device.id)
        ):
            raise DuplicateAccessCode("this code is already on the lock")
        pin_id = new_id()
        pin = PinCode(
            id=pin_id,
            partner_id=device.partner_id,
            site_id=device.site_id,
            device_id=device.id,
            key_id=data.key_id,
            person_id=data.person_id,
            name=data.name,
            sealed_code=self.runtime.keys.pin_codes.seal(code.encode(), pin_id.bytes),
            code_digest=digests[0],
            starts_at=data.starts_at,
            ends_at=data.ends_at,
            status=PinStatus.UNSET,
            wanted=True,
            warnings={},
        )
        return pin

    async def create(self, data: Any) -> PinCode:
        pin = await super().create(data)
        self._reconcile_after(pin.device_id)
        await schedule.follow_lock(self.session, self.runtime, pin.device_id)
        return pin

    async def apply(self, obj: PinCode, changes: dict[str, Any]) -> None:
        await super().apply(obj, changes)
        if obj.starts_at and obj.ends_at and obj.ends_at <= obj.starts_at:
            raise ValidationFailed("ends_at must be after starts_at")
        obj.error = None
        self._reconcile_after(obj.device_id)
        await self.session.flush()
        await schedule.follow_lock(self.session, self.runtime, obj.device_id)

    async def delete(self, object_id: UUID) -> None:
        """Take the code off the lock (or forget it, if it never reached it)."""
        self.principal.require(self.group, Action.WRITE)
        pin: PinCode = await self.visible(self.repository, object_id, self.noun)
        pin.wanted = False
        if pin.status in (PinStatus.UNSET,) and pin.attempt_id is None:
            pin.status = PinStatus.REMOVED
        await self.repository.flush()
        self._reconcile_after(pin.device_id)
        await schedule.follow_lock(self.session, self.runtime, pin.device_id)

    def _reconcile_after(self, device_id: UUID) -> None:
        """Now, after the commit (later moments are the lock's job's, see keys.schedule)."""
        runtime = self.runtime

        async def go() -> None:
            await reconcile(runtime, device_id)

        after_commit(self.session, go)


async def reconcile(runtime: Runtime, device_id: UUID) -> None:
    """Send the lock its next PIN change, if it has none under way."""
    if runtime.gateway is None:
        return
    sent = None
    with write_intent():
        async with runtime.session_factory() as session:
            device = await DeviceRepository(session).locked(device_id)
            if device is None:
                return
            pins = list(await PinCodeRepository(session).on_device(device_id))
            if any(p.attempt_id is not None for p in pins):
                return
            now = runtime.clock.now()
            lead = timedelta(minutes=runtime.settings.pin_lead_minutes)
            terms = await schedule.terms_for(session, pins)
            before = {p.id: (p.error or {}).get("code") for p in pins}
            step = _next_change(runtime, device, pins, terms, now, lead)
            await _report_failures(pins, before, "set", session)
            if step is not None:
                pin, action, params = step
                attempt, command = await engine_of(runtime).submit(
                    session,
                    device,
                    action,
                    params,
                    ttl_seconds=60,
                    requested_by="pin-codes",
                    locked=True,
                )
                pin.attempt_id = attempt.id
                pin.status = PinStatus.SETTING if action == "set_pin" else PinStatus.REMOVING
                sent = (attempt, command)
            await commit(session)
    if sent is not None:
        await engine_of(runtime).deliver(sent, device_id)


def _message(topic: str, pin: PinCode, **data: Any) -> dict[str, Any]:
    """An outbox message about a code: who, where, which lock — never the code."""
    return outbox.message(
        topic,
        partner_id=pin.partner_id,
        aggregate_id=pin.id,
        site_id=pin.site_id,
        device_id=pin.device_id,
        key_id=pin.key_id,
        person_id=pin.person_id,
        **data,
    )


async def _report_failures(
    pins: list[PinCode], before: dict[UUID, Any], action: str, session: AsyncSession
) -> None:
    """A ``pin_code.failed`` message for each code whose error is new: once per failure,
    not on every retry of it. Never the code itself."""
    messages = [
        _message("pin_code.failed", pin, action=action, error=pin.error["code"])
        for pin in pins
        if pin.error is not None and pin.error.get("code") != before.get(pin.id)
    ]
    if messages:
        await outbox.append(session, messages)


def _next_change(
    runtime: Runtime,
    device: Device,
    pins: list[PinCode],
    terms: schedule.LockTerms,
    now: datetime,
    lead: timedelta,
) -> tuple[PinCode, str, dict[str, Any]] | None:
    for pin in pins:  # removals first: they free slots
        if (
            pin.status in (PinStatus.SET, PinStatus.UNKNOWN)
            and pin.slot
            and not terms.belongs(pin, now, lead)
        ):
            return pin, "remove_pin", {"slot": pin.slot}
        if pin.status is PinStatus.UNSET and terms.finished(pin, now):
            pin.status = PinStatus.REMOVED
    used = {p.slot for p in pins if p.status in ON_LOCK and p.slot}
    slots = int(constraints(device)["slots"])
    for pin in pins:
        retry = pin.error is None or pin.error.get("code") == "device_offline"
        if not (pin.status is PinStatus.UNSET and retry and terms.belongs(pin, now, lead)):
            continue
        free = next((s for s in range(1, slots + 1) if s not in used), None)
        if free is None:
            pin.error = _error("no_space", f"all {slots} slots of the lock are taken")
            continue
        pin.slot = free
        return pin, "set_pin", {"slot": free, "code": code_of(runtime, pin)}
    return None


async def on_attempt_finished(
    runtime: Runtime, session: AsyncSession, attempt: ActionAttempt
) -> None:
    """A set_pin/remove_pin finished: move its code on (in the same transaction)."""
    if attempt.action not in ("set_pin", "remove_pin"):
        return
    pin = await PinCodeRepository(session).by_attempt(attempt.id)
    if pin is None:
        return
    pin.attempt_id = None
    setting = attempt.action == "set_pin"
    if attempt.status is AttemptStatus.SUCCESS:
        pin.error = None
        pin.synced_at = attempt.completed_at
        if setting:
            pin.status = PinStatus.SET
        else:
            pin.status = PinStatus.REMOVED if not pin.wanted else PinStatus.UNSET
            pin.slot = None
        await outbox.append(
            session,
            [_message("pin_code.set" if setting else "pin_code.removed", pin, slot=pin.slot)],
        )
    else:
        error = attempt.error or {}
        kind = str(error.get("type", ""))
        before = (pin.error or {}).get("code")
        if kind in ("device_timeout", "command_expired"):
            pin.error = _error("device_offline", "the lock did not answer; retrying")
        else:
            code = DEVICE_ERRORS.get(str(error.get("code")), str(error.get("code") or kind))
            pin.error = _error(code, str(error.get("message", "")))
        await _report_failures([pin], {pin.id: before}, "set" if setting else "remove", session)
        pin.status = PinStatus.UNSET if setting else PinStatus.SET
        if setting:
            pin.slot = None
    device_id = pin.device_id

    async def next_change() -> None:
        await reconcile(runtime, device_id)

    after_commit(session, next_change)


async def on_keypad_change(session: AsyncSession, row: Any) -> None:
    """A code changed at the keypad: whatever we had in that slot is now unknown."""
    data = row.data or {}
    slot = data.get("slot")
    for pin in await PinCodeRepository(session).on_device(row.device_id):
        if pin.slot == slot and pin.status in ON_LOCK:
            pin.status = PinStatus.UNKNOWN
            pin.warnings = {
                **(pin.warnings or {}),
                "external_modification": {
                    "message": f"slot {slot} was changed at the lock's keypad",
                    "created_at": row.occurred_at.isoformat(),
                },
            }
            await outbox.append(session, [_message("pin_code.externally_modified", pin, slot=slot)])
