"""The driver contract.

A driver declares its capabilities as ``Feature`` flags and its actions as
``ActionSpec``s (a params model and time-to-live bounds). ``build_command`` is final: it
checks the action is supported and its params valid (a 422 with field paths otherwise),
bounds the time-to-live, and only then calls the ``vendor_params`` hook, so a vendor
driver never sees unchecked input. ``interpret`` maps a device's result to the outcome
of the action attempt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from sesame.devices.protocol import Command, CommandResult, Outcome
from sesame.kit.errors import FieldError, ValidationFailed, validation_message
from sesame.models import AttemptStatus, DeviceKind


class Feature(enum.Flag):
    OPEN = enum.auto()  # momentary release: a relay for a door or a gate
    LOCK = enum.auto()  # a bolt that stays locked or unlocked
    PIN_CODES = enum.auto()
    RING = enum.auto()  # reports doorbell presses
    CHILD_LOCKS = enum.auto()  # a hub driving several locks, addressed by node id
    ELEVATOR_CALL = enum.auto()
    DOOR_SENSOR = enum.auto()
    BATTERY = enum.auto()


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    pass


@dataclass(frozen=True)
class ActionSpec:
    params: type[Params]
    default_ttl_seconds: int = 10
    max_ttl_seconds: int = 60
    secret_params: frozenset[str] = frozenset()  # stored sealed, shown masked


@dataclass(frozen=True)
class Interpretation:
    status: AttemptStatus
    confirmed: bool
    error: dict[str, str] | None


class DeviceDriver:
    kind: ClassVar[DeviceKind]
    features: ClassVar[Feature]
    actions: ClassVar[dict[str, ActionSpec]]

    @final
    def build_command(
        self,
        action: str,
        params: dict[str, Any],
        *,
        command_id: UUID,
        now: datetime,
        ttl_seconds: int | None,
    ) -> Command:
        spec = self.actions.get(action)
        if spec is None:
            raise ValidationFailed(
                f"a {self.kind.value} does not support {action!r}",
                errors=[
                    FieldError(
                        ("body", "action"),
                        "supported: " + ", ".join(sorted(self.actions)),
                        "unsupported_action",
                    )
                ],
            )
        try:
            checked = spec.params.model_validate(params)
        except ValidationError as exc:
            raise ValidationFailed(
                "invalid params",
                errors=[
                    FieldError(
                        ("body", "params", *map(str, e["loc"])), validation_message(e), e["type"]
                    )
                    for e in exc.errors()
                ],
            ) from exc
        ttl = ttl_seconds if ttl_seconds is not None else spec.default_ttl_seconds
        if not 1 <= ttl <= spec.max_ttl_seconds:
            raise ValidationFailed(
                f"ttl_seconds must be between 1 and {spec.max_ttl_seconds} for {action}",
                errors=[FieldError(("body", "ttl_seconds"), "out of range", "out_of_range")],
            )
        return Command(
            command_id=command_id,
            action=action,
            params=self.vendor_params(action, checked),
            issued_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )

    def vendor_params(self, action: str, params: Params) -> dict[str, Any]:
        """Hook: the params as this device expects them on the wire."""
        return params.model_dump(exclude_none=True)

    def interpret(self, result: CommandResult) -> Interpretation:
        """Hook: the attempt's outcome from the device's result."""
        if result.outcome is Outcome.SUCCEEDED:
            return Interpretation(AttemptStatus.SUCCESS, result.confirmed, None)
        code = result.error.code if result.error else result.outcome.value
        message = (
            result.error.message
            if result.error and result.error.message
            else (f"the device {result.outcome.value} the command")
        )
        kind = "device_rejected" if result.outcome is Outcome.REJECTED else "device_failed"
        return Interpretation(
            AttemptStatus.ERROR, False, {"type": kind, "code": code, "message": message}
        )

    def describe(self) -> dict[str, Any]:
        return {
            "features": sorted(f.name.lower() for f in Feature if f in self.features and f.name),
            "actions": sorted(self.actions),
        }
