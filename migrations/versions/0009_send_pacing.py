"""send_pacing: each gateway's next free send slot and the SMS it sent today (KENGELE_SEND_RATE,
KENGELE_DAILY_SMS_BUDGET), shared by the dispatchers of every replica

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "send_pacing",
        sa.Column("gateway", sa.String(length=40), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("spent", sa.Integer(), nullable=False),
        sa.Column("noticed", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("gateway", name=op.f("pk_send_pacing")),
    )


def downgrade() -> None:
    op.drop_table("send_pacing")
