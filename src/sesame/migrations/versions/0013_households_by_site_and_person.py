"""households: an index by (site, person), so a campaign reads its residents a page at a time

A campaign's job queues its deliveries a page of residents per transaction, in person
order after its cursor. With only ``(site_id)`` every page read and sorted all of the
site's households — a page cost grew with the audience and the campaign with its square.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_households_site_id_person_id"), ["site_id", "person_id"]
        )
        batch_op.drop_index(batch_op.f("ix_households_site_id"))


def downgrade() -> None:
    with op.batch_alter_table("households", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_households_site_id"), ["site_id"])
        batch_op.drop_index(batch_op.f("ix_households_site_id_person_id"))
