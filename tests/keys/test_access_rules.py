"""The access rules: coverage by target, windows, uses and schedules across DST."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from sesame.keys.access import Place, Refusal, Schedule, covers, effective_status, refusal
from sesame.models import KeyStatus

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
SITE, B1, B2, U1, U2 = (uuid.uuid4() for _ in range(5))


def key(**fields: object) -> SimpleNamespace:
    base = {
        "site_id": SITE,
        "target_kind": "unit",
        "building_id": B1,
        "unit_id": U1,
        "entrance_id": None,
        "status": "active",
        "starts_at": None,
        "ends_at": None,
        "max_uses": None,
        "uses_count": 0,
        "schedule": None,
    }
    base.update(fields)
    return SimpleNamespace(**base)


def place(building: uuid.UUID | None = None, unit: uuid.UUID | None = None) -> Place:
    return Place(SITE, building, unit, uuid.uuid4())


def test_coverage_follows_the_place_hierarchy() -> None:
    unit_key = key()
    assert covers(unit_key, place(B1, U1))  # its own unit door
    assert not covers(unit_key, place(B1, U2))  # a neighbour's door
    assert covers(unit_key, place(B1))  # its building's common entrance
    assert not covers(unit_key, place(B2))  # another building's entrance
    assert covers(unit_key, place())  # the parking gate of the site
    building_key = key(target_kind="building", unit_id=None)
    assert covers(building_key, place(B1))
    assert not covers(building_key, place(B1, U1))
    site_key = key(target_kind="site", building_id=None, unit_id=None)
    assert covers(site_key, place(B2))
    assert not covers(site_key, place(B2, U2))
    door = place(B1)
    entrance_key = key(target_kind="entrance", entrance_id=door.entrance_id)
    assert covers(entrance_key, door)
    assert not covers(entrance_key, place(B1))
    assert not covers(key(site_id=uuid.uuid4()), place(B1))


def test_status_follows_window_and_uses() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert effective_status(key(starts_at=now + timedelta(hours=1)), now) is KeyStatus.SCHEDULED
    assert effective_status(key(ends_at=now), now) is KeyStatus.EXPIRED
    assert effective_status(key(max_uses=2, uses_count=2), now) is KeyStatus.EXPIRED
    assert effective_status(key(status="revoked", ends_at=now), now) is KeyStatus.REVOKED
    assert effective_status(key(), now) is KeyStatus.ACTIVE


def test_refusals_name_the_reason() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    door = place(B1)
    assert refusal(key(), door, now, SEOUL) is None
    assert refusal(key(max_uses=1, uses_count=1), door, now, SEOUL) is Refusal.USES_EXHAUSTED
    assert refusal(key(ends_at=now), door, now, SEOUL) is Refusal.EXPIRED
    assert refusal(key(status="suspended"), door, now, SEOUL) is Refusal.SUSPENDED
    assert refusal(key(), place(B2), now, SEOUL) is Refusal.WRONG_ENTRANCE


WEEKDAY_MORNINGS = {"weekdays": [0, 1, 2, 3, 4], "start": "07:00", "end": "10:00"}


def test_schedule_in_seoul_local_hours() -> None:
    schedule = Schedule.parse(WEEKDAY_MORNINGS)
    assert schedule is not None
    monday_8 = datetime(2026, 3, 9, 8, 0, tzinfo=SEOUL)
    assert schedule.allows(monday_8, SEOUL)
    assert not schedule.allows(monday_8 + timedelta(hours=2), SEOUL)  # 10:00 is the end
    assert not schedule.allows(datetime(2026, 3, 14, 8, 0, tzinfo=SEOUL), SEOUL)  # Saturday


def test_schedule_keeps_wall_clock_hours_across_spring_forward() -> None:
    """New York moves from UTC-5 to UTC-4 on 2026-03-08: 07:00 local moves in UTC."""
    schedule = Schedule.parse(WEEKDAY_MORNINGS)
    assert schedule is not None
    friday = datetime(2026, 3, 6, 7, 30, tzinfo=NEW_YORK)
    monday = datetime(2026, 3, 9, 7, 30, tzinfo=NEW_YORK)
    assert schedule.allows(friday, NEW_YORK)
    assert schedule.allows(monday, NEW_YORK)
    assert not schedule.allows(datetime(2026, 3, 8, 7, 30, tzinfo=NEW_YORK), NEW_YORK)
    assert friday.utcoffset() == timedelta(hours=-5)
    assert monday.utcoffset() == timedelta(hours=-4)
    # 06:30 local on Monday is 10:30 UTC, which was 05:30 local the Friday before.
    assert not schedule.allows(datetime(2026, 3, 9, 10, 30, tzinfo=UTC), NEW_YORK)
    assert schedule.allows(datetime(2026, 3, 9, 11, 30, tzinfo=UTC), NEW_YORK)


def test_schedule_intervals_are_utc_and_follow_the_zone() -> None:
    schedule = Schedule.parse(WEEKDAY_MORNINGS)
    assert schedule is not None
    begin = datetime(2026, 3, 6, 0, 0, tzinfo=UTC)
    intervals = schedule.intervals(begin, begin + timedelta(days=4), NEW_YORK)
    assert intervals == [
        (datetime(2026, 3, 6, 12, tzinfo=UTC), datetime(2026, 3, 6, 15, tzinfo=UTC)),  # EST
        (datetime(2026, 3, 9, 11, tzinfo=UTC), datetime(2026, 3, 9, 14, tzinfo=UTC)),  # EDT
    ]


def test_fall_back_and_overnight_schedules() -> None:
    """2026-11-01 01:00-02:00 happens twice in New York; a 22:00-06:00 schedule spans it."""
    night = Schedule.parse({"weekdays": [5], "start": "22:00", "end": "06:00"})  # Saturday
    assert night is not None
    begin = datetime(2026, 10, 31, 0, 0, tzinfo=UTC)
    [(opens, closes)] = night.intervals(begin, begin + timedelta(days=2), NEW_YORK)
    assert opens == datetime(2026, 11, 1, 2, tzinfo=UTC)  # 22:00 EDT
    assert closes == datetime(2026, 11, 1, 11, tzinfo=UTC)  # 06:00 EST: nine hours later
    assert night.allows(datetime(2026, 11, 1, 5, 30, tzinfo=NEW_YORK), NEW_YORK)
    assert not night.allows(datetime(2026, 11, 1, 7, 0, tzinfo=NEW_YORK), NEW_YORK)


def test_seoul_has_no_daylight_saving() -> None:
    schedule = Schedule.parse(WEEKDAY_MORNINGS)
    assert schedule is not None
    begin = datetime(2026, 3, 1, tzinfo=UTC)
    starts = {
        opens.hour for opens, _ in schedule.intervals(begin, begin + timedelta(days=60), SEOUL)
    }
    assert starts == {22}  # 07:00 KST is always 22:00 UTC the day before
