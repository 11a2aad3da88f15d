"""officers' shift tables; failed forwards handed on; outbox priorities

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalation_step", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("beep", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shifts", sa.Text(), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("followed_up_at", app.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_index("ix_messages_due")
        batch_op.create_index("ix_messages_due", ["status", "priority", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_messages_failed", ["status", "purpose", "followed_up_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_failed")
        batch_op.drop_index("ix_messages_due")
        batch_op.create_index("ix_messages_due", ["status", "next_attempt_at"], unique=False)
        batch_op.drop_column("priority")
        batch_op.drop_column("followed_up_at")
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_column("shifts")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("beep")
        batch_op.drop_column("escalation_step")
