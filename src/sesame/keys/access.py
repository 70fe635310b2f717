"""Who may open what, when: the rules every decision uses, online and offline.

- **Coverage.** A key targets a site, a building, a unit or one entrance. A site key opens
  the site's shared entrances (those not belonging to a unit); a building key, its
  building's shared entrances and the site-wide ones; a unit key, the unit's own doors
  plus everything a key to its building opens; an entrance key, that entrance.
- **Time.** A key may have a window (``starts_at``/``ends_at``, instants) and a recurring
  schedule: weekdays and local hours in the site's time zone. Local hours are read with
  the zone's rules on each date, so "07:00-22:00" stays 07:00-22:00 on the clock across
  daylight-saving changes. ``end`` at or before ``start`` runs past midnight.
- **Uses.** A key with ``max_uses`` is spent after that many granted openings.
- **Status.** Revoked and suspended are decisions; scheduled, active and expired follow
  from time and uses (``effective_status``).
- **Derived keys.** A shared key or a guest pass is bounded by the key it was given from,
  and that one by its own parent: a key opens a door only when every key of its lineage
  (``Terms``) would. Its window is the intersection of theirs, and so are its schedules:
  a moment is allowed when each schedule of the lineage allows it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from sesame.models import KeyStatus, TargetKind


class Refusal(enum.StrEnum):
    """Why a key did not open a door: stable codes, in the access log and API errors."""

    NO_KEY = "no_key"
    REVOKED = "key_revoked"
    SUSPENDED = "key_suspended"
    NOT_YET_VALID = "key_not_yet_valid"
    EXPIRED = "key_expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    USES_EXHAUSTED = "uses_exhausted"
    WRONG_ENTRANCE = "wrong_entrance"
    DEVICE_FAILED = "device_failed"


@dataclass(frozen=True)
class Place:
    """Where an entrance is."""

    site_id: UUID
    building_id: UUID | None
    unit_id: UUID | None
    entrance_id: UUID


def covers(key: Any, place: Place) -> bool:
    if key.site_id != place.site_id:
        return False
    target = TargetKind(key.target_kind)
    if target is TargetKind.ENTRANCE:
        return bool(key.entrance_id == place.entrance_id)
    if place.unit_id is not None:  # a unit's own door: only that unit's keys
        return target is TargetKind.UNIT and key.unit_id == place.unit_id
    if place.building_id is None:  # a site-wide shared entrance
        return True
    if target is TargetKind.SITE:
        return True
    return bool(key.building_id == place.building_id)


@dataclass(frozen=True)
class Schedule:
    weekdays: frozenset[int]
    start: time
    end: time

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Schedule | None:
        if not raw:
            return None
        return cls(
            frozenset(int(d) for d in raw["weekdays"]),
            time.fromisoformat(raw["start"]),
            time.fromisoformat(raw["end"]),
        )

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def allows(self, moment: datetime, zone: ZoneInfo) -> bool:
        local = moment.astimezone(zone)
        clock, day = local.time().replace(tzinfo=None), local.weekday()
        if not self.overnight:
            return day in self.weekdays and self.start <= clock < self.end
        return (day in self.weekdays and clock >= self.start) or (
            (day - 1) % 7 in self.weekdays and clock < self.end
        )

    def intervals(
        self, begin: datetime, finish: datetime, zone: ZoneInfo
    ) -> list[tuple[datetime, datetime]]:
        """The UTC intervals the schedule allows between ``begin`` and ``finish``, for a
        reader that knows no time zones."""
        out: list[tuple[datetime, datetime]] = []
        day = begin.astimezone(zone).date() - timedelta(days=1)
        last = finish.astimezone(zone).date()
        while day <= last:
            if day.weekday() in self.weekdays:
                opens = _local(day, self.start, zone)
                closes = _local(day + timedelta(days=1) if self.overnight else day, self.end, zone)
                lo, hi = max(opens, begin), min(closes, finish)
                if lo < hi:
                    out.append((lo, hi))
            day += timedelta(days=1)
        return out

    def minutes(self) -> frozenset[int]:
        """The minutes of the week (Monday 00:00 = 0) the schedule allows, on the wall
        clock: what makes one weekly schedule comparable with another of the same site."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        length = end - start if not self.overnight else end + DAY_MINUTES - start
        return frozenset(
            (day * DAY_MINUTES + start + offset) % WEEK_MINUTES
            for day in self.weekdays
            for offset in range(length)
        )

    def within(self, other: Schedule) -> bool:
        """Whether every moment this schedule allows, ``other`` allows too."""
        return self.minutes() <= other.minutes()


DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
Interval = tuple[datetime, datetime]


def intersect(first: Sequence[Interval], second: Sequence[Interval]) -> list[Interval]:
    """The moments in both lists of sorted, disjoint intervals."""
    out: list[Interval] = []
    i = j = 0
    while i < len(first) and j < len(second):
        lo, hi = max(first[i][0], second[j][0]), min(first[i][1], second[j][1])
        if lo < hi:
            out.append((lo, hi))
        if first[i][1] <= second[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass(frozen=True)
class Terms:
    """What a key allows once the keys it derives from are counted: the latest start,
    the earliest end and every schedule of its lineage (the key first, then its parent,
    and so on)."""

    starts_at: datetime | None
    ends_at: datetime | None
    schedules: tuple[Schedule, ...]

    @classmethod
    def of(cls, lineage: Sequence[Any]) -> Terms:
        starts = [k.starts_at for k in lineage if k.starts_at is not None]
        ends = [k.ends_at for k in lineage if k.ends_at is not None]
        schedules = (Schedule.parse(k.schedule) for k in lineage)
        return cls(
            max(starts, default=None),
            min(ends, default=None),
            tuple(s for s in schedules if s is not None),
        )

    def intervals(self, begin: datetime, finish: datetime, zone: ZoneInfo) -> list[Interval]:
        """The intervals between ``begin`` and ``finish`` that the window and every
        schedule allow."""
        lo = max(begin, self.starts_at) if self.starts_at else begin
        hi = min(finish, self.ends_at) if self.ends_at else finish
        allowed: list[Interval] = [(lo, hi)] if lo < hi else []
        for schedule in self.schedules:
            allowed = intersect(allowed, schedule.intervals(lo, hi, zone))
        return allowed


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """A wall-clock time on a date, as an instant. A time skipped by a spring-forward
    change is read with the offset before it (so it falls just after the gap)."""
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def effective_status(key: Any, now: datetime) -> KeyStatus:
    status = KeyStatus(key.status)
    if status in (KeyStatus.REVOKED, KeyStatus.SUSPENDED):
        return status
    if key.ends_at is not None and key.ends_at <= now:
        return KeyStatus.EXPIRED
    if key.max_uses is not None and key.uses_count >= key.max_uses:
        return KeyStatus.EXPIRED
    if key.starts_at is not None and key.starts_at > now:
        return KeyStatus.SCHEDULED
    return KeyStatus.ACTIVE


def refusal(key: Any, place: Place, now: datetime, zone: ZoneInfo) -> Refusal | None:
    """Why ``key`` may not open ``place`` at ``now``; None if it may."""
    status = effective_status(key, now)
    if status is KeyStatus.REVOKED:
        return Refusal.REVOKED
    if status is KeyStatus.SUSPENDED:
        return Refusal.SUSPENDED
    if not covers(key, place):
        return Refusal.WRONG_ENTRANCE
    if status is KeyStatus.SCHEDULED:
        return Refusal.NOT_YET_VALID
    if status is KeyStatus.EXPIRED:
        uses_spent = key.max_uses is not None and key.uses_count >= key.max_uses
        return Refusal.USES_EXHAUSTED if uses_spent else Refusal.EXPIRED
    schedule = Schedule.parse(key.schedule)
    if schedule is not None and not schedule.allows(now, zone):
        return Refusal.OUTSIDE_SCHEDULE
    return None


def lineage_refusal(
    lineage: Sequence[Any], place: Place, now: datetime, zone: ZoneInfo
) -> Refusal | None:
    """Why the first key of ``lineage`` may not open ``place`` at ``now``: its own reason,
    or that of a key it derives from (a pass is refused where its parent would be)."""
    for key in lineage:
        reason = refusal(key, place, now, zone)
        if reason is not None:
            return reason
    return None


def best_refusal(refusals: list[Refusal]) -> Refusal:
    """The most telling reason among a person's keys (a near miss beats "no key")."""
    order = [
        Refusal.OUTSIDE_SCHEDULE,
        Refusal.NOT_YET_VALID,
        Refusal.USES_EXHAUSTED,
        Refusal.EXPIRED,
        Refusal.SUSPENDED,
        Refusal.REVOKED,
        Refusal.WRONG_ENTRANCE,
    ]
    for reason in order:
        if reason in refusals:
            return reason
    return Refusal.NO_KEY
