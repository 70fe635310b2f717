"""When a PIN code tied to a key belongs on its lock: the key's status and its recurring
schedule, in the site's zone, across daylight-saving changes (``LockTerms``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sesame.keys.schedule import LockTerms, lock_boundary
from sesame.models import Key, KeyStatus, PinCode, PinStatus

NEW_YORK = ZoneInfo("America/New_York")
SEOUL = ZoneInfo("Asia/Seoul")
LEAD = timedelta(minutes=60)
NINE_TO_FIVE = {"weekdays": [0, 1, 2, 3, 4, 5, 6], "start": "09:00", "end": "17:00"}


def a_key(**fields: Any) -> Key:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "status": KeyStatus.ACTIVE,
        "starts_at": None,
        "ends_at": None,
        "max_uses": None,
        "uses_count": 0,
        "schedule": None,
    }
    values.update(fields)
    return Key(**values)


def a_code(key: Key | None, **fields: Any) -> PinCode:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "key_id": key.id if key is not None else None,
        "wanted": True,
        "starts_at": None,
        "ends_at": None,
        "status": PinStatus.UNSET,
    }
    values.update(fields)
    return PinCode(**values)


def terms(zone: ZoneInfo, *keys: Key) -> LockTerms:
    return LockTerms({key.id: key for key in keys}, zone)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_scheduled_key_puts_its_code_on_the_lock_only_in_its_windows_in_new_york() -> None:
    key = a_key(schedule=NINE_TO_FIVE)
    pin = a_code(key)
    rules = terms(NEW_YORK, key)
    saturday_noon = utc(2026, 3, 7, 17)  # 12:00 EST
    assert rules.belongs(pin, saturday_noon, LEAD)
    assert rules.next_moment(pin, saturday_noon, LEAD) == utc(2026, 3, 7, 22)  # 17:00 EST
    evening = utc(2026, 3, 7, 22)
    assert not rules.belongs(pin, evening, LEAD)
    # Sunday is the spring-forward day: 09:00 is now EDT, an hour earlier in UTC.
    assert rules.next_moment(pin, evening, LEAD) == utc(2026, 3, 8, 13)
    assert not rules.belongs(pin, utc(2026, 3, 8, 12, 59), LEAD)  # not opened early
    assert rules.belongs(pin, utc(2026, 3, 8, 13), LEAD)
    # Fall back (1 November 2026): 09:00 EST is 14:00 UTC again.
    assert rules.next_moment(pin, utc(2026, 10, 31, 22), LEAD) == utc(2026, 11, 1, 14)
    assert not rules.belongs(pin, utc(2026, 11, 1, 13, 30), LEAD)


def test_seoul_windows_stay_put_and_weekdays_and_nights_count() -> None:
    weeknights = {"weekdays": [0, 1, 2, 3, 4], "start": "22:00", "end": "06:00"}
    key = a_key(schedule=weeknights)
    pin = a_code(key)
    rules = terms(SEOUL, key)
    friday_2300 = utc(2026, 3, 6, 14)  # 23:00 KST on a Friday
    assert rules.belongs(pin, friday_2300, LEAD)
    assert rules.next_moment(pin, friday_2300, LEAD) == utc(2026, 3, 6, 21)  # Sat 06:00
    saturday = utc(2026, 3, 7, 3)
    assert not rules.belongs(pin, saturday, LEAD)
    # No window on Saturday or Sunday night: the next opens Monday 22:00 KST.
    assert rules.next_moment(pin, saturday, LEAD) == utc(2026, 3, 9, 13)


def test_a_code_follows_its_key_status_and_both_windows() -> None:
    now = utc(2026, 6, 1, 12)
    suspended = a_key(status=KeyStatus.SUSPENDED)
    revoked = a_key(status=KeyStatus.REVOKED)
    spent = a_key(max_uses=3, uses_count=3)
    later = a_key(starts_at=now + timedelta(minutes=30), ends_at=now + timedelta(days=2))
    rules = terms(SEOUL, suspended, revoked, spent, later)
    paused = a_code(suspended)
    assert not rules.belongs(paused, now, LEAD)
    assert not rules.finished(paused, now)  # suspension can be lifted
    assert rules.finished(a_code(revoked), now)
    assert rules.finished(a_code(spent), now)
    # A one-off start takes the lead time, whether the code's or the key's ...
    early = a_code(later)
    assert rules.belongs(early, now, LEAD)
    assert rules.next_moment(early, now, LEAD) == now + timedelta(days=2)
    # ... the later of the two; and the earlier end ends it.
    both = a_code(later, starts_at=now + timedelta(hours=3), ends_at=now + timedelta(days=1))
    assert not rules.belongs(both, now, LEAD)
    assert rules.next_moment(both, now, LEAD) == now + timedelta(hours=2)
    assert rules.next_moment(both, now + timedelta(hours=2), LEAD) == now + timedelta(days=1)
    assert rules.finished(both, now + timedelta(days=1))
    # A code with no key is only its own window.
    alone = a_code(None, ends_at=now + timedelta(hours=1))
    assert rules.belongs(alone, now, LEAD)
    assert lock_boundary([alone, paused, early], rules, now, LEAD) == now + timedelta(hours=1)


def test_a_schedule_with_no_window_left_for_a_finished_code_asks_for_nothing() -> None:
    key = a_key(schedule=NINE_TO_FIVE, ends_at=utc(2026, 3, 7, 0))
    rules = terms(NEW_YORK, key)
    pin = a_code(key)
    assert rules.finished(pin, utc(2026, 3, 7, 17))
    assert rules.next_moment(pin, utc(2026, 3, 7, 17), LEAD) is None
    deleted = a_code(a_key(schedule=NINE_TO_FIVE), wanted=False)
    assert lock_boundary([deleted], rules, utc(2026, 3, 7, 17), LEAD) is None


def test_a_code_tied_to_a_guest_pass_follows_the_hosts_schedule_and_suspension() -> None:
    """A pass with no schedule of its own, given from a 09:00-17:00 key: its code is on
    the lock only in the host's hours, and off while the host is suspended."""
    host = a_key(schedule=NINE_TO_FIVE)
    guest = a_key(parent_key_id=host.id)
    pin = a_code(guest)
    rules = LockTerms({guest.id: guest}, SEOUL, {guest.id: [guest, host]})
    noon, evening = utc(2026, 6, 1, 3), utc(2026, 6, 1, 11)  # 12:00 and 20:00 in Seoul
    assert rules.belongs(pin, noon, LEAD)
    assert not rules.belongs(pin, evening, LEAD)
    assert rules.next_moment(pin, noon, LEAD) == utc(2026, 6, 1, 8)  # 17:00 in Seoul
    host.status = KeyStatus.SUSPENDED
    assert not rules.belongs(pin, noon, LEAD)
    host.status = KeyStatus.REVOKED
    assert rules.finished(pin, noon)
