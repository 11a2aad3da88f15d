"""messages.recipient_index and alerts.opened: the counts behind KENGELE_REPLY_LIMIT and KENGELE_FLOOD_LIMIT

Replies are counted per recipient by a blind index of the number; the replies of the last day are
given theirs here (under the keyring `kengele db upgrade` hands over; without one, replies queued
before the upgrade are not counted, so a sender may get one window's worth more). A report that
opened its incident is marked from now on; earlier ones need no mark, their window is over.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 16:30:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import context, op

import app.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_index", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_messages_recipient_index_created_at"),
            ["recipient_index", "created_at"],
            unique=False,
        )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opened", sa.Boolean(), server_default=sa.false(), nullable=False))
    keyring = context.config.attributes.get("keyring")
    if keyring is None:
        return
    messages = sa.table(
        "messages",
        sa.column("id", sa.BigInteger),
        sa.column("recipient", sa.Text),
        sa.column("recipient_index", sa.String),
        sa.column("purpose", sa.String),
        sa.column("created_at", app.db.UTCDateTime(timezone=True)),
    )
    bind = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=1)
    rows = bind.execute(
        sa.select(messages.c.id, messages.c.recipient).where(
            messages.c.purpose == "reply", messages.c.recipient.is_not(None), messages.c.created_at > since
        )
    ).all()
    for row in rows:
        number = keyring.decrypt(row.recipient)
        bind.execute(
            sa.update(messages).where(messages.c.id == row.id).values(recipient_index=keyring.index(number))
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("opened")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_recipient_index_created_at"))
        batch_op.drop_column("recipient_index")
