"""The auditor's rules, on small logs written entry by entry: each violation it must
report, named by index, and a clean life that it must not flag."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sesame.ledger import entries, merkle
from sesame.ledger.audit import audit
from sesame.ledger.note import Signer

SIGNER = Signer("sesame.example/ledger", Ed25519PrivateKey.generate())
PARTNER = str(uuid.UUID(int=1))
ADMIN = {"kind": "staff", "id": str(uuid.UUID(int=2)), "role": "partner_admin"}
INSTALLER = {"kind": "staff", "id": str(uuid.UUID(int=3)), "role": "installer"}
D1, D2 = str(uuid.UUID(int=21)), str(uuid.UUID(int=22))  # devices
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
DEVICE = str(uuid.UUID(int=9))


class Log:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.at = START

    def add(
        self,
        topic: str,
        subject: str,
        actor: dict[str, Any],
        minutes: int = 1,
        *,
        recorded_actor: dict[str, Any] | None = None,
        **data: Any,
    ) -> int:
        """Append an event; ``recorded_actor`` writes the actor as is, as older
        entries recorded it."""
        self.at += timedelta(minutes=minutes)
        index = len(self.bodies)
        entry = entries.build(
            topic=topic,
            at=self.at,
            partner_id=uuid.UUID(PARTNER),
            aggregate_id=uuid.UUID(subject),
            payload={"actor": actor, **data},
        )
        if recorded_actor is not None:
            entry["actor"] = recorded_actor
        self.bodies.append(entries.seal(entry, index, entries.sign(entry, SIGNER), SIGNER.verifier))
        return index

    def issue(self, kind: str = "courier", actor: dict[str, Any] = ADMIN, **data: Any) -> str:
        key = str(uuid.uuid4())
        data.setdefault("person_id", str(uuid.uuid4()))
        self.add("key.issued", key, actor, kind=kind, **data)
        return key

    def report(self) -> Any:
        root = merkle.root_of([merkle.leaf_hash(b) for b in self.bodies])
        return audit(self.bodies, expected_root=root, log=SIGNER.verifier, signatures=True)


def kinds(report: Any) -> list[tuple[int, str]]:
    return [(v.index, v.kind) for v in report.violations]


def test_a_clean_life_passes() -> None:
    log = Log()
    resident = log.issue("resident", {"kind": "system"})
    owner = entries.parse(log.bodies[0])["data"]["person_id"]
    shared = str(uuid.uuid4())
    log.add(
        "key.shared",
        shared,
        {"kind": "resident", "person": owner},
        kind="household",
        parent_key_id=resident,
        person_id=str(uuid.uuid4()),
    )
    log.add("key.used", resident, {"kind": "device", "id": D1}, device_id=D1)
    log.add("key.suspended", shared, ADMIN)
    log.add("key.resumed", shared, ADMIN)
    log.add("key.used", shared, {"kind": "device", "id": D1}, device_id=D1)
    log.add("key.revoked", shared, {"kind": "resident", "person": owner})
    log.add("key.revoked", resident, ADMIN)
    report = log.report()
    assert report.ok, report.violations
    assert report.keys == 2
    assert report.counts["key.used"] == 2


def test_entries_naming_every_person_of_a_resident_still_audit() -> None:
    log = Log()
    resident = log.issue("resident", {"kind": "system"})
    owner = entries.parse(log.bodies[0])["data"]["person_id"]
    older = {"kind": "resident", "persons": [str(uuid.uuid4()), owner]}
    shared = str(uuid.uuid4())
    log.add(
        "key.shared",
        shared,
        {"kind": "resident"},
        recorded_actor=older,
        kind="household",
        parent_key_id=resident,
        person_id=str(uuid.uuid4()),
    )
    log.add("key.revoked", shared, {"kind": "resident"}, recorded_actor=older)
    stranger = log.add(
        "key.revoked",
        resident,
        {"kind": "resident"},
        recorded_actor={"kind": "resident", "persons": [str(uuid.uuid4())]},
    )
    assert kinds(log.report()) == [(stranger, "revoked_without_right")]


def test_use_after_revocation_and_beyond_its_uses_is_reported() -> None:
    log = Log()
    key = log.issue(max_uses=1)
    log.add("key.used", key, {"kind": "device"}, device_id=D1)
    second = log.add("key.used", key, {"kind": "device"}, device_id=D1)
    log.add("key.revoked", key, ADMIN)
    late = log.add("key.used", key, {"kind": "device"}, device_id=D1)
    again = log.add("key.revoked", key, ADMIN)
    assert kinds(log.report()) == [
        (second, "uses_exceeded"),
        (late, "use_while_revoked"),
        (late, "uses_exceeded"),
        (again, "revoked_twice"),
    ]


def test_issue_without_the_right_is_reported() -> None:
    log = Log()
    log.issue(actor=INSTALLER)  # installers do not write keys
    log.issue(actor={"kind": "api_key", "partner": PARTNER, "scopes": ["keys:read"]})
    log.issue(actor={"kind": "device", "id": D1})
    log.issue(kind="courier", actor={"kind": "system"})  # the system only moves residents in
    stranger = {"kind": "resident", "person": str(uuid.uuid4())}
    resident = log.issue("resident", {"kind": "system"})
    log.issue(kind="household", actor=stranger, parent_key_id=resident)  # not their key
    report = log.report()
    assert [v.kind for v in report.violations] == ["issued_without_right"] * 5
    assert [v.index for v in report.violations] == [0, 1, 2, 3, 5]


def test_use_by_a_decommissioned_device_and_of_an_unknown_key() -> None:
    log = Log()
    key = log.issue()
    device = str(uuid.uuid4())
    log.add("device.decommissioned", device, ADMIN)
    late = log.add("key.used", key, {"kind": "device"}, device_id=device)
    ghost = log.add("key.used", str(uuid.uuid4()), {"kind": "device"}, device_id=D2)
    assert kinds(log.report()) == [
        (late, "use_by_decommissioned_device"),
        (ghost, "unknown_key"),
    ]


def test_gaps_reordering_and_changed_bytes_are_reported() -> None:
    log = Log()
    for _ in range(5):
        log.issue()
    honest_root = merkle.root_of([merkle.leaf_hash(b) for b in log.bodies])

    gap = log.bodies[:2] + log.bodies[3:]  # entry 2 removed
    report = audit(gap, expected_root=honest_root)
    assert (2, "wrong_position") in kinds(report)
    assert not report.root_ok

    swapped = [log.bodies[1], log.bodies[0], *log.bodies[2:]]
    assert kinds(audit(swapped, expected_root=None))[:2] == [
        (0, "wrong_position"),
        (1, "wrong_position"),
    ]

    forged = list(log.bodies)
    forged[3] = forged[3].replace(b"courier", b"resident")
    report = audit(forged, expected_root=honest_root, log=SIGNER.verifier, signatures=True)
    assert (3, "bad_signature") in kinds(report)
    assert not report.root_ok
    assert not report.ok


def test_a_pass_issued_beyond_its_parent_is_reported() -> None:
    """A pass without the parent's schedule, or ending after it, was issued beyond it."""
    log = Log()
    hours = {"weekdays": [0, 1, 2, 3, 4], "start": "07:00", "end": "22:00"}
    ends = (START + timedelta(days=2)).isoformat()
    resident = log.issue("resident", {"kind": "system"}, schedule=hours, ends_at=ends)
    owner = {"kind": "resident", "person": entries.parse(log.bodies[0])["data"]["person_id"]}
    inside = {"weekdays": [1], "start": "09:00", "end": "18:00"}
    log.issue("guest", owner, parent_key_id=resident, schedule=inside, ends_at=ends)
    open_hours = log.issue("guest", owner, parent_key_id=resident, ends_at=ends)
    too_long = log.issue(
        "guest",
        owner,
        parent_key_id=resident,
        schedule=hours,
        ends_at=(START + timedelta(days=365)).isoformat(),
    )
    report = log.report()
    assert [(v.index, v.kind, v.subject) for v in report.violations] == [
        (2, "issued_beyond_parent", open_hours),
        (3, "issued_beyond_parent", too_long),
    ]


def test_a_child_used_while_its_parent_could_not_be_is_reported() -> None:
    """A shared key used after its parent was suspended or revoked, though nothing was
    recorded about the child itself."""
    log = Log()
    resident = log.issue("resident", {"kind": "system"})
    owner = {"kind": "resident", "person": entries.parse(log.bodies[0])["data"]["person_id"]}
    shared, member = str(uuid.uuid4()), str(uuid.uuid4())
    log.add("key.shared", shared, owner, kind="household", parent_key_id=resident, person_id=member)
    guest = log.issue("guest", {"kind": "resident", "person": member}, parent_key_id=shared)
    log.add("key.used", guest, {"kind": "device"}, device_id=DEVICE)
    log.add("key.suspended", resident, ADMIN)
    while_suspended = log.add("key.used", shared, {"kind": "device"}, device_id=DEVICE)
    log.add("key.resumed", resident, ADMIN)
    log.add("key.used", guest, {"kind": "device"}, device_id=DEVICE)
    log.add("key.revoked", resident, ADMIN)
    grandchild = log.add("key.used", guest, {"kind": "device"}, device_id=DEVICE)
    assert kinds(log.report()) == [
        (while_suspended, "use_beyond_parent"),
        (grandchild, "use_beyond_parent"),
    ]
