"""Loading places: the contract's CSV, GeoNames dumps, the built-in GeoNames data; resolving names."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.exc import IntegrityError

from app.db import make_engine
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


def test_csv_import_and_reimport(db_url: str, tmp_path: Path) -> None:
    r = run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "45 places read: 45 added, 0 updated, 0 unchanged\n"
    again = run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    assert again.stdout == "45 places read: 0 added, 0 updated, 45 unchanged\n" and places(db_url) == 45
    # A new release of the file: Bunia moved a little, one village more.
    release = tmp_path / "gazetteer.csv"
    text = (CORPUS / "gazetteer.csv").read_text(encoding="utf-8")
    assert "ITU-001,Bunia,,1.5594," in text
    text = (
        text.replace("ITU-001,Bunia,,1.5594,", "ITU-001,Bunia,,1.5601,")
        + "NEW-1,Mongbwalu,,1.95,30.03,Ituri,Djugu,CD,town\n"
    )
    release.write_text(text, encoding="utf-8")
    changed = run("gazetteer", "import", str(release), db_url=db_url)
    assert changed.stdout == "46 places read: 1 added, 1 updated, 44 unchanged\n", changed.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(Place.lat).where(Place.ext_id == "ITU-001")).scalar_one() == 1.5601
    engine.dispose()
    assert places(db_url) == 46


def place(ext_id: str, name: str, lat: float = 1.9, population: int | None = None) -> gazetteer.PlaceRow:
    return gazetteer.PlaceRow(ext_id, name, (), lat, 30.5, "17", None, "CD", "PPL", population, "geonames")


def test_a_reimport_writes_only_the_changed_places_in_one_batch(db_url: str) -> None:
    engine = make_engine(db_url)
    first = [place(f"geonames:{i}", f"Village {i}") for i in range(6)]
    assert gazetteer.store(engine, first) == gazetteer.Stored(added=6, updated=0, unchanged=0)
    updates: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE PLACES"):
            updates.append(len(parameters) if executemany else 1)

    again = [*first, place("geonames:99", "Mongbwalu")]
    again[1] = place("geonames:1", "Village 1", population=900)
    again[4] = place("geonames:4", "Village Quatre")
    calls: list[tuple[str, int, int]] = []
    stored = gazetteer.store(engine, again, progress=lambda *call: calls.append(call))
    assert stored == gazetteer.Stored(added=1, updated=2, unchanged=4)
    assert updates == [2]  # the unchanged places are not written; the changed ones in one statement
    assert calls == [("places", 0, 7), ("places", 7, 7)]
    with engine.connect() as conn:
        rows = dict(conn.execute(select(Place.ext_id, Place.name_norm)).all())
        population = conn.execute(select(Place.population).where(Place.ext_id == "geonames:1")).scalar()
    engine.dispose()
    assert rows["geonames:4"] == "village quatre" and rows["geonames:99"] == "mongbwalu"
    assert population == 900 and len(rows) == 7


def test_a_store_that_fails_half_way_changes_nothing(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(db_url)
    gazetteer.store(engine, [place(f"geonames:{i}", f"Village {i}") for i in range(4)])
    monkeypatch.setattr(gazetteer, "BATCH", 2)
    calls: list[tuple[str, int, int]] = []
    broken = [
        place("geonames:0", "Village Zero"),  # changed, in the first batch
        place("geonames:7", "Mongbwalu"),  # new, in the first batch
        place("geonames:2", "Village 2"),
        place("geonames:8", "Nowhere", lat=None),  # the database refuses it
    ]
    with pytest.raises(IntegrityError):
        gazetteer.store(engine, broken, progress=lambda *call: calls.append(call))
    assert calls == [("places", 0, 4), ("places", 2, 4)]  # the first batch was written, then undone
    with engine.connect() as conn:
        names = sorted(conn.execute(select(Place.name)).scalars())
    engine.dispose()
    assert names == ["Village 0", "Village 1", "Village 2", "Village 3"]


def test_a_repeated_id_keeps_its_last_row(db_url: str) -> None:
    engine = make_engine(db_url)
    stored = gazetteer.store(engine, [place("geonames:1", "Djugu"), place("geonames:1", "Djugu Centre")])
    with engine.connect() as conn:
        names = conn.execute(select(Place.name)).scalars().all()
    engine.dispose()
    assert stored == gazetteer.Stored(added=1, updated=0, unchanged=0, repeated=1) and names == [
        "Djugu Centre"
    ]


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


def test_names_spelt_as_they_sound() -> None:
    idx = index(
        ("Djugu", 1.922, 30.501, "Djugu"),
        ("Tchomia", 1.45, 30.5, "Irumu"),
        ("Mongbwalu", 1.95, 30.033, "Djugu"),
        ("Bule", 1.833, 30.567, "Djugu"),
        ("Kpandroma", 2.035, 30.87, "Djugu"),
    )
    for written, name in [
        ("Djougou", "Djugu"),  # ou for u
        ("Tshomia", "Tchomia"),  # tsh for tch
        ("Mongbwallou", "Mongbwalu"),  # a doubled letter and ou
        ("Kpandrooma", "Kpandroma"),
        ("Mongbualu", "Mongbwalu"),  # a typing error still reads (one letter)
        ("Mongbouallu", "Mongbwalu"),  # two errors in a long name
    ]:
        found = idx.resolve([written])
        assert (found.matched, found.fuzzy) == (name, True), written
    assert idx.resolve(["Djougou"], home=(-4.3, 15.3)).precision == "home"  # far from home: no guess
    assert idx.resolve(["bulle"]).precision == "unknown"  # a short name is matched as written
    country = idx.resolve(["nowhere"], country="CD")
    assert country.precision == "country" and country.lat is not None
    assert idx.resolve(["nowhere"]).precision == "unknown"
    assert idx.resolve([]).precision == "unknown"
