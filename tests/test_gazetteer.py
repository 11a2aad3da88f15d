"""Loading places: the contract's CSV, GeoNames dumps, the built-in GeoNames data; resolving names."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from app.models import Place
from app.services import gazetteer
from app.services.geotag import PlaceIndex, Spot, distance_km
from tests.test_cli import run

CORPUS = Path(__file__).parent / "corpus"
GEONAMES_LINE = (
    "217100\tDjugu\tDjugu\tDjougou,Dzhugu\t1.91932\t30.50257\tP\tPPL\tCD\t\t17\t1734\t\t\t41409\t\t1275"
    "\tAfrica/Lubumbashi\t2016-11-23\n"
)


def places(db_url: str) -> int:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        n = int(conn.execute(select(func.count(Place.id))).scalar_one())
    engine.dispose()
    return n


def test_csv_import_and_reimport(db_url: str) -> None:
    r = run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert "45 added" in r.stdout
    again = run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    assert "0 added, 45 updated" in again.stdout and places(db_url) == 45


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("name,lat\nDjugu,1.9\n", "row 1, column lon: missing from the header"),
        ("name,lat,lon\nDjugu,1.9,30.5\n,1.0,30.0\n", "row 3, column name: empty"),
        ("name,lat,lon\nDjugu,north,30.5\n", "row 2, column lat: 'north' is not a number"),
        ("name,lat,lon\nDjugu,1.9,300\n", "row 2, column lon: 300.0 is outside"),
        ("name,lat,lon,country\nDjugu,1.9,30.5,Congo\n", "row 2, column country"),
        ("id,name,lat,lon\nA,Djugu,1.9,30.5\nA,Fataki,1.9,30.6\n", "row 3, column id"),
    ],
)
def test_a_bad_row_changes_nothing(db_url: str, tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "places.csv"
    path.write_text(content, encoding="utf-8")
    r = run("gazetteer", "import", str(path), db_url=db_url)
    assert r.returncode == 2
    assert "places.csv" in r.stderr and where in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert places(db_url) == 0


def test_geonames_dump(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "CD.txt"
    road = GEONAMES_LINE.replace("\tP\tPPL\t", "\tR\tRD\t").replace("217100", "1")
    path.write_text(GEONAMES_LINE + road, encoding="utf-8")
    assert run("gazetteer", "import", str(path), "--country", "CD", db_url=db_url).returncode == 0
    engine = create_engine(db_url)
    with engine.connect() as conn:
        (row,) = conn.execute(
            select(
                Place.ext_id, Place.name, Place.alt_names, Place.admin1, Place.admin1_code, Place.population
            )
        ).all()
    engine.dispose()
    # The admin code is kept apart; the area is its name.
    assert tuple(row) == ("geonames:217100", "Djugu", "Djougou;Dzhugu", "Ituri", "17", 41409)
    path.write_text("217100\tDjugu\n", encoding="utf-8")
    bad = run("gazetteer", "import", str(path), db_url=db_url)
    assert bad.returncode == 2 and "row 1" in bad.stderr and "19" in bad.stderr


def test_builtin_gazetteer(db_url: str) -> None:
    r = run("gazetteer", "import", "--builtin", "--country", "CD", db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert places(db_url) > 100
    engine = create_engine(db_url)
    with engine.connect() as conn:
        bunia = conn.execute(select(Place.lat, Place.lon).where(Place.name == "Bunia")).one()
    engine.dispose()
    assert distance_km(bunia.lat, bunia.lon, 1.5594, 30.2522) < 2


def index(
    *spots: tuple[str, float, float, str | None], alts: dict[str, list[str]] | None = None
) -> PlaceIndex:
    built = [
        Spot(i, name, lat, lon, None, admin2, "CD", 0) for i, (name, lat, lon, admin2) in enumerate(spots)
    ]
    names = [(gazetteer.normalize_name(s.name), i) for i, s in enumerate(built)]
    for i, s in enumerate(built):
        names += [(gazetteer.normalize_name(a), i) for a in (alts or {}).get(s.name, [])]
    return PlaceIndex(built, names)


def test_resolution_rules() -> None:
    idx = index(
        ("Largu", 1.98, 30.62, "Djugu"),
        ("Iga Barrière", 1.6, 30.2, "Irumu"),
        ("Bule", 1.833, 30.567, "Djugu"),
        ("Bule", 1.31, 28.98, "Mambasa"),
        ("Kpandroma", 2.035, 30.87, "Djugu"),
        ("Iga", 2.5, 29.0, None),
        alts={"Kpandroma": ["Kpandruma"]},
    )
    assert idx.resolve(["largo"]).matched == "Largu" and idx.resolve(["largo"]).fuzzy
    assert idx.resolve(["largo"], home=(-4.3, 15.3)).precision == "home"  # a guess 700 km away: no
    assert idx.resolve(["bulle"]).precision == "unknown"  # names of four letters match exactly only
    assert idx.resolve(["iga", "barriere"]).matched == "Iga Barrière"  # the longer name wins
    assert idx.resolve(["Kpandruma"]).matched == "Kpandroma"
    near_djugu = idx.resolve(["bule"], home=(1.98, 30.62))
    near_mambasa = idx.resolve(["bule"], home=(1.36, 29.0))
    assert (near_djugu.lat, near_mambasa.lat) == (1.833, 1.31)
    assert idx.resolve(["bule"], area="Mambasa").lat == 1.31
    assert idx.resolve(["nowhere"], home=(1.0, 30.0)).precision == "home"
    country = idx.resolve(["nowhere"], country="CD")
    assert country.precision == "country" and country.lat is not None
    assert idx.resolve(["nowhere"]).precision == "unknown"
    assert idx.resolve([]).precision == "unknown"
