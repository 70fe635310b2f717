"""The protocol: its document matches the code; topics and access rules are exact."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from sesame.devices import protocol
from sesame.devices.broker import device_may, hash_password, verify_password
from sesame.devices.protocol_doc import is_current

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_protocol_document_is_generated_from_the_models() -> None:
    assert is_current(DOC), "run `sesame protocol docs` and commit docs/protocol.md"


def test_topics_round_trip() -> None:
    device_id = uuid.uuid4()
    for channel in protocol.Channel:
        assert protocol.parse_topic(protocol.topic(device_id, channel)) == (device_id, channel)
    assert protocol.parse_topic("sesame/v1/devices/not-a-uuid/events") is None
    assert protocol.parse_topic("sesame/v1/devices/+/events") is None
    assert protocol.parse_topic(f"sesame/v1/devices/{device_id}/secrets") is None


def test_messages_ignore_unknown_fields_and_reject_bad_ones() -> None:
    event = protocol.decode(
        protocol.Channel.EVENTS,
        (
            b'{"v":1,"event_id":"'
            + str(uuid.uuid4()).encode()
            + b'","type":"doorbell_rang","occurred_at":"2026-11-27T00:00:00Z","future_field":1}'
        ),
    )
    assert isinstance(event, protocol.DeviceEvent)
    with pytest.raises(ValidationError):
        protocol.decode(protocol.Channel.EVENTS, b'{"v":1,"type":"x"}')
    with pytest.raises(ValidationError):
        protocol.decode(
            protocol.Channel.EVENTS,
            b'{"v":2,"event_id":"'
            + str(uuid.uuid4()).encode()
            + b'","type":"a","occurred_at":"2026-01-01T00:00:00Z"}',
        )


@pytest.mark.parametrize(
    ("action", "channel", "allowed"),
    [
        ("publish", protocol.Channel.EVENTS, True),
        ("publish", protocol.Channel.RESULTS, True),
        ("publish", protocol.Channel.COMMANDS, False),
        ("publish", protocol.Channel.EVENTS_ACK, False),
        ("subscribe", protocol.Channel.COMMANDS, True),
        ("subscribe", protocol.Channel.EVENTS, False),
        ("receive", protocol.Channel.TIME_RESPONSE, True),
    ],
)
def test_a_device_may_use_only_its_own_channels(
    action: str, channel: protocol.Channel, allowed: bool
) -> None:
    me, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert device_may(me, action, protocol.topic(me, channel)) is allowed
    assert device_may(me, action, protocol.topic(other, channel)) is False


def test_wildcards_belong_to_the_gateway_alone() -> None:
    me = str(uuid.uuid4())
    for topic in ("#", "sesame/#", "sesame/v1/devices/+/events", f"sesame/v1/devices/{me}/#"):
        assert not device_may(me, "subscribe", topic), topic
    assert device_may(protocol.GATEWAY_USERNAME, "subscribe", "sesame/v1/devices/+/events")
    assert not device_may(protocol.GATEWAY_USERNAME, "subscribe", "#")


def test_device_secrets_hash_as_mosquitto_does(tmp_path: Path) -> None:
    """A hash from Mosquitto's own tool verifies here, and ours has its form."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "device", "s3cret"], check=True)
    theirs = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    assert verify_password(theirs, "s3cret")
    assert not verify_password(theirs, "s3cre7")
    ours = hash_password("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3] == ["7", "101"]
    assert verify_password(ours, "s3cret")
    assert not verify_password(None, "s3cret")
    assert not verify_password("garbage", "s3cret")


def test_events_a_device_dropped_are_a_warning_until_it_reports_none() -> None:
    from datetime import UTC, datetime

    from sesame.devices import health
    from sesame.models import Device

    device = Device(warnings={}, reported_state={})
    now = datetime.now(UTC)
    health.reported(device, protocol.ReportedState(at=now, extra={"events_dropped": 12}), now)
    assert "12 events" in device.warnings["events_dropped"]["message"]
    health.reported(device, protocol.ReportedState(at=now, battery_pct=90), now)
    assert "events_dropped" in device.warnings  # a report without the key changes nothing
    health.reported(device, protocol.ReportedState(at=now, extra={"events_dropped": 0}), now)
    assert "events_dropped" not in device.warnings


def test_pin_changed_is_a_documented_event_type_and_access_methods_match_the_log() -> None:
    from sesame.models import AccessMethod

    assert protocol.EventType("pin_changed") is protocol.EventType.PIN_CHANGED
    assert {m.value for m in protocol.AccessMethod} == {m.value for m in AccessMethod}
