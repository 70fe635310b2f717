"""platform keys, sealed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:45:00.000000

The VAPID key was derived from the master secret; it is now stored sealed, so that the
secret can change while browsers' push subscriptions, bound to the key, keep working.
The first start after this migration stores the key it derived until then.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import sesame.kit.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_keys",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sesame.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_platform_keys")),
    )


def downgrade() -> None:
    op.drop_table("platform_keys")
