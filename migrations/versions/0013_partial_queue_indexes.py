"""the queues' indexes of messages become partial: they hold only the rows still to be done
(inbound unprocessed, outbound queued or sending, failed forwards not handed on), not the millions
a deployment has finished

Building one reads the table once (seconds for ten million rows); the indexes replaced held every
row, so the database shrinks by about their size.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in app/models.py when this was written (a migration never imports what may change later).
PARTIAL: dict[str, tuple[list[str], str]] = {
    "ix_messages_unprocessed": (
        ["processed_at", "direction", "id"],
        "processed_at IS NULL AND direction = 'inbound'",
    ),
    "ix_messages_due": (["priority", "next_attempt_at"], "status = 'queued'"),
    "ix_messages_stale": (["claimed_until"], "status = 'sending'"),
    "ix_messages_failed": (
        ["followed_up_at", "id"],
        "status = 'failed' AND purpose IN ('alert_forward', 'escalation') AND followed_up_at IS NULL",
    ),
}
PLAIN: dict[str, list[str]] = {
    "ix_messages_unprocessed": ["processed_at", "direction", "id"],
    "ix_messages_due": ["status", "priority", "next_attempt_at"],
    "ix_messages_stale": ["status", "claimed_until"],
    "ix_messages_failed": ["status", "purpose", "followed_up_at"],
}


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:  # indexes only: no table copy
        for name, (columns, where) in PARTIAL.items():
            batch_op.drop_index(name)
            batch_op.create_index(
                name, columns, unique=False, sqlite_where=sa.text(where), postgresql_where=sa.text(where)
            )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        for name, columns in PLAIN.items():
            batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False)
