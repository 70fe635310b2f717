"""Replaying the ledger: recompute the tree, then every key's life, and report what breaks.

The auditor is an outsider: it reads entries over HTTP or from exported tiles, never the
database. It checks, in one pass:

- **integrity** — each entry is canonical, names its own position (``index``), and the
  Merkle root of all entries equals the signed checkpoint's (a changed, missing or
  reordered entry cannot pass); with ``signatures`` each entry's signature is checked too;
- **lifecycles** — a key is issued once, before anything else happens to it; it is not
  used, nor given credentials, while revoked, suspended, outside its window or beyond its
  uses; nothing happens to a revoked key; a resumed key was suspended;
- **rights** — whoever issued a key could: staff whose role writes keys, an API key with
  ``keys:write`` of the same partner, the system for a move-in, or a resident sharing or
  lending from a key *they hold* and that was valid at that moment; a device never issues;
  a resident revokes only what was given from their own key;
- **lineage** — a key given from another (a shared key, a guest pass) is issued within
  its parent — window and weekly schedule — and is not used where one of the keys it
  derives from could not be (revoked, suspended, outside its window);
- **devices** — no key is used through a device after its decommissioning.

Violations name the entry's index and the subject, so they can be looked up and proven
to anyone with the entry's receipt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from sesame.auth.principal import ROLE_GRANTS, Action, Group
from sesame.keys.access import Schedule
from sesame.ledger import entries, merkle
from sesame.ledger.note import Verifier
from sesame.models.staff import StaffRole

CLOCK_TOLERANCE = timedelta(seconds=60)
ISSUING = ("key.issued", "key.shared")


@dataclass
class Violation:
    index: int
    kind: str
    subject: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
        }


@dataclass
class KeyLife:
    kind: str
    person: str | None
    partner: str | None
    parent: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    max_uses: int | None
    issued_at: datetime
    schedule: Schedule | None = None
    uses: int = 0
    revoked_at: datetime | None = None
    suspended_since: datetime | None = None
    suspensions: list[tuple[datetime, datetime]] = field(default_factory=list)

    def refusal(self, moment: datetime) -> str | None:
        """Why the key could not be used at ``moment``, if it could not."""
        if self.revoked_at is not None and moment >= self.revoked_at:
            return "revoked"
        if self.suspended_since is not None and moment >= self.suspended_since:
            return "suspended"
        if any(start <= moment < end for start, end in self.suspensions):
            return "suspended"
        if self.starts_at is not None and moment + CLOCK_TOLERANCE < self.starts_at:
            return "not yet valid"
        if self.ends_at is not None and moment >= self.ends_at + CLOCK_TOLERANCE:
            return "expired"
        return None


@dataclass
class Report:
    size: int = 0
    root: bytes = b""
    expected_root: bytes | None = None
    violations: list[Violation] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    keys: int = 0

    @property
    def root_ok(self) -> bool:
        return self.expected_root is None or self.root == self.expected_root

    @property
    def ok(self) -> bool:
        return self.root_ok and not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root_matches_checkpoint": self.root_ok,
            "keys": self.keys,
            "entries_by_type": dict(sorted(self.counts.items())),
            "violations": [v.as_dict() for v in self.violations],
        }


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _schedule(value: Any) -> Schedule | None:
    try:
        return Schedule.parse(value) if isinstance(value, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _may_issue_as_staff_or_key(actor: dict[str, Any], partner: str | None) -> bool:
    kind = actor.get("kind")
    if kind == "staff":
        try:
            role = StaffRole(str(actor.get("role")))
        except ValueError:
            return False
        return Action.WRITE in ROLE_GRANTS[role].get(Group.KEYS, frozenset())
    if kind == "api_key":
        return "keys:write" in (actor.get("scopes") or []) and actor.get("partner") == partner
    return False


class Auditor:
    """Feed entries in order with ``add``; ``finish`` compares the root."""

    def __init__(self, log: Verifier | None = None, *, signatures: bool = False) -> None:
        self.log = log
        self.signatures = signatures
        self.tree = merkle.Tree()
        self.report = Report()
        self.keys: dict[str, KeyLife] = {}
        self.decommissioned: dict[str, datetime] = {}
        self._last_at: datetime | None = None

    def flag(self, index: int, kind: str, subject: str | None, detail: str) -> None:
        self.report.violations.append(Violation(index, kind, subject, detail))

    def add(self, index: int, body: bytes) -> None:
        self.tree.append([merkle.leaf_hash(body)])
        try:
            entry = orjson.loads(body)
            if not isinstance(entry, dict) or entries.canonical(entry) != body:
                raise entries.EntryError("not canonical")
        except (orjson.JSONDecodeError, entries.EntryError):
            self.flag(index, "malformed_entry", None, "not a canonical JSON entry")
            return
        if entry.get("index") != index:
            self.flag(index, "wrong_position", None, f"the entry says index {entry.get('index')}")
        if self.signatures and self.log is not None and not entries.signature_ok(entry, self.log):
            self.flag(index, "bad_signature", None, "the log's signature does not verify")
        kind = str(entry.get("type"))
        self.report.counts[kind] += 1
        at = _time(entry.get("at"))
        if at is None:
            self.flag(index, "malformed_entry", None, "no valid time")
            return
        if self._last_at is not None and at + CLOCK_TOLERANCE < self._last_at:
            self.flag(index, "time_went_back", None, f"{entry.get('at')} after {self._last_at}")
        self._last_at = max(at, self._last_at or at)
        subject = entry.get("subject") or {}
        if "key" in subject:
            self._key_event(index, kind, str(subject["key"]), at, entry)
        elif "device" in subject and kind == "device.decommissioned":
            self.decommissioned[str(subject["device"])] = at

    # -- keys -----------------------------------------------------------------------------

    def _key_event(
        self, index: int, kind: str, key_id: str, at: datetime, entry: dict[str, Any]
    ) -> None:
        data = entry.get("data") or {}
        actor = entry.get("actor") or {}
        life = self.keys.get(key_id)
        if kind in ISSUING:
            if life is not None:
                self.flag(index, "issued_twice", key_id, "the key was already issued")
                return
            life = KeyLife(
                kind=str(data.get("kind")),
                person=data.get("person_id"),
                partner=entry.get("partner"),
                parent=data.get("parent_key_id"),
                starts_at=_time(data.get("starts_at")),
                ends_at=_time(data.get("ends_at")),
                max_uses=data.get("max_uses"),
                issued_at=at,
                schedule=_schedule(data.get("schedule")),
            )
            self.keys[key_id] = life
            self.report.keys += 1
            self._check_issuer(index, key_id, life, actor, data, at)
            self._check_within_parent(index, key_id, life)
            return
        if life is None:
            self.flag(index, "unknown_key", key_id, f"{kind} for a key never issued")
            return
        if kind == "key.used":
            moment = _time(data.get("occurred_at")) or at
            why = life.refusal(moment)
            if why is not None:
                self.flag(index, "use_while_" + why.replace(" ", "_"), key_id, f"used while {why}")
            else:
                for parent_id, parent in self._ancestors(life):
                    above = parent.refusal(moment)
                    if above is not None:
                        self.flag(index, "use_beyond_parent", key_id, f"{parent_id} was {above}")
                        break
            life.uses += 1
            if life.max_uses is not None and life.uses > life.max_uses:
                self.flag(index, "uses_exceeded", key_id, f"use {life.uses} of {life.max_uses}")
            device = str(data.get("device_id"))
            if device in self.decommissioned and moment >= self.decommissioned[device]:
                self.flag(index, "use_by_decommissioned_device", key_id, device)
        elif kind == "credential.issued":
            why = life.refusal(at)
            if why in ("revoked", "suspended", "expired"):
                self.flag(index, "credential_while_" + why, key_id, f"credentials for a key {why}")
        elif kind == "key.revoked":
            if life.revoked_at is not None:
                self.flag(index, "revoked_twice", key_id, "the key was already revoked")
            elif actor.get("kind") == "resident" and not self._gave(actor, life):
                self.flag(index, "revoked_without_right", key_id, "not given from their key")
            life.revoked_at = life.revoked_at or at
        elif kind == "key.suspended":
            if life.revoked_at is not None or life.suspended_since is not None:
                self.flag(index, "invalid_transition", key_id, "suspended when not active")
            life.suspended_since = life.suspended_since or at
        elif kind == "key.resumed":
            if life.suspended_since is None:
                self.flag(index, "invalid_transition", key_id, "resumed when not suspended")
            else:
                life.suspensions.append((life.suspended_since, at))
                life.suspended_since = None
            if life.revoked_at is not None:
                self.flag(index, "invalid_transition", key_id, "resumed after revocation")

    def _ancestors(self, life: KeyLife) -> list[tuple[str, KeyLife]]:
        found: list[tuple[str, KeyLife]] = []
        current = life
        while current.parent is not None and current.parent in self.keys:
            if any(current.parent == key for key, _ in found):
                break  # a loop cannot be a lineage
            found.append((current.parent, self.keys[current.parent]))
            current = self.keys[current.parent]
        return found

    def _check_within_parent(self, index: int, key_id: str, life: KeyLife) -> None:
        parent = self.keys.get(life.parent or "")
        if parent is None:
            return
        beyond = []
        if parent.ends_at is not None and (life.ends_at is None or life.ends_at > parent.ends_at):
            beyond.append("ends after its parent")
        if parent.starts_at is not None and (
            life.starts_at is None or life.starts_at < parent.starts_at
        ):
            beyond.append("starts before its parent")
        if parent.schedule is not None and (
            life.schedule is None or not life.schedule.within(parent.schedule)
        ):
            beyond.append("outside its parent's schedule")
        if beyond:
            self.flag(index, "issued_beyond_parent", key_id, "; ".join(beyond))

    def _gave(self, actor: dict[str, Any], life: KeyLife) -> bool:
        parent = self.keys.get(life.parent or "")
        return parent is not None and parent.person in _persons(actor)

    def _check_issuer(
        self,
        index: int,
        key_id: str,
        life: KeyLife,
        actor: dict[str, Any],
        data: dict[str, Any],
        at: datetime,
    ) -> None:
        kind = actor.get("kind")
        if kind == "system":
            if life.kind != "resident":
                self.flag(index, "issued_without_right", key_id, "the system issues resident keys")
            return
        if kind in ("staff", "api_key"):
            if not _may_issue_as_staff_or_key(actor, life.partner):
                self.flag(index, "issued_without_right", key_id, f"{kind} may not issue keys")
            return
        if kind == "resident":
            parent = self.keys.get(life.parent or "")
            if life.kind not in ("household", "guest") or parent is None:
                self.flag(
                    index, "issued_without_right", key_id, "a resident shares from a key they hold"
                )
                return
            if parent.person not in _persons(actor):
                self.flag(index, "issued_without_right", key_id, "the parent key is not theirs")
            why = parent.refusal(at)
            if why in ("revoked", "suspended", "expired"):
                self.flag(index, "issued_from_invalid_key", key_id, f"the parent key was {why}")
            if life.kind == "household" and parent.kind != "resident":
                self.flag(index, "issued_without_right", key_id, "only resident keys are shared")
            return
        self.flag(index, "issued_without_right", key_id, f"a {kind} cannot issue keys")

    def finish(self, expected_root: bytes | None) -> Report:
        self.report.size = self.tree.size
        self.report.root = self.tree.root()
        self.report.expected_root = expected_root
        return self.report


def _persons(actor: dict[str, Any]) -> list[Any]:
    """The person records a resident actor acted through: ``person`` (one, since entries
    stopped linking a resident's records across partners) or, in older entries,
    ``persons``."""
    persons = list(actor.get("persons") or [])
    return [actor["person"], *persons] if actor.get("person") else persons


def audit(
    bodies: Iterable[bytes],
    *,
    expected_root: bytes | None,
    log: Verifier | None = None,
    signatures: bool = False,
) -> Report:
    auditor = Auditor(log, signatures=signatures)
    for index, body in enumerate(bodies):
        auditor.add(index, body)
    return auditor.finish(expected_root)
