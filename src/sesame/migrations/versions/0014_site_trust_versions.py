"""sites: the last trust document version, so that versions only ever grow

A reader keeps the newest trust document it has seen and ignores older ones. Versions
were the publishing server's wall clock: a clock stepped back, or two servers a little
apart, published a newer document under a smaller version, and readers ignored it. The
next version is now the wall clock or the last one plus one, whichever is larger.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 17:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trust_version", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("trust_version")
