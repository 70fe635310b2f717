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
