"""notifications: e-mail destinations confirmed by their owner; device outages debounced

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 15:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import sesame.kit.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_device_outages",
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("offline_since", sesame.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_offline_at", sesame.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("flaps", sa.Integer(), nullable=False),
        sa.Column("last_alert_at", sesame.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_notification_device_outages_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_notification_device_outages")),
    )
    with op.batch_alter_table("notification_device_outages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_device_outages_offline_since"), ["offline_since"]
        )
    with op.batch_alter_table("notification_destinations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmation_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "confirmation_expires_at", sesame.kit.db.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "confirmation_sent_at", sesame.kit.db.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("confirmation_attempts", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    op.drop_table("notification_device_outages")
    with op.batch_alter_table("notification_destinations", schema=None) as batch_op:
        batch_op.drop_column("confirmation_attempts")
        batch_op.drop_column("confirmation_sent_at")
        batch_op.drop_column("confirmation_expires_at")
        batch_op.drop_column("confirmation_digest")
