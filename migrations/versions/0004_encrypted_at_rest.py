"""phone numbers and provider forms encrypted at rest; blind indexes for lookups by number

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00

Rows already stored are sealed here, in batches, under the keyring `kengele db upgrade` hands
over (app.db.upgrade: KENGELE_SECRET_KEY, or the development key file). An empty database needs
no key. Values already sealed are left as they are, so a run that stopped half-way can be redone.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (not read from app.models, which will go on changing): what this revision seals.
# table, primary key, encrypted columns, {index column: the number column it indexes}
SEALED: list[tuple[str, str, tuple[str, ...], dict[str, str]]] = [
    ("people", "id", ("phone",), {"phone_index": "phone"}),
    ("alerts", "id", ("sender", "text"), {"sender_index": "sender"}),
    ("messages", "id", ("sender", "recipient", "raw", "text"), {}),
    ("delivery_events", "id", ("raw",), {}),
    ("ussd_sessions", "session_id", ("phone", "text"), {}),
]
BATCH = 1000
SEALED_PREFIX = "k1:"


def _keyring() -> Any:
    keyring = context.config.attributes.get("keyring")
    if keyring is None:
        raise RuntimeError(
            "migration 0004 encrypts the phone numbers already stored and needs the key: "
            "run `kengele db upgrade` with KENGELE_SECRET_KEY set"
        )
    return keyring


def _rewrite(table: str, pk: str, columns: tuple[str, ...], indexes: dict[str, str], *, seal: bool) -> int:
    """Seal (or open) every value of `columns`, a batch of rows at a time; fill the index columns.

    Returns the number of rows rewritten.
    """
    written = [*columns, *indexes] if seal else list(columns)
    t = sa.table(table, sa.column(pk), *(sa.column(c, sa.Text()) for c in written))
    update = (
        sa.update(t)
        .where(t.c[pk] == sa.bindparam("b_pk"))
        .values({c: sa.bindparam(f"b_{c}") for c in written})
    )
    bind = op.get_bind()
    keyring: Any = None
    last: Any = None
    done = 0
    while True:
        query = sa.select(t.c[pk], *(t.c[c] for c in columns)).order_by(t.c[pk]).limit(BATCH)
        if last is not None:
            query = query.where(t.c[pk] > last)
        rows = bind.execute(query).all()
        if not rows:
            return done
        keyring = keyring or _keyring()  # only a database with rows needs the key
        params = []
        for row in rows:
            clear = {
                name: value
                if value is None or not value.startswith(SEALED_PREFIX)
                else keyring.decrypt(value)
                for name, value in zip(columns, row[1:], strict=True)
            }
            values: dict[str, Any] = {"b_pk": row[0]}
            for name, value in clear.items():
                values[f"b_{name}"] = keyring.encrypt(value) if seal and value is not None else value
            if seal:
                for index, source in indexes.items():
                    number = clear[source]
                    values[f"b_{index}"] = None if number is None else keyring.index(number)
            params.append(values)
        bind.execute(update, params)
        last = rows[-1][0]
        done += len(rows)


def upgrade() -> None:
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_constraint("uq_people_phone", type_="unique")
        batch_op.alter_column(
            "phone", existing_type=sa.String(length=32), type_=sa.Text(), existing_nullable=False
        )
        batch_op.add_column(sa.Column("phone_index", sa.String(length=64), nullable=True))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_sender")
        batch_op.alter_column(
            "sender", existing_type=sa.String(length=40), type_=sa.Text(), existing_nullable=False
        )
        batch_op.add_column(sa.Column("sender_index", sa.String(length=64), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "sender", existing_type=sa.String(length=40), type_=sa.Text(), existing_nullable=True
        )
        batch_op.alter_column(
            "recipient", existing_type=sa.String(length=40), type_=sa.Text(), existing_nullable=True
        )
    with op.batch_alter_table("ussd_sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "phone", existing_type=sa.String(length=40), type_=sa.Text(), existing_nullable=False
        )

    sealed = [
        table for table, pk, columns, indexes in SEALED if _rewrite(table, pk, columns, indexes, seal=True)
    ]
    if sealed:  # app.db.upgrade then rewrites the tables: the clear values must not linger in free space
        context.config.attributes["sealed"] = sealed

    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.alter_column("phone_index", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_people_phone_index"), ["phone_index"])
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("sender_index", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(batch_op.f("ix_alerts_sender_index"), ["sender_index"], unique=False)


def downgrade() -> None:
    for table, pk, columns, _ in SEALED:
        _rewrite(table, pk, columns, {}, seal=False)
    with op.batch_alter_table("ussd_sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "phone", existing_type=sa.Text(), type_=sa.String(length=40), existing_nullable=False
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "recipient", existing_type=sa.Text(), type_=sa.String(length=40), existing_nullable=True
        )
        batch_op.alter_column(
            "sender", existing_type=sa.Text(), type_=sa.String(length=40), existing_nullable=True
        )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_sender_index"))
        batch_op.drop_column("sender_index")
        batch_op.alter_column(
            "sender", existing_type=sa.Text(), type_=sa.String(length=40), existing_nullable=False
        )
        batch_op.create_index("ix_alerts_sender", ["sender"], unique=False)
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_people_phone_index"), type_="unique")
        batch_op.drop_column("phone_index")
        batch_op.alter_column(
            "phone", existing_type=sa.Text(), type_=sa.String(length=32), existing_nullable=False
        )
        batch_op.create_unique_constraint("uq_people_phone", ["phone"])
