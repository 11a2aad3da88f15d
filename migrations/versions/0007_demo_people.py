"""people.demo: the people `kengele demo load` loaded, whose numbers no texting gateway is given

The demo's numbers are invented but lie in a real operator's range (+243 81: Vodacom DRC), so its
people are marked, and the dispatcher fails their SMS rather than hand them to a gateway that
texts phones. A database that had the demo loaded before this mark existed gets it here: a person
whose number and name are those of a demo row as shipped until now (the numbers are matched by
their blind index, under the keyring `kengele db upgrade` hands over; without one, nobody is
marked).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app/demo/roster.csv as shipped before this migration: (number, name). Written out here, so that
# the migration means the same whatever the demo files become.
DEMO_PEOPLE = (
    ("+243810009001", "Capt. Alain Dufour"),
    ("+243810009002", "Lt. Sara Okello"),
    ("+243810009003", "Maj. Ravi Menon"),
    ("+243810009004", "Col. Fatou Diallo"),
    ("+243810001001", "Jeanne Mave"),
    ("+243810001002", "Dieudonné Lonu"),
    ("+243810001003", "Grace Ndjadi"),
    ("+243810001004", "Pierre Ukelo"),
    ("+243810001005", "Amani Kasereka"),
    ("+243810001006", "Rehema Kavira"),
    ("+243810001007", "Esther Ngabu"),
)


def upgrade() -> None:
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.add_column(sa.Column("demo", sa.Boolean(), server_default=sa.false(), nullable=False))
    keyring = context.config.attributes.get("keyring")
    if keyring is None:
        return
    people = sa.table(
        "people",
        sa.column("name", sa.String),
        sa.column("phone_index", sa.String),
        sa.column("demo", sa.Boolean),
    )
    for number, name in DEMO_PEOPLE:
        op.get_bind().execute(
            sa.update(people)
            .where(people.c.phone_index.in_(keyring.indexes(number)), people.c.name == name)
            .values(demo=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_column("demo")
