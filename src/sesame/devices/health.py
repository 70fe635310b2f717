"""Device health as data: ``errors`` and ``warnings`` with stable codes and ``created_at``.

Codes are stable API; clients must tolerate codes they do not know. A condition keeps
its ``created_at`` while it lasts and disappears when it clears.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sesame.devices.protocol import ReportedState
from sesame.models import Device

DEVICE_OFFLINE = "device_offline"
LOW_BATTERY = "low_battery"
FLAKY_CONNECTION = "flaky_connection"
DEVICE_DECOMMISSIONED = "device_decommissioned"
UNEXPECTED_RESULT = "unexpected_result"
EVENTS_DROPPED = "events_dropped"
REMEMBERED_UNEXPECTED = 20

LOW_BATTERY_PCT = 20
FLAKY_WINDOW = timedelta(minutes=10)
FLAKY_DISCONNECTS = 3


def _set(device: Device, bucket: str, code: str, message: str, now: datetime) -> None:
    issues: dict[str, Any] = dict(getattr(device, bucket) or {})
    if code not in issues:
        issues[code] = {"message": message, "created_at": now.isoformat()}
        setattr(device, bucket, issues)  # a new dict, so the JSON column is written


def _clear(device: Device, bucket: str, code: str) -> None:
    issues: dict[str, Any] = dict(getattr(device, bucket) or {})
    if issues.pop(code, None) is not None:
        setattr(device, bucket, issues)


def went_online(device: Device, now: datetime, boot_id: str | None) -> bool:
    """Record a connection; True if the device was offline before. A new boot while the
    device still counted as online is a disconnection too: it restarted before the broker
    noticed its connection was gone (the new session took the old one over)."""
    was_offline = not device.online
    if not was_offline and boot_id and device.boot_id and boot_id != device.boot_id:
        _count_disconnect(device, now)
    device.online = True
    device.connected_at = now if was_offline or boot_id != device.boot_id else device.connected_at
    device.last_seen_at = now
    device.boot_id = boot_id
    _clear(device, "errors", DEVICE_OFFLINE)
    _judge_flakiness(device, now)
    return was_offline


def stale_will(device: Device, boot_id: str | None) -> bool:
    """Whether an offline announcement speaks for a boot other than the one the device
    is online with now (``Presence.boot_id``): then it is about a connection already
    replaced, and changes nothing."""
    return bool(device.online and boot_id and device.boot_id and boot_id != device.boot_id)


def went_offline(device: Device, now: datetime, reason: str) -> bool:
    """Record a disconnection; True if the device was online before."""
    if not device.online:
        return False
    device.online = False
    _set(device, "errors", DEVICE_OFFLINE, f"device is offline ({reason})", now)
    _count_disconnect(device, now)
    _judge_flakiness(device, now)
    return True


def _count_disconnect(device: Device, now: datetime) -> None:
    recent = [
        t for t in device.recent_disconnects or [] if datetime.fromisoformat(t) > now - FLAKY_WINDOW
    ]
    device.recent_disconnects = [*recent, now.isoformat()][-20:]


def _judge_flakiness(device: Device, now: datetime) -> None:
    recent = [
        t for t in device.recent_disconnects or [] if datetime.fromisoformat(t) > now - FLAKY_WINDOW
    ]
    if len(recent) >= FLAKY_DISCONNECTS:
        _set(
            device,
            "warnings",
            FLAKY_CONNECTION,
            f"{len(recent)} disconnections in the last {FLAKY_WINDOW.seconds // 60} minutes",
            now,
        )
    else:
        _clear(device, "warnings", FLAKY_CONNECTION)


def reported(device: Device, state: ReportedState, now: datetime) -> None:
    """Merge a state report; raises or clears the low-battery and dropped-events
    warnings."""
    merged = dict(device.reported_state or {})
    merged.update(state.model_dump(mode="json", exclude_none=True, exclude={"v"}))
    device.reported_state = merged
    device.last_seen_at = now
    if state.firmware:
        device.firmware = state.firmware
    if state.battery_pct is not None:
        if state.battery_pct <= LOW_BATTERY_PCT:
            _set(device, "warnings", LOW_BATTERY, f"battery at {state.battery_pct}%", now)
        else:
            _clear(device, "warnings", LOW_BATTERY)
    dropped = state.extra.get(EVENTS_DROPPED)
    if isinstance(dropped, int) and not isinstance(dropped, bool):
        # A device short of memory dropped events it could not keep until acknowledged:
        # how many since it booted. Zero (a new boot) clears the warning.
        _clear(device, "warnings", EVENTS_DROPPED)
        if dropped > 0:
            _set(
                device,
                "warnings",
                EVENTS_DROPPED,
                f"{dropped} events dropped before they were acknowledged",
                now,
            )


def clock_checked(device: Device, offset_ms: int, threshold_ms: int, now: datetime) -> bool:
    """Record the device clock's offset; True if it is now off by more than the
    threshold and was not before (a new ``clock_drift`` warning)."""
    drifting = abs(offset_ms) > threshold_ms
    was = "clock_drift" in (device.warnings or {})
    if drifting:
        _clear(device, "warnings", "clock_drift")  # the message carries the new offset
        _set(
            device,
            "warnings",
            "clock_drift",
            f"the device clock is {abs(offset_ms) / 1000:.1f} s"
            f" {'ahead' if offset_ms > 0 else 'behind'}",
            now,
        )
    else:
        _clear(device, "warnings", "clock_drift")
    return drifting and not was


def unexpected_result(device: Device, command_id: str, now: datetime) -> bool:
    """Record a result for a command the platform never sent this device; True the first
    time this command id is reported. Something published on the device's ``results`` or
    sent it a command that did not come from the platform: the error stays until its
    credentials are rotated (or it is decommissioned). Every gateway hears the same
    result; the ids kept here make the first one under the device's lock the only one
    to raise it."""
    issues: dict[str, Any] = dict(device.errors or {})
    current = issues.get(UNEXPECTED_RESULT)
    seen: list[str] = list(current.get("command_ids", [])) if current else []
    if command_id in seen:
        return False
    issues[UNEXPECTED_RESULT] = {
        "message": "the device reported the result of a command the platform never sent it",
        "created_at": current["created_at"] if current else now.isoformat(),
        "command_ids": [*seen, command_id][-REMEMBERED_UNEXPECTED:],
    }
    device.errors = issues
    return True


def credentials_replaced(device: Device) -> None:
    """New credentials end what the old ones may have been used for."""
    _clear(device, "errors", UNEXPECTED_RESULT)


def decommissioned(device: Device, now: datetime) -> None:
    device.online = False
    device.errors = {
        DEVICE_DECOMMISSIONED: {
            "message": "device was decommissioned",
            "created_at": now.isoformat(),
        }
    }
    device.warnings = {}


def as_list(issues: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"code": code, **detail} for code, detail in sorted((issues or {}).items())]
