"""Residents recorded by opaque ids, reasons as codes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:00:00.000000

Rows written before residents had opaque ids name them by phone number: keys they gave
(``issued_by = 'resident:+82…'``, ``name = 'shared by +82…'`` or ``'guest of +82…'``,
``revoked_reason = 'revoked by resident:+82…'``), doors they opened
(``action_attempts.requested_by``) and the idempotency records of their requests
(``scope``). This rewrites them to what is written now: the person record the resident
acted through (``resident:<person id>``, or just ``resident`` when it cannot be told),
neutral key names and reason codes; stored answers filed under a phone number, which only
serve retries within a day, are deleted.

Entries already in the ledger keep their bytes: an append-only log cannot be rewritten.
The downgrade changes nothing back (the phone numbers are not restored).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PHONE_ACTOR = "resident:+%"

keys = sa.table(
    "keys",
    sa.column("id", sa.Uuid()),
    sa.column("issued_by", sa.String()),
    sa.column("issued_by_person_id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("revoked_reason", sa.String()),
)
attempts = sa.table(
    "action_attempts", sa.column("id", sa.Uuid()), sa.column("requested_by", sa.String())
)
access_events = sa.table(
    "access_events", sa.column("action_attempt_id", sa.Uuid()), sa.column("person_id", sa.Uuid())
)
idempotency_records = sa.table("idempotency_records", sa.column("scope", sa.String()))

NAMES = {"shared by +%": "Shared key", "guest of +%": "Guest pass"}
REASONS = {
    "revoked by resident:%": "revoked_by_resident",
    "revoked by staff:%": "revoked_by_staff",
    "revoked by api_key:%": "revoked_by_partner",
    "moved out": "moved_out",
}


def _person_ref(person_id: object) -> str:
    return f"resident:{person_id}" if person_id is not None else "resident"


def upgrade() -> None:
    bind = op.get_bind()
    given = bind.execute(
        sa.select(keys.c.id, keys.c.issued_by_person_id).where(keys.c.issued_by.like(PHONE_ACTOR))
    ).all()
    for key_id, person_id in given:
        bind.execute(
            keys.update().where(keys.c.id == key_id).values(issued_by=_person_ref(person_id))
        )
    for pattern, name in NAMES.items():
        bind.execute(keys.update().where(keys.c.name.like(pattern)).values(name=name))
    for pattern, reason in REASONS.items():
        bind.execute(
            keys.update().where(keys.c.revoked_reason.like(pattern)).values(revoked_reason=reason)
        )
    opened: dict[object, object] = {}
    for attempt_id, person_id in bind.execute(
        sa.select(attempts.c.id, access_events.c.person_id)
        .select_from(attempts)
        .outerjoin(access_events, access_events.c.action_attempt_id == attempts.c.id)
        .where(attempts.c.requested_by.like(PHONE_ACTOR))
    ):
        if opened.get(attempt_id) is None:
            opened[attempt_id] = person_id
    for attempt_id, person_id in opened.items():
        bind.execute(
            attempts.update()
            .where(attempts.c.id == attempt_id)
            .values(requested_by=_person_ref(person_id))
        )
    bind.execute(idempotency_records.delete().where(idempotency_records.c.scope.like(PHONE_ACTOR)))


def downgrade() -> None:
    """Nothing to undo: the rows keep their opaque ids."""
