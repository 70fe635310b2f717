"""A log call never raises, whatever its arguments or the pipeline do; secrets are redacted."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from sesame.kit.logging import LOG_FAILURES, configure_logging


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")

    __repr__ = __str__


def explode_on_marker(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if any(isinstance(v, str) and "poison" in v for v in event_dict.values()):
        raise ValueError("processor failed on an unusual argument")
    return event_dict


@pytest.fixture
def output() -> Iterator[io.BytesIO]:
    stream = io.BytesIO()
    configure_logging("debug", "json", extra_processors=[explode_on_marker], stream=stream)
    yield stream
    configure_logging("warning", "console")


def lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def failures() -> float:
    return sum(
        sample.value
        for metric in LOG_FAILURES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_a_failing_processor_is_swallowed_and_counted(output: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    before = failures()
    assert log.info("user_visited", path="/poison") is None
    assert failures() == before + 1
    log.info("next_line_still_works", path="/fine")
    assert [line["event"] for line in lines(output)] == ["next_line_still_works"]


def test_bad_interpolation_arguments_do_not_raise(output: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    before = failures()
    log.info("two placeholders %s %s", "only one")
    log.error("no placeholders", "but an argument")
    assert failures() >= before + 1


def test_unprintable_values_are_rendered_not_raised(output: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    log.warning("odd_value", value=Unprintable(), raw=b"\xff\xfe")
    [line] = lines(output)
    assert line["value"] == "<unrepresentable Unprintable>"


async def test_async_log_methods_are_guarded_too(output: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    before = failures()
    assert await log.ainfo("async", marker="poison") is None
    assert failures() == before + 1


def test_secrets_are_redacted(output: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "login",
        password="hunter2",
        pin="1234",
        token="abc",
        headers={"Authorization": "x"},
        user="kim",
    )
    [line] = lines(output)
    assert line["password"] == line["pin"] == line["token"] == "[redacted]"
    assert line["headers"]["Authorization"] == "[redacted]"
    assert line["user"] == "kim"


def test_phone_numbers_and_email_addresses_are_masked_wherever_they_appear(
    output: io.BytesIO,
) -> None:
    log = structlog.get_logger("test")
    log.info(
        "revoked by resident:+821012345678",
        reason="shared with +821098765432 by kim.lee@example.com",
        people=[{"contact": "alice@example.co.kr"}, ("+12025550143",)],
        at="2026-11-27T09:41:03+09:00",
        count=3,
    )
    try:
        raise ValueError("no person with phone +821055550000")
    except ValueError:
        log.exception("lookup_failed")
    text = output.getvalue().decode()
    for raw in (
        "+821012345678",
        "821098765432",
        "kim.lee@",
        "alice@",
        "12025550143",
        "821055550000",
    ):
        assert raw not in text
    first, failed = lines(output)
    assert first["event"] == "revoked by resident:+82******78"
    assert first["reason"] == "shared with +82******32 by k***@example.com"
    assert first["people"] == [{"contact": "a***@example.co.kr"}, ["+12******43"]]
    assert first["at"] == "2026-11-27T09:41:03+09:00"  # offsets are not phone numbers
    assert first["count"] == 3
    assert "+82******00" in failed["exception"]


def test_a_value_that_cannot_be_masked_does_not_fail_the_line(output: io.BytesIO) -> None:
    class Hostile(list[str]):
        def __iter__(self) -> Any:
            raise RuntimeError("cannot iterate")

    log = structlog.get_logger("test")
    before = failures()
    log.info("odd", value=Hostile(["+821012345678"]), phone="+821012345678")
    [line] = lines(output)
    assert line["value"] == "[unmaskable]"
    assert line["phone"] == "+82******78"
    assert failures() == before
