"""PIN codes found by their key

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 14:00:00.000000

A code tied to a key follows it (revoked, suspended, a recurring schedule), so a change
to a key looks up its codes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pin_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pin_codes_key_id"), ["key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pin_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pin_codes_key_id"))
