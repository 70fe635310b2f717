"""keys suspended with their parent

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 15:40:00.000000

A key given from another (a shared key, a guest pass) is suspended while its parent is,
and resumed with it — but only if the parent's suspension is what suspended it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "suspended_with_parent", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_column("suspended_with_parent")
