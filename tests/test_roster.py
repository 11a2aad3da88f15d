"""The roster: CSV import (all or nothing, per-row report), export round trip, people API, JOIN approval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, delete, func, select

from app.models import AuditLog, Person, Place
from app.services import gazetteer, roster
from app.services.runtime import Runtime
from keywords.grammar import load_all
from tests.helpers import engine as keyed_engine
from tests.test_api import add_token
from tests.test_cli import run
from tests.test_corpus import CORPUS
from tests.test_escalation import sms

# Row numbers as a spreadsheet shows them: header = 1; the blank line (row 12) counts but is skipped.
MIXED = (
    "\ufeffname,phone,role,language,place,lat,lon,level,area,active,shifts\n"
    "Jeanne Mave,+243810000001,focal_point,fr,Djugu,,,,,true,\n"  # 2 good
    "Bad Phone,12345,focal_point,fr,Djugu,,,,,,\n"  # 3
    "Chief,+243810000021,chief,fr,Djugu,,,,,,\n"  # 4
    "Bambara,+243810000022,focal_point,bm,Djugu,,,,,,\n"  # 5: a language with no grammar here
    "Nowhere,+243810000023,focal_point,fr,Atlantis,,,,,,\n"  # 6
    "Twice,0810000001,officer,fr,,,,1,,,\n"  # 7: the number of row 2
    "Far North,+243810000024,focal_point,fr,,95,30.1,,,,\n"  # 8
    "Level Zero,+243990000031,officer,en,,,,0,,,\n"  # 9
    "Maybe,+243810000025,focal_point,fr,Fataki,,,,,maybe,\n"  # 10
    "Homonym,+243810000026,focal_point,fr,Bule,,,,,,\n"  # 11
    "\n"  # 12
    "Bule Mambasa,+243810000027,FOCAL_POINT,FR,  bule ,,,,Mambasa,yes,\n"  # 13 good
    "Night Shift,+243990000032,officer,en,,,,2,Djugu,TRUE,Mon-Fri  20:00-08:00\n"  # 14 good
    "Bad Shift,+243990000033,officer,en,,,,1,,,someday 08:00-18:00\n"  # 15
    "Several,abc,boss,xx,,,,,,,\n"  # 16: three errors
    "Own Home,+243 81 000 0028,focal_point,sw,Lopa,1.7601,30.4502,,,0,\n"  # 17 good
)
BAD = {
    (3, "phone"),
    (4, "role"),
    (5, "language"),
    (6, "place"),
    (7, "phone"),
    (8, "lat"),
    (9, "level"),
    (10, "active"),
    (11, "place"),
    (15, "shifts"),
    (16, "phone"),
    (16, "role"),
    (16, "language"),
}
GOOD = {"Jeanne Mave", "Bule Mambasa", "Night Shift", "Own Home"}
FIELDS = (
    "phone",
    "role",
    "status",
    "language",
    "place_id",
    "home_lat",
    "home_lon",
    "level",
    "area",
    "active",
    "shifts",
)


def load_places(engine: Engine) -> None:
    gazetteer.store(engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))


def people(db_url: str) -> dict[str, dict[str, Any]]:
    """Every person by name, with their stored values."""
    engine = keyed_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Person).order_by(Person.id)).all()
    engine.dispose()
    return {r.name: {f: getattr(r, f) for f in FIELDS} for r in rows}


def pick(person: dict[str, Any], *fields: str) -> tuple[Any, ...]:
    return tuple(person[f] for f in fields)


HOME = ("place_id", "home_lat", "home_lon")


def audit(db_url: str) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.entity_id, AuditLog.details)
            .where(AuditLog.entity == "person")
            .order_by(AuditLog.id)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def place_id(db_url: str, name: str, **where: Any) -> int:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        query = select(Place.id).where(
            Place.name == name, *(getattr(Place, k) == v for k, v in where.items())
        )
        (found,) = conn.execute(query).scalars().all()
    engine.dispose()
    return found


def test_a_bad_row_changes_nothing_and_skip_bad_imports_the_good(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    load_places(engine)
    engine.dispose()
    path = tmp_path / "roster.csv"
    path.write_text(MIXED, encoding="utf-8")

    r = run("roster", "import", str(path), db_url=db_url)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"kengele: {path}: row 3, column phone: not a valid phone number")
    assert "nothing imported" in r.stderr and "12345" not in r.stderr
    reported = {
        (int(line.split(",")[0].split()[1]), line.split("column ")[1].split(":")[0])
        for line in r.stdout.splitlines()
        if ", column " in line
    }
    assert reported == BAD
    assert "row 7, column phone: the same number as row 2" in r.stdout
    assert "row 11, column place: ambiguous: 2 places named 'Bule'; give lat/lon or area" in r.stdout
    assert "row 6, column place: 'Atlantis' is not in the gazetteer" in r.stdout
    assert "row 2: valid" in r.stdout and "row 12" not in r.stdout
    assert (
        r.stdout.splitlines()[-1]
        == "15 rows: 0 created, 0 updated, 0 unchanged, 11 invalid; nothing imported"
    )
    assert people(db_url) == {} and audit(db_url) == []

    r = run("roster", "import", str(path), "--skip-bad", db_url=db_url)
    assert r.returncode == 1, r.stderr  # the good rows imported, the bad ones skipped: not a success
    assert r.stdout.splitlines()[-1] == "15 rows: 4 created, 0 updated, 0 unchanged, 11 invalid"
    assert r.stderr == (
        f"kengele: {path}: 11 of 15 rows skipped (row 3, column phone: not a valid phone number"
        " (numbers without + are read as CD), and 10 more rows); the other 4 imported\n"
    )
    stored = people(db_url)
    assert set(stored) == GOOD
    assert stored["Bule Mambasa"] == {  # a homonym chosen by area; values trimmed, case folded
        "phone": "+243810000027", "role": "focal_point", "status": "approved", "language": "fr",
        "place_id": place_id(db_url, "Bule", admin2="Mambasa"), "home_lat": 1.1, "home_lon": 28.9,
        "level": None, "area": "Mambasa", "active": True, "shifts": None,
    }  # fmt: skip
    assert pick(stored["Night Shift"], "level", "area", "shifts") == (2, "Djugu", "mon-fri 20:00-08:00")
    # A place and coordinates of its own: the coordinates are the home, the place is kept.
    own = stored["Own Home"]
    assert pick(own, "phone", *HOME, "active") == (
        "+243810000028",
        place_id(db_url, "Lopa"),
        1.7601,
        30.4502,
        False,
    )
    log = audit(db_url)
    assert [a[1] for a in log] == ["person_create"] * 4
    assert all(a[0].startswith("cli:") and a[3]["source"] == "import" for a in log)
    assert not any("+243" in json.dumps(a[3]) for a in log)

    again = run("roster", "import", str(path), "--skip-bad", db_url=db_url)
    assert again.returncode == 1 and "11 of 15 rows skipped" in again.stderr
    assert again.stdout.splitlines()[-1] == "15 rows: 0 created, 0 updated, 4 unchanged, 11 invalid"
    assert people(db_url) == stored and audit(db_url) == log


def test_the_readme_gives_each_exit_status_of_a_roster_import() -> None:
    """0 all imported, 1 rows skipped with --skip-bad, 2 nothing imported: a script tells them apart."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The roster") : readme.index("### Self-registration")]
    rows = " ".join(section[section.index("**All or nothing.**") :].split("\n\n")[0].split())
    assert "exits with status 2" in rows
    assert "`--skip-bad` imports the good rows" in rows and "exits with status 1" in rows
    commands = readme[readme.index("| `kengele roster import FILE [--skip-bad]`") :].splitlines()[0]
    assert "exits 1" in commands


def test_file_level_errors(db_url: str, tmp_path: Path) -> None:
    cases = {
        "name,phone,role,langauge\nA,+243810000001,admin,fr\n": "row 1, column langauge: unknown column",
        "name;phone;role\nA;+243810000001;admin\n": "row 1, column name;phone;role: columns are",
        "name,role\nA,admin\n": "row 1, column phone: missing from the header",
        "": "row 1, column -: empty file",
        "name,phone,role\nA,+243810000001,admin\nB,+243810000002,admin,x\n": "row 3, column #4: a value",
    }
    for i, (content, where) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_text(content, encoding="utf-8")
        r = run("roster", "import", str(path), "--skip-bad", db_url=db_url)
        if where.startswith("row 1"):  # a bad header imports nothing, even with --skip-bad
            assert r.returncode == 2 and r.stderr.startswith(f"kengele: {path}: {where}"), (content, r.stderr)
            assert "--skip-bad" not in r.stderr  # it would not help
        else:
            assert r.returncode == 1 and where in r.stdout, (content, r.stdout)
            assert r.stderr.startswith(f"kengele: {path}: 1 of 2 rows skipped ({where}")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(
        "name,phone,role\nA,+243810000001,admin\nJos\xe9,+243810000002,admin\n".encode("latin-1")
    )
    r = run("roster", "import", str(latin), db_url=db_url)
    assert r.returncode == 2 and f"{latin}: row 3, column -: not UTF-8 text" in r.stderr
    header = tmp_path / "header.csv"
    header.write_text("name,phone,role\n\n", encoding="utf-8")
    r = run("roster", "import", str(header), db_url=db_url)  # nothing to import is no error
    assert (r.returncode, r.stderr) == (0, "") and r.stdout.startswith("0 rows: 0 created"), r.stderr
    none_good = tmp_path / "none-good.csv"
    none_good.write_text("name,phone,role\nA,12345,admin\nB,+243810000002,chief\n", encoding="utf-8")
    r = run("roster", "import", str(none_good), "--skip-bad", db_url=db_url)
    assert r.returncode == 2 and r.stderr.startswith(f"kengele: {none_good}: row 2, column phone")
    assert r.stderr.rstrip().endswith("nothing imported: no good row"), r.stderr
    missing = run("roster", "import", str(tmp_path / "nope.csv"), db_url=db_url)
    assert missing.returncode == 2 and missing.stderr == f"kengele: {tmp_path / 'nope.csv'}: no such file\n"
    assert set(people(db_url)) == {"A"}  # only the --skip-bad file with one good row


def test_corpus_roster_export_import_round_trip(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    load_places(engine)
    r = run("roster", "import", str(CORPUS / "roster.csv"), db_url=db_url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "15 rows: 15 created, 0 updated, 0 unchanged, 0 invalid"
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "name,phone,role,place,lat,lon,area,shifts\n"
        "Bule Djugu,+243810000030,focal_point,Bule,,,Djugu,\n"
        "Bule Mambasa,+243810000031,focal_point,Bule,1.2,28.95,,\n"
        "Own Home,+243810000032,focal_point,Lopa,1.76,30.45,,\n"
        "Unknown Village,+243810000033,focal_point,Kakwa,1.9,30.4,,\n"
        "Day Officer,+243990000040,officer,,,,Irumu,mon-fri 08:00-18:00; sat 08:00-12:00\n",
        encoding="utf-8",
    )
    assert run("roster", "import", str(extra), db_url=db_url).returncode == 0
    before = people(db_url)
    assert pick(before["Jeanne Mave"], *HOME) == (place_id(db_url, "Djugu"), 1.922, 30.501)
    assert pick(before["Joseph Unen"], *HOME) == (None, 1.78, 30.533)
    assert before["Marie Tsongo"]["active"] is False
    assert before["Dieudonné Lonu"]["phone"] == "+243810000002"
    assert before["Amani Kasereka"]["phone"] == "+243810000003"
    assert pick(before["Capt. Alain Dufour"], "role", "level", "area") == ("officer", 1, "Djugu")
    assert before["Bule Djugu"]["place_id"] == place_id(db_url, "Bule", admin2="Djugu")
    assert pick(before["Bule Mambasa"], *HOME) == (place_id(db_url, "Bule", admin2="Mambasa"), 1.2, 28.95)
    assert pick(before["Unknown Village"], *HOME) == (None, 1.9, 30.4)  # not in the gazetteer: lat/lon

    out = tmp_path / "export.csv"
    r = run("roster", "export", str(out), db_url=db_url)
    assert r.returncode == 0, r.stderr
    stdout = run("roster", "export", db_url=db_url)
    assert stdout.returncode == 0 and stdout.stdout == out.read_text(encoding="utf-8")
    lines = stdout.stdout.splitlines()
    assert lines[0] == "name,phone,role,language,place,lat,lon,level,area,active,shifts"
    # lat/lon only where the place alone would not give back the home
    assert "Jeanne Mave,+243810000001,focal_point,fr,Djugu,,,,,true," in lines
    assert "Bule Djugu,+243810000030,focal_point,,Bule,,,,Djugu,true," in lines
    assert "Bule Mambasa,+243810000031,focal_point,,Bule,1.2,28.95,,,true," in lines
    assert "Day Officer,+243990000040,officer,,,,,,Irumu,true,mon-fri 08:00-18:00; sat 08:00-12:00" in lines
    assert len(lines) == 21

    again = run("roster", "import", str(out), db_url=db_url)
    assert again.stdout.splitlines()[-1] == "20 rows: 0 created, 0 updated, 20 unchanged, 0 invalid"
    with engine.begin() as conn:
        conn.execute(delete(AuditLog))
        conn.execute(delete(Person))
    engine.dispose()
    fresh = run("roster", "import", str(out), db_url=db_url)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines()[-1] == "20 rows: 20 created, 0 updated, 0 unchanged, 0 invalid"
    assert people(db_url) == before


def test_a_file_without_shifts_leaves_them_and_an_edit_is_one_update(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "name,phone,role,level,shifts\nOfficer,+243990000041,officer,1,daily 06:00-18:00\n", encoding="utf-8"
    )
    assert run("roster", "import", str(path), db_url=db_url).returncode == 0
    path.write_text("name,phone,role,level\nOfficer Two,+243990000041,officer,1\n", encoding="utf-8")
    r = run("roster", "import", str(path), db_url=db_url)
    assert r.stdout.splitlines()[0] == "row 2: updated"
    assert people(db_url)["Officer Two"]["shifts"] == "daily 06:00-18:00"
    log = audit(db_url)
    assert [a[1] for a in log] == ["person_create", "person_update"]
    assert log[1][3] == {"fields": ["name"], "source": "import"}


def test_a_file_with_fewer_columns_leaves_the_other_fields_as_they_are(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "name,phone,role,language,level,area,active\nCapt. Dufour,+243990000001,officer,fr,2,Ituri,false\n",
        encoding="utf-8",
    )
    assert run("roster", "import", str(path), db_url=db_url).returncode == 0
    path.write_text("name,phone,role\nCapt. Alain Dufour,+243990000001,officer\n", encoding="utf-8")
    assert run("roster", "import", str(path), db_url=db_url).stdout.splitlines()[0] == "row 2: updated"
    officer = people(db_url)["Capt. Alain Dufour"]
    # not wiped: an officer with no area and no level would get every area's forwards at level 1
    assert pick(officer, "language", "level", "area", "active") == ("fr", 2, "Ituri", False)


# -- the API ----------------------------------------------------------------------------------------
def test_api_import_report_and_upload_forms(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    load_places(client.app.state.runtime.engine)  # type: ignore[attr-defined]
    url = "/api/v1/people/import"
    raw = {**auth, "Content-Type": "text/csv"}
    r = client.post(url, content=MIXED.encode(), headers=raw)
    assert r.status_code == 422
    report = r.json()
    assert {(e["row"], e["column"]) for e in report["errors"]} == BAD
    assert (report["applied"], report["rows"], report["invalid"], report["created"]) == (False, 15, 11, 0)
    assert {x["row"] for x in report["results"]} == {2, 13, 14, 17}
    assert "12345" not in r.text
    assert people(db_url) == {}

    r = client.post(
        url,
        params={"skip_bad": "true"},
        files={"file": ("roster.csv", MIXED.encode(), "text/csv")},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["applied"], r.json()["created"], r.json()["invalid"]) == (True, 4, 11)
    assert set(people(db_url)) == GOOD
    ids = {x["row"]: x["id"] for x in r.json()["results"]}

    corpus = (CORPUS / "roster.csv").read_bytes()
    r = client.post(url, content=corpus, headers=raw)
    assert r.status_code == 200
    assert r.json()["results"][0] == {"row": 2, "outcome": "unchanged", "id": ids[2]}  # Jeanne Mave, known
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (14, 0, 1)
    r = client.post(url, content=corpus, headers=raw)
    assert r.json()["unchanged"] == 15
    log = audit(db_url)
    assert len(log) == 4 + 14 and all(a[0] == "api:bootstrap-admin" for a in log)

    assert (
        client.post(url, files={"other": ("x.csv", b"name\n")}, headers=auth)
        .json()["detail"]
        .startswith("file:")
    )


def test_people_crud_filters_and_errors(client: TestClient, auth: dict[str, str], db_url: str) -> None:
    load_places(client.app.state.runtime.engine)  # type: ignore[attr-defined]
    url = "/api/v1/people"
    r = client.post(
        url,
        json={
            "name": "Jeanne",
            "phone": "0810000001",
            "role": "focal_point",
            "place": "fataki",
            "language": "fr",
        },
        headers=auth,
    )
    assert r.status_code == 201, r.text
    jeanne = r.json()
    assert (jeanne["phone"], jeanne["place"], jeanne["lat"], jeanne["lon"]) == (
        "+243810000001",
        "Fataki",
        1.979,
        30.618,
    )
    assert (jeanne["status"], jeanne["active"], jeanne["opted_out"], jeanne["shifts"]) == (
        "approved",
        True,
        False,
        None,
    )

    def error(body: dict[str, Any], status: int = 422) -> str:
        r = client.post(url, json=body, headers=auth)
        assert r.status_code == status, r.text
        return str(r.json()["detail"])

    base = {"name": "X", "phone": "+243810000002", "role": "officer"}
    assert error({**base, "phone": "+243 81 000 0001"}, 409).startswith("phone: already on the roster")
    detail = error({**base, "phone": "0810"})
    assert detail.startswith("phone: not a valid phone number") and "0810" not in detail
    assert error({**base, "role": "focal_point"}).startswith("place: a focal point needs a place")
    assert error({**base, "lat": 1.5}) == "lon: give both lat and lon, or neither"
    assert error({**base, "lat": 91, "lon": 30}).startswith("lat: 91")
    shipped = ", ".join(sorted(load_all()[0]))
    assert error({**base, "level": 0, "language": "de"}).startswith(
        f"language: 'de' is not one of {shipped}; level:"
    )
    assert error({**base, "langauge": "fr"}).startswith("langauge:")
    assert error({"name": "X", "role": "admin"}).startswith("phone:")

    r = client.post(
        url, json={**base, "level": 1, "area": "Djugu", "shifts": "Daily 06:00-18:00"}, headers=auth
    )
    officer = r.json()
    assert r.status_code == 201 and officer["shifts"] == "daily 06:00-18:00" and officer["place"] is None
    client.post(url, json={**base, "phone": "+243810000003", "area": "Beni", "active": False}, headers=auth)

    def listed(**params: Any) -> list[str]:
        r = client.get(url, params=params, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == len(r.json()["items"]) or "limit" in params
        return [p["phone"] for p in r.json()["items"]]

    assert listed() == ["+243810000001", "+243810000002", "+243810000003"]
    assert listed(role="officer", area="djugu") == ["+243810000002"]
    assert listed(active="false") == ["+243810000003"]
    assert listed(status="pending") == [] and listed(limit=1, offset=1) == ["+243810000002"]
    assert client.get(url, params={"limit": 1}, headers=auth).json()["total"] == 3
    assert client.get(url, params={"role": "boss"}, headers=auth).status_code == 422

    path = f"{url}/{jeanne['id']}"
    r = client.patch(path, json={"place": "Bule", "area": "Mambasa"}, headers=auth)
    assert r.status_code == 200 and (r.json()["place"], r.json()["lat"], r.json()["area"]) == (
        "Bule",
        1.1,
        "Mambasa",
    )
    r = client.patch(path, json={"lat": 1.11, "lon": 28.91}, headers=auth)  # coordinates alone: no place
    assert (r.json()["place"], r.json()["lat"], r.json()["lon"]) == (None, 1.11, 28.91)
    assert (
        client.patch(path, json={"shifts": "sometimes"}, headers=auth).json()["detail"].startswith("shifts:")
    )
    assert client.patch(path, json={"phone": "+243810000002"}, headers=auth).status_code == 409
    assert client.patch(path, json={"place": None, "lat": None, "lon": None}, headers=auth).status_code == 422
    assert client.patch(f"{url}/999", json={"name": "Y"}, headers=auth).status_code == 404
    assert client.get(path, headers=auth).json()["updated_at"] >= jeanne["updated_at"]

    r = client.delete(path, headers=auth)
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["name"] == "Jeanne"
    client.delete(path, headers=auth)  # already inactive: nothing to record
    assert client.get(path, headers=auth).json()["active"] is False
    log = audit(db_url)
    assert [a[1] for a in log] == ["person_create"] * 3 + ["person_update"] * 2 + ["person_deactivate"]
    assert log[3][3] == {"fields": ["area", "home_lat", "home_lon", "place_id"], "source": "api"}
    assert log[-1][3] == {"fields": ["active"], "source": "api"}
    assert not any("+243" in json.dumps(a[3]) for a in log)


def test_the_area_filter_finds_people_by_any_name_of_their_area(
    client: TestClient, auth: dict[str, str]
) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    url = "/api/v1/people"
    base = {"role": "officer", "level": 1}
    r = client.post(
        url, json={**base, "name": "A", "phone": "+243990000061", "area": "North Kivu"}, headers=auth
    )
    assert r.status_code == 201 and r.json()["area"] == "Nord-Kivu"  # stored canonical
    with runtime.factory() as session:  # an area the book does not know, stored before it was checked
        session.add(Person(name="B", phone="+243990000062", role="officer", level=1, area="Irumu"))
        session.commit()

    def listed(area: str) -> list[str]:
        r = client.get(url, params={"area": area}, headers=auth)
        assert r.status_code == 200, r.text
        return [p["name"] for p in r.json()["items"]]

    assert listed("North Kivu") == listed("nord-kivu") == listed("CD.11") == listed(" Nord Kivu ") == ["A"]
    assert listed("IRUMU") == ["B"]  # unknown: the text as given, case ignored
    assert listed("Ituri") == []


def test_a_stored_area_nobody_knows_is_kept_as_it_is(
    client: TestClient, auth: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.factory() as session:  # stored before areas were checked, or its area since dropped
        session.add(Person(name="Lt. Irumu", phone="+243990000050", role="officer", level=1, area="Irumu"))
        session.commit()
    (officer,) = client.get("/api/v1/people", headers=auth).json()["items"]
    path = f"/api/v1/people/{officer['id']}"
    r = client.patch(path, json={"language": "en"}, headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["language"], r.json()["area"]) == ("en", "Irumu")
    assert client.patch(path, json={"area": "Irumu", "level": 2}, headers=auth).status_code == 200
    r = client.patch(path, json={"area": "Atlantis"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"].startswith("area: 'Atlantis' is no known area")

    out = tmp_path / "export.csv"
    assert run("roster", "export", str(out), db_url=db_url).returncode == 0
    again = run("roster", "import", str(out), db_url=db_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == "1 rows: 0 created, 0 updated, 1 unchanged, 0 invalid"
    # Only the person's own stored area passes: another number, or a new unknown area, does not.
    out.write_text(
        "name,phone,role,level,area\nLt. Irumu,+243990000050,officer,1,Atlantis\n"
        "New Officer,+243990000051,officer,1,Irumu\n",
        encoding="utf-8",
    )
    r = run("roster", "import", str(out), db_url=db_url)
    assert r.returncode == 2
    assert "row 2, column area: 'Atlantis' is no known area" in r.stdout + r.stderr
    assert "row 3, column area: 'Irumu' is no known area" in r.stdout + r.stderr
    assert pick(people(db_url)["Lt. Irumu"], "language", "level", "area") == ("en", 2, "Irumu")


def test_join_is_approved_or_rejected_by_an_admin(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    load_places(runtime.engine)
    sms(runtime, "+243820000055", "JOIN Djugu", "j1")
    sms(runtime, "+243820000056", "JOIN", "j2")
    pending = client.get("/api/v1/people", params={"status": "pending"}, headers=auth).json()["items"]
    assert [(p["phone"], p["role"], p["active"], p["area"]) for p in pending] == [
        ("+243820000055", "focal_point", False, "Djugu"),
        ("+243820000056", "focal_point", False, None),
    ]
    first, second = (p["id"] for p in pending)
    with runtime.factory() as session:  # requests are not the roster
        assert "+243820000055" not in roster.export_csv(session, runtime.pipeline.places.get(session))

    r = client.post(f"/api/v1/people/{first}/approve", headers=auth)
    assert r.status_code == 200 and (r.json()["status"], r.json()["active"]) == ("approved", True)
    assert client.post(f"/api/v1/people/{first}/approve", headers=auth).status_code == 409
    assert client.post(f"/api/v1/people/{first}/reject", headers=auth).status_code == 409
    r = client.patch(
        f"/api/v1/people/{first}", json={"name": "Alphonse Dz'ba", "place": "Djugu"}, headers=auth
    )
    assert r.status_code == 200 and r.json()["place"] == "Djugu"

    r = client.patch(f"/api/v1/people/{second}", json={"name": "Unknown 56"}, headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "pending"  # no home needed to rename a request
    r = client.post(f"/api/v1/people/{second}/reject", headers=auth)
    assert r.status_code == 200 and (r.json()["status"], r.json()["active"]) == ("rejected", False)
    sms(runtime, "+243820000056", "JOIN Fataki", "j3")  # a rejected number does not re-open its request
    assert client.get(f"/api/v1/people/{second}", headers=auth).json()["status"] == "rejected"

    log = [a for a in audit(db_url) if a[0].startswith("api:")]
    assert [(a[1], a[2]) for a in log] == [
        ("person_approve", str(first)),
        ("person_update", str(first)),
        ("person_update", str(second)),
        ("person_reject", str(second)),
    ]
    assert log[0] == (
        "api:bootstrap-admin",
        "person_approve",
        str(first),
        {"fields": ["active", "status"], "source": "api"},
    )

    # An admin's roster file approves a pending request too.
    sms(runtime, "+243820000057", "JOIN Nizi", "j4")
    csv = "name,phone,role,place\nMama Nizi,+243820000057,focal_point,Nizi\n"
    r = client.post("/api/v1/people/import", content=csv, headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json()["updated"] == 1
    person = people(db_url)["Mama Nizi"]
    assert pick(person, "status", "active", "area") == ("approved", True, None)
    actor, action, _, details = audit(db_url)[-1]
    assert (actor, action, details["source"]) == ("api:bootstrap-admin", "person_approve", "import")


def test_only_admins_manage_people(client: TestClient, db_url: str) -> None:
    add_token(db_url, "officer", "officer-token")
    officer = {"Authorization": "Bearer officer-token"}
    assert client.get("/api/v1/people").status_code == 401
    for method, path in [
        ("GET", "/api/v1/people"),
        ("POST", "/api/v1/people"),
        ("GET", "/api/v1/people/1"),
        ("PATCH", "/api/v1/people/1"),
        ("DELETE", "/api/v1/people/1"),
        ("POST", "/api/v1/people/1/approve"),
        ("POST", "/api/v1/people/1/reject"),
        ("POST", "/api/v1/people/import"),
    ]:
        r = client.request(method, path, headers=officer, json={} if method in ("POST", "PATCH") else None)
        assert r.status_code == 403, (method, path, r.text)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count(Person.id))).scalar_one() == 0
    engine.dispose()
