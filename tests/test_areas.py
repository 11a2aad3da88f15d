"""Areas by the names people use: GeoNames codes named, other spellings read, homonyms merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import Incident, Message, Person, Place
from app.services import network
from app.services.areas import AreaBook, AreaFileError, is_admin_file, read_admin_file, shipped
from app.services.geotag import PlaceIndex, PlaceIndexHolder, Spot
from tests.helpers import engine as keyed_engine
from tests.test_cli import run

CORPUS = Path(__file__).parent / "corpus"


def dump_line(geonameid: int, name: str, alt: str, lat: float, lon: float, cc: str, a1: str, a2: str) -> str:
    """One line of a GeoNames dump (19 tab-separated columns) for a populated place."""
    cols = [str(geonameid), name, name, alt, str(lat), str(lon), "P", "PPL", cc, "", a1, a2, "", "", "1000"]
    return "\t".join([*cols, "", "900", "Africa/Lubumbashi", "2024-01-01"]) + "\n"


# -- reading what people type ---------------------------------------------------------------------
BOOK = AreaBook(shipped())


@pytest.mark.parametrize(
    ("given", "country", "name"),
    [
        ("Nord-Kivu", None, "Nord-Kivu"),
        ("Nord Kivu", None, "Nord-Kivu"),
        ("north kivu", None, "Nord-Kivu"),  # the province, not GeoNames' district of that name
        ("NORD-KIVU", None, "Nord-Kivu"),
        ("CD.11", None, "Nord-Kivu"),
        ("cd.11", None, "Nord-Kivu"),
        ("11", "CD", "Nord-Kivu"),
        ("Ituri", None, "Ituri"),  # a province since 2015
        ("CD.17", None, "Ituri"),
        ("Bas-Congo", None, "Kongo-Central"),  # renamed in 2015; GeoNames still has the old name
        ("South Kivu", None, "Sud-Kivu"),
        ("Beni", None, "Beni"),  # a district
        ("CD.11.219056", None, "Beni"),
        ("Equateur", None, "Équateur"),
        ("Timbuktu", None, "Tombouctou"),
        ("Ménaka", None, "Ménaka"),
        ("Nowhere-land", None, None),
        ("CD.99", None, None),
        ("99", "CD", None),
        ("", None, None),
    ],
)
def test_an_area_is_read_by_name_spelling_or_code(given: str, country: str | None, name: str | None) -> None:
    assert BOOK.canonical(given, country=country) == name


def test_codes_are_named() -> None:
    assert BOOK.names_for("CD", "11", "219056") == ("Nord-Kivu", "Beni")
    assert BOOK.names_for("CD", "17", None) == ("Ituri", None)
    assert BOOK.names_for("CD", "17", "424242") == ("Ituri", None)  # no name known: none, not a code
    assert BOOK.names_for("CD", None, None) == (None, None)
    assert BOOK.names_for("CF", "18", None) == ("Bangui", None)
    assert BOOK.names_for("ML", "12070577", None) == ("Ménaka", None)


def test_the_network_gazetteer_adds_its_own_names() -> None:
    book = AreaBook(shipped(), [("Djugu", 2, "CD"), ("Bahema Nord", 2, "CD")])
    assert book.canonical("djugu") == "Djugu" and book.canonical("Bahema-Nord") == "Bahema Nord"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("CD.11\tNord Kivu\n", "row 1, column -: 2 columns, an admin code file has 4"),
        ("CD.11\tNord Kivu\tNord Kivu\t206938\nkivu\tX\tX\t1\n", "row 2, column code: 'kivu' is no GeoNames"),
        ("CD.11\t\t\t206938\n", "row 1, column name: empty"),
        ("CD.11\tNord Kivu\tNord Kivu\tabc\n", "row 1, column geonameid: 'abc' is not a number"),
    ],
)
def test_a_bad_admin_file_names_row_and_column(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "admin1CodesASCII.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AreaFileError, match=error):
        read_admin_file(path)


def test_admin_files_are_recognised_by_their_shape(tmp_path: Path) -> None:
    (tmp_path / "a1.txt").write_text("UG.C\tCentral Region\tCentral Region\t234594\n", encoding="utf-8")
    (tmp_path / "a2.txt").write_text("UG.C.101\tKampala\tKampala\t232422\n", encoding="utf-8")
    (tmp_path / "dump.txt").write_text(
        dump_line(1, "Beni", "", 0.49, 29.47, "CD", "11", ""), encoding="utf-8"
    )
    (tmp_path / "places.csv").write_text("name,lat,lon\nBeni,0.49,29.47\n", encoding="utf-8")
    assert is_admin_file(tmp_path / "a1.txt") and is_admin_file(tmp_path / "a2.txt")
    assert not is_admin_file(tmp_path / "dump.txt") and not is_admin_file(tmp_path / "places.csv")
    assert not is_admin_file(tmp_path / "missing.txt")


# -- GeoNames dumps and admin files, imported -------------------------------------------------------
OFFICERS = (
    "name,phone,role,language,place,lat,lon,level,area,active\n"
    "Lt. Sara Okello,+243990000002,officer,en,,,,1,North Kivu,true\n"
    "Capt. Musa Kato,+243990000005,officer,en,,,,1,Central Region,true\n"
    "Jeanne Mave,+243810000001,focal_point,fr,,0.49,29.47,,,true\n"
    "Amani Kasereka,+243810000003,focal_point,sw,,0.35,32.58,,,true\n"
)


def test_a_geonames_dump_with_admin_files_routes_by_area_names(db_url: str, tmp_path: Path) -> None:
    dump = tmp_path / "CD-UG.txt"
    dump.write_text(
        dump_line(219057, "Mbau", "", 0.62, 29.52, "CD", "11", "219056")  # Beni district, Nord-Kivu
        + dump_line(232423, "Nakawa", "", 0.33, 32.61, "UG", "C", "101"),  # no admin2 shipped for UG
        encoding="utf-8",
    )
    r = run("gazetteer", "import", str(dump), db_url=db_url)
    assert r.returncode == 0 and "2 places read: 2 added" in r.stdout, r.stderr
    admin2 = tmp_path / "admin2Codes.txt"
    admin2.write_text("UG.C.101\tKampala\tKampala\t232422\n", encoding="utf-8")
    r = run("gazetteer", "import", str(admin2), db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1 areas read: 1 added, 0 updated, 0 unchanged; 1 places named again"
    again = run("gazetteer", "import", str(admin2), db_url=db_url)
    assert "0 added, 0 updated, 1 unchanged; 0 places named again" in again.stdout

    engine = create_engine(db_url)
    with engine.connect() as conn:
        named = conn.execute(select(Place.name, Place.admin1, Place.admin2).order_by(Place.name)).all()
    engine.dispose()
    assert [tuple(p) for p in named] == [
        ("Mbau", "Nord-Kivu", "Beni"),
        ("Nakawa", "Central Region", "Kampala"),
    ]

    roster = tmp_path / "roster.csv"
    roster.write_text(OFFICERS, encoding="utf-8")
    r = run("roster", "import", str(roster), db_url=db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        areas = dict(conn.execute(select(Person.name, Person.area)).all())
    assert areas["Lt. Sara Okello"] == "Nord-Kivu"  # stored as the canonical name

    for sender, text, officer in (
        ("+243810000001", "ALERTE ATTAQUE Mbau", "+243990000002"),
        ("+243810000003", "ALERT ATTACK Nakawa", "+243990000005"),
    ):
        r = run("simulate", "--sender", sender, text, db_url=db_url)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        with engine.connect() as conn:
            area = conn.execute(
                select(Incident.area).where(Incident.id == out["incident"]["id"])
            ).scalar_one()
            query = select(Message).where(
                Message.incident_id == out["incident"]["id"], Message.purpose == "alert_forward"
            )
            forwards = [m.recipient for m in Session(conn).scalars(query)]
        assert area in ("Beni", "Kampala")  # a name, never a code
        assert forwards == [officer]
    engine.dispose()


def test_a_roster_area_nobody_knows_is_a_row_error(db_url: str, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "name,phone,role,level,area\n"
        "Lt. Sara Okello,+243990000002,officer,1,CD.17\n"
        "Capt. Dufour,+243990000001,officer,1,Djugu-Centre\n"
        "Maj. Menon,+243990000003,officer,2,Texas\n",  # a province, but of no country the network covers
        encoding="utf-8",
    )
    r = run("roster", "import", str(roster), db_url=db_url)
    assert r.returncode == 2
    assert "row 3, column area: 'Djugu-Centre' is no known area" in r.stdout + r.stderr
    assert "row 4, column area: 'Texas' is no known area" in r.stdout + r.stderr
    run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    roster.write_text(
        "name,phone,role,level,area\nLt. Sara Okello,+243990000002,officer,1,CD.17\n"
        "Capt. Dufour,+243990000001,officer,1,djugu\n",
        encoding="utf-8",
    )
    r = run("roster", "import", str(roster), db_url=db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        areas = dict(conn.execute(select(Person.name, Person.area)).all())
    engine.dispose()
    assert areas == {"Lt. Sara Okello": "Ituri", "Capt. Dufour": "Djugu"}


# -- the README's sequence: built-in places, then the network's own ---------------------------------
def test_the_readme_sequence_imports_on_top_of_the_builtin_places(db_url: str) -> None:
    r = run("gazetteer", "import", "--builtin", "--if-empty", db_url=db_url)
    assert r.returncode == 0, r.stderr
    r = run("gazetteer", "import", str(CORPUS / "gazetteer.csv"), db_url=db_url)
    assert r.returncode == 0, r.stderr
    r = run("roster", "import", str(CORPUS / "roster.csv"), db_url=db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("simulate", "--sender", "+243810000003", "TAHADHARI SHAMBULIO Beni", db_url=db_url)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["alert"]["place_name"] == "Beni"
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        incident = conn.execute(select(Incident.area, Incident.lat, Incident.lon)).one()
        forwards = [
            m.recipient
            for m in Session(conn).scalars(select(Message).where(Message.purpose == "alert_forward"))
        ]
        areas = [a.area for a in network.health(session=Session(conn), full=True).areas]
    engine.dispose()
    assert incident.area == "Beni"
    assert forwards == ["+243990000002"]  # Lt. Sara Okello, Beni's level-1 officer
    # Names, never GeoNames codes; "" is the focal point whose home is coordinates, not a place.
    assert areas == ["", "Beni", "Djugu"]


# -- two place lists living together ----------------------------------------------------------------
def spot(
    i: int, name: str, lat: float, lon: float, *, network: bool, admin: tuple[str | None, str | None]
) -> Spot:
    return Spot(i, name, lat, lon, admin[0], admin[1], "CD", 1000, network)


def test_a_network_place_takes_in_the_geonames_place_near_it() -> None:
    beni = ("Nord-Kivu", "Beni")
    spots = [
        spot(1, "Oicha", 0.70, 29.52, network=True, admin=beni),
        # GeoNames: alternate names Oicha and Mangina, 1.5 km away
        spot(2, "Hyosha", 0.71, 29.53, network=False, admin=("Nord-Kivu", None)),
        spot(3, "Beni", 0.49, 29.47, network=False, admin=beni),
        spot(4, "Beni", 0.50, 29.46, network=True, admin=(None, None)),  # the CSV gave no areas
        spot(5, "Beni", 9.3, 18.4, network=False, admin=("Ouham", None)),  # a homonym far away stays one
        spot(6, "Mangina", 0.75, 29.55, network=False, admin=beni),
    ]
    names = [
        ("oicha", 0),
        ("hyosha", 1),
        ("oicha", 1),
        ("mangina", 1),
        ("beni", 2),
        ("beni", 3),
        ("beni", 4),
        ("mangina", 5),
    ]
    index = PlaceIndex(spots, names)
    assert index.by_name["oicha"] == [0]
    assert index.by_name["hyosha"] == [0]  # the same place under GeoNames' name
    assert index.by_name["mangina"] == [1, 5]  # not made a Mangina: the network's Oicha is not one
    assert index.by_name["beni"] == [3, 4]
    assert index.resolve(["Oicha"]).place == spots[0]
    found = index.resolve(["Beni"], home=(0.6, 29.5)).place
    assert found is not None and found.id == 4
    assert (found.admin1, found.admin2) == beni  # the areas of the GeoNames place it took in


def test_a_running_process_sees_areas_named_again(db_url: str, tmp_path: Path) -> None:
    dump = tmp_path / "UG.txt"
    dump.write_text(dump_line(232423, "Nakawa", "", 0.33, 32.61, "UG", "C", "101"), encoding="utf-8")
    assert run("gazetteer", "import", str(dump), db_url=db_url).returncode == 0
    engine = keyed_engine(db_url)
    holder = PlaceIndexHolder(check_every=0)
    with Session(engine) as session:
        assert holder.get(session).spots[0].admin2 is None
    names = tmp_path / "admin2Codes.txt"
    for name in ("Kampala", "Kampalo"):  # a rename of the same length shows too
        names.write_text(f"UG.C.101\t{name}\t{name}\t232422\n", encoding="utf-8")
        assert run("gazetteer", "import", str(names), db_url=db_url).returncode == 0
        with Session(engine) as session:
            assert holder.get(session).spots[0].admin2 == name
    engine.dispose()


def test_admin_files_import_only_what_is_new(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "admin1CodesASCII.txt"
    path.write_text(
        "CD.17\tIturi\tIturi\t215709\nUG.C\tCentral Region\tCentral Region\t234594\n", encoding="utf-8"
    )
    r = run("gazetteer", "import", str(path), "--country", "CD", db_url=db_url)
    # Ituri as shipped is known already; Uganda is not this import's country.
    assert r.stdout.strip() == "1 areas read: 0 added, 0 updated, 1 unchanged; 0 places named again", r.stderr
    path.write_text("CD.17\tIturi\tIturi\t215709\nCD.17\tIturi\tIturi\t215709\n", encoding="utf-8")
    r = run("gazetteer", "import", str(path), db_url=db_url)
    assert r.returncode == 2 and "row 2, column code: 'CD.17' appears twice (row 1)" in r.stderr


def test_a_district_that_only_repeats_its_province_is_no_district() -> None:
    assert BOOK.names_for("CD", "11", "33") == ("Nord-Kivu", None)  # GeoNames' district "North Kivu"
    assert BOOK.canonical("North Kivu", level=2) == "Nord-Kivu"
    assert BOOK.canonical("Masisi") == BOOK.canonical("Masisi Territory") == "Masisi"
    assert BOOK.canonical("Nyirangongo") == "Nyiragongo"


def test_a_name_is_looked_for_in_the_network_s_countries() -> None:
    assert BOOK.canonical("Texas") == "Texas"
    assert BOOK.canonical("Texas", within={"CD"}) is None
    assert BOOK.canonical("US.TX", within={"CD"}) == "Texas"  # a code says its country
    assert BOOK.canonical("North Kivu", within={"CD"}) == "Nord-Kivu"
