"""Validated field types shared by request schemas."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from pydantic import AfterValidator, StringConstraints, WithJsonSchema

_ZONES = frozenset(available_timezones())
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$")
DEFAULT_PHONE_REGION = "KR"


def _time_zone(value: str) -> str:
    if value not in _ZONES:
        raise ValueError("not an IANA time zone name, e.g. 'Asia/Seoul'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone name, e.g. 'Asia/Seoul'") from exc
    return value


def normalize_phone(value: str, region: str = DEFAULT_PHONE_REGION) -> str:
    """E.164 form of a phone number; national numbers are read as Korean by default."""
    try:
        parsed = phonenumbers.parse(value, None if value.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number; use E.164, e.g. '+821012345678'") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError("not a language tag such as 'ko-KR' or 'en'")
    return value


# Instants and dates people give Sesame are about doors today: years 2000 to 2199. The
# bound keeps every sum made with them (a day's default window, a pass's lifetime, a
# zone's offset, a week's schedule) far from the datetime type's own limits (years 1 and
# 9999), and within what both databases store.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_RANGE = "must fall in the years 2000 to 2199"


def _instant(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("times need a UTC offset, e.g. 2026-05-01T09:00:00+09:00")
    # The year as written (what the document's pattern says); in UTC it may be a day off.
    if not EARLIEST.year <= value.year < LATEST.year:
        raise ValueError(_RANGE)
    return value.astimezone(UTC)


def _day(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(_RANGE)
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_time_zone)]
Phone = Annotated[str, StringConstraints(max_length=32), AfterValidator(normalize_phone)]
Locale = Annotated[
    str,
    StringConstraints(max_length=35),
    AfterValidator(_locale),
    WithJsonSchema({"type": "string", "maxLength": 35, "pattern": _LOCALE.pattern}),
]
# The document states the bound as a pattern on the year, so that a client (or a fuzzer)
# generating valid values from it stays inside.
_YEARS = "^2[01][0-9]{2}-"
Instant = Annotated[  # aware, bounded, read as UTC
    datetime,
    AfterValidator(_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _YEARS}),
]
Day = Annotated[  # a calendar date, bounded like Instant
    date,
    AfterValidator(_day),
    WithJsonSchema({"type": "string", "format": "date", "pattern": _YEARS}),
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    ),
]
