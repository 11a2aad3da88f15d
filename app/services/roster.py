"""The roster: people read from the contract's CSV, checked, saved, and written back out as CSV.

An import checks every row before it changes anything: a file with a bad row changes nothing
unless bad rows are skipped, and the report names each bad row, column and reason. People are
matched by their E.164 number, so importing the same file again changes nothing. The API adds and
changes one person with the same rules as one row of a file (add, change, approve...).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.crypto import Keyring, keyring_of
from app.db import transaction
from app.enums import AuditAction, AuditEntity, PersonStatus, Role
from app.models import AuditLog, Person, Place
from app.phones import normalize
from app.schemas import PersonOut
from app.services.areas import AreaBook, normalize_name
from app.services.geotag import PlaceIndex, PlaceIndexHolder, Spot, distance_km
from app.services.progress import Progress
from app.services.shifts import normalize_shifts

COLUMNS = ("name", "phone", "role", "language", "place", "lat", "lon", "level", "area", "active")
ALL_COLUMNS = (*COLUMNS, "shifts")  # `shifts`: our addition, an officer's weekly on-duty table
REQUIRED = ("name", "phone", "role")
LOCATION = ("place", "lat", "lon")
ROLES = tuple(Role)
FLAGS = {"true": True, "yes": True, "1": True, "": True, "false": False, "no": False, "0": False}
MAX_NAME, MAX_AREA, MAX_LEVEL = 200, 120, 99


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    column: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Sheet:
    """The header and the non-blank rows of a CSV file, or why it cannot be read."""

    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, str]]]
    errors: list[RowError]  # the file cannot be read: nothing is imported
    stray: list[RowError] = field(default_factory=list)  # values under no column: their rows are bad


@dataclass(frozen=True, slots=True)
class Rules:
    """What a row is checked against: the region of numbers without `+`, the languages, the places."""

    region: str
    languages: frozenset[str]
    places: PlaceIndex
    # Stored areas that are no known area, by the person's number: a row that keeps its person's
    # area as it is passes (a roster exported before an area was dropped imports again).
    kept_areas: Mapping[str, str] = field(default_factory=dict)

    @property
    def areas(self) -> AreaBook:
        """The areas a person's `area` may name: the gazetteer's and GeoNames'."""
        return self.places.areas


@dataclass(frozen=True, slots=True)
class Entry:
    """A checked row: the values its person gets."""

    row: int
    name: str
    phone: str
    role: Role
    language: str | None
    place_id: int | None
    home_lat: float | None
    home_lon: float | None
    level: int | None
    area: str | None
    active: bool
    shifts: str | None
    # The file's columns: a column the file does not have leaves that field of a known person as
    # it is (a file of name,phone,role does not wipe officers' levels, areas and languages).
    columns: frozenset[str] = frozenset(ALL_COLUMNS)

    def values(self) -> dict[str, Any]:
        same = ("name", "phone", "role", "language", "level", "area", "active", "shifts")
        fields: dict[str, tuple[str, ...]] = {column: (column,) for column in same}
        fields |= dict.fromkeys(LOCATION, ("place_id", "home_lat", "home_lon"))
        names = {name for column in self.columns & fields.keys() for name in fields[column]}
        return {name: getattr(self, name) for name in sorted(names)}


@dataclass(frozen=True, slots=True)
class RowResult:
    row: int
    outcome: str  # created|updated|unchanged, or valid when nothing was imported
    id: int | None


@dataclass(slots=True)
class Report:
    """What an import did (or would have done) to each row."""

    rows: int
    errors: list[RowError]
    results: list[RowResult] = field(default_factory=list)
    applied: bool = False
    # The file itself cannot be read (header, encoding, quoting): no row is imported, skip_bad or not.
    unreadable: bool = False

    def _count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def created(self) -> int:
        return self._count("created")

    @property
    def updated(self) -> int:
        return self._count("updated")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def invalid(self) -> int:
        return len({e.row for e in self.errors})


# -- reading ---------------------------------------------------------------------------------------
def _header(cells: list[str]) -> tuple[tuple[str, ...], list[RowError]]:
    columns = tuple(c.strip().lower() for c in cells)
    errors = []
    for i, column in enumerate(columns):
        if ";" in column:
            errors.append(RowError(1, column, "columns are separated by commas, not semicolons"))
        elif column in columns[:i] and column:
            errors.append(RowError(1, column, "appears twice"))
        elif column and column not in ALL_COLUMNS:
            errors.append(RowError(1, column, f"unknown column (known: {', '.join(ALL_COLUMNS)})"))
    if not errors:
        errors = [RowError(1, c, "missing from the header") for c in REQUIRED if c not in columns]
    return columns, errors


def read_csv(data: bytes | str) -> Sheet:
    """Read a roster CSV: UTF-8 (BOM or not), comma-separated, values trimmed, blank lines skipped."""
    text = data
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            return Sheet((), [], [RowError(line, "-", "not UTF-8 text (save the file as CSV UTF-8)")])
    reader = csv.reader(io.StringIO(str(text).removeprefix("\ufeff"), newline=""))
    rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    stray: list[RowError] = []
    columns: tuple[str, ...] = ()
    try:
        # A quoted value may span lines; the record count is the row number a spreadsheet shows.
        for number, cells in enumerate(reader, start=1):
            if number == 1:
                columns, errors = _header(cells)
                if errors:
                    return Sheet(columns, [], errors)
                continue
            if not any(c.strip() for c in cells):
                continue
            for i, cell in enumerate(cells):
                if cell.strip() and (i >= len(columns) or not columns[i]):
                    stray.append(RowError(number, f"#{i + 1}", "a value under no column"))
            rows.append((number, {c: cell.strip() for c, cell in zip(columns, cells, strict=False) if c}))
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "-", str(exc)))
    if not columns:
        errors.append(RowError(1, "-", "empty file: a header row is needed (name,phone,role,...)"))
    return Sheet(columns, rows, errors, stray)


# -- checking --------------------------------------------------------------------------------------
def find_place(
    places: PlaceIndex, name: str, *, near: tuple[float, float] | None = None, area: str | None = None
) -> tuple[Spot | None, str]:
    """The gazetteer place a roster names (by name or alternate name), or why there is none."""
    spots: dict[tuple[float, float], Spot] = {}
    for i in places.by_name.get(normalize_name(name), ()):
        spot = places.spots[i]
        # GeoNames lists some places twice: homonyms at one spot are one place.
        spots.setdefault((round(spot.lat, 3), round(spot.lon, 3)), spot)
    hits = list(spots.values())
    if not hits:
        return None, f"{name!r} is not in the gazetteer; give lat/lon"
    if len(hits) == 1:
        return hits[0], ""
    if near is not None:
        return min(hits, key=lambda s: distance_km(near[0], near[1], s.lat, s.lon)), ""
    key = normalize_name(area or "")
    inside = [
        s for s in hits if key and key in (normalize_name(s.admin1 or ""), normalize_name(s.admin2 or ""))
    ]
    if len(inside) == 1:
        return inside[0], ""
    return None, f"ambiguous: {len(hits)} places named {name!r}; give lat/lon or area"


def _coordinate(text: str, limit: float) -> float | str:
    try:
        number = float(text)
    except ValueError:
        return f"{text!r} is not a number"
    return number if -limit <= number <= limit else f"{text} is outside -{limit:g}..{limit:g}"


def check_row(
    values: Mapping[str, str],
    *,
    row: int,
    rules: Rules,
    need_home: bool = True,
    kept_area: str | None = None,
) -> Entry | list[RowError]:
    """Check one row (column -> text); every error of the row, or the entry it makes.

    `need_home=False` lets a focal point without a home through (an edit that does not touch it).
    `kept_area`: the person's stored area, which passes unchanged even where it is no known area
    (as do `rules.kept_areas`); an unknown area newly given is an error.
    """
    errors: list[RowError] = []

    def get(column: str) -> str:
        return (values.get(column) or "").strip()

    def bad(column: str, reason: str) -> None:
        errors.append(RowError(row, column, reason))

    name = get("name")
    if not name or len(name) > MAX_NAME:
        bad("name", "empty" if not name else f"longer than {MAX_NAME} characters")
    phone = normalize(get("phone"), rules.region)
    if not get("phone"):
        bad("phone", "empty")
    elif not phone.valid:  # never echo the number: reports end up in logs and tickets
        bad("phone", f"not a valid phone number (numbers without + are read as {rules.region})")
    role = get("role").lower()
    if role not in ROLES:
        bad("role", f"{get('role')!r} is not one of {', '.join(ROLES)}")
    language = get("language").lower() or None
    if language is not None and language not in rules.languages:
        bad("language", f"{language!r} is not one of {', '.join(sorted(rules.languages))}")
    coords: dict[str, float] = {}
    for column, limit in (("lat", 90.0), ("lon", 180.0)):
        if get(column):
            value = _coordinate(get(column), limit)
            if isinstance(value, str):
                bad(column, value)
            else:
                coords[column] = value
    if len(coords) == 1:
        bad("lon" if "lat" in coords else "lat", "give both lat and lon, or neither")
    level = int(get("level")) if get("level").isdecimal() else None
    if get("level") and not (level and level <= MAX_LEVEL):
        bad("level", f"{get('level')!r} is not a whole number from 1 to {MAX_LEVEL}")
    area = get("area") or None
    if area is not None and len(area) > MAX_AREA:
        bad("area", f"longer than {MAX_AREA} characters")
    elif area is not None:
        known = rules.places.area(area, region=rules.region)
        if known is None and area != (kept_area or rules.kept_areas.get(phone.value)):
            bad("area", f"{area!r} is no known area (a province or district: name or GeoNames code)")
        area = known or area
    active = FLAGS.get(get("active").lower())
    if active is None:
        bad("active", f"{get('active')!r} is not true or false")
    shifts = None
    try:
        shifts = normalize_shifts(get("shifts"))
    except ValueError as exc:
        bad("shifts", str(exc).removeprefix("shifts: "))

    given = (coords["lat"], coords["lon"]) if len(coords) == 2 else None
    place_id, home = None, given
    if get("place"):
        spot, reason = find_place(rules.places, get("place"), near=given, area=area)
        if spot is not None:
            place_id, home = spot.id, given or (spot.lat, spot.lon)
        elif given is None:
            bad("place", reason)
    elif role == Role.FOCAL_POINT and need_home and not (get("lat") or get("lon")):
        bad("place", "a focal point needs a place of the gazetteer, or lat/lon")
    if errors:
        return errors
    return Entry(
        row=row,
        name=name,
        phone=phone.value,
        role=Role(role),
        language=language,
        place_id=place_id,
        home_lat=home[0] if home else None,
        home_lon=home[1] if home else None,
        level=level,
        area=area,
        active=bool(active),
        shifts=shifts,
    )


def check(
    sheet: Sheet, rules: Rules, *, progress: Progress | None = None
) -> tuple[list[Entry], list[RowError]]:
    """Check every row of a sheet; a number given twice is an error on the later row."""
    entries: list[Entry] = []
    errors = list(sheet.errors)
    first_row: dict[str, int] = {}
    columns = frozenset(sheet.columns)
    stray: dict[int, list[RowError]] = {}
    for error in sheet.stray:
        stray.setdefault(error.row, []).append(error)
    for done, (number, values) in enumerate(sheet.rows):
        if progress:
            progress("checking", done, len(sheet.rows))
        entry = check_row(values, row=number, rules=rules)
        if isinstance(entry, list) or number in stray:
            errors += stray.get(number, []) + (entry if isinstance(entry, list) else [])
        elif entry.phone in first_row:
            errors.append(RowError(number, "phone", f"the same number as row {first_row[entry.phone]}"))
        else:
            first_row[entry.phone] = number
            entries.append(replace(entry, columns=columns))
    if progress:
        progress("checking", len(sheet.rows), len(sheet.rows))
    return entries, errors


# -- saving ----------------------------------------------------------------------------------------
def audit(
    session: Session, person: Person, *, action: AuditAction, fields: Iterable[str], actor: str, source: str
) -> None:
    """Record who changed which fields of a person (names of fields, never their values)."""
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=AuditEntity.PERSON,
            entity_id=str(person.id),
            details={"fields": sorted(fields), "source": source},
        )
    )


def save(
    session: Session,
    person: Person | None,
    values: Mapping[str, Any],
    *,
    actor: str,
    source: str,
    action: AuditAction | None = None,
) -> tuple[Person, str]:
    """Create a person or change the fields that differ; `created`, `updated` or `unchanged`.

    Nothing is written, and nothing audited, when every value is the one already stored.
    """
    if person is None:
        person = Person(**{"status": PersonStatus.APPROVED, "active": True, **values}, phone_valid=True)
        session.add(person)
        session.flush()
        given = [k for k, v in values.items() if v is not None]
        audit(
            session,
            person,
            action=action or AuditAction.PERSON_CREATE,
            fields=given,
            actor=actor,
            source=source,
        )
        return person, "created"
    changed = [k for k, v in values.items() if getattr(person, k) != v]
    if not changed:
        return person, "unchanged"
    if action is None:
        approving = (
            "status" in changed
            and person.status == PersonStatus.PENDING
            and values["status"] == PersonStatus.APPROVED
        )
        action = AuditAction.PERSON_APPROVE if approving else AuditAction.PERSON_UPDATE
    for name in changed:
        setattr(person, name, values[name])
    session.flush()
    audit(session, person, action=action, fields=changed, actor=actor, source=source)
    return person, "updated"


def plan(
    data: bytes | str, rules: Rules, *, skip_bad: bool = False, progress: Progress | None = None
) -> tuple[Report, list[Entry]]:
    """Read and check a roster file, touching no database: the report so far and the rows to save.

    Nothing is to be saved when the header cannot be read, or a row is bad and `skip_bad` is off.
    """
    sheet = read_csv(data)
    entries, errors = check(sheet, rules, progress=progress)
    report = Report(rows=len(sheet.rows), errors=errors, unreadable=bool(sheet.errors))
    if sheet.errors or (errors and not skip_bad):
        report.results = [RowResult(e.row, "valid", None) for e in entries]
        return report, []
    return report, entries


def apply(
    session: Session,
    report: Report,
    entries: list[Entry],
    *,
    actor: str,
    progress: Progress | None = None,
    demo: bool = False,
) -> Report:
    """Upsert checked rows by phone in the caller's transaction (short: the rows were checked before).

    An imported person is approved: an admin's list approves pending self-registrations too.
    `demo` marks the people as the demo's; another import leaves the mark as it is, so a roster
    exported with the demo in it and imported again does not make its invented numbers real.
    """
    phones = [e.phone for e in entries]
    keyring = keyring_of(session)
    known: dict[str, Person] = {}
    step = 500 // len(keyring.keys) or 1  # parameters per query, whatever the number of keys
    for i in range(0, len(phones), step):
        chunk = select(Person).where(Person.phone_index.in_(keyring.indexes_of(phones[i : i + step])))
        known |= {p.phone: p for p in session.scalars(chunk)}
    for done, entry in enumerate(entries):
        if progress:
            progress("saving", done, len(entries))
        person = known.get(entry.phone)
        if person is not None and person.status == PersonStatus.PENDING:  # what a JOIN gave was provisional
            entry = replace(entry, columns=frozenset(ALL_COLUMNS))
        values = entry.values() | {"status": PersonStatus.APPROVED} | ({"demo": True} if demo else {})
        person, outcome = save(session, person, values, actor=actor, source="import")
        report.results.append(RowResult(entry.row, outcome, person.id))
    if progress:
        progress("saving", len(entries), len(entries))
    report.applied = True
    return report


def unknown_areas(session: Session, rules: Rules) -> dict[str, str]:
    """The stored areas that are no known area (before areas were checked, or since dropped), by phone."""
    areas = session.scalars(select(Person.area).where(Person.area.is_not(None)).distinct())
    unknown = [a for a in areas if a and rules.places.area(a, region=rules.region) is None]
    if not unknown:
        return {}
    people = session.scalars(select(Person).where(Person.area.in_(unknown)))
    return {p.phone: p.area for p in people if p.area}


def import_csv(
    factory: sessionmaker[Session],
    data: bytes | str,
    *,
    rules: Callable[[Session], Rules],
    actor: str,
    skip_bad: bool = False,
    progress: Progress | None = None,
    demo: bool = False,
) -> Report:
    """Check a roster file and, when every row is good (or bad rows are skipped), upsert it by phone.

    Rows are checked outside the write transaction, so SQLite's one writer (which the webhooks
    need) is held only while the checked rows are saved. A file with an unreadable header imports
    nothing, whatever `skip_bad` says.
    """
    with factory() as session:
        known_rules = rules(session)
        known_rules = replace(known_rules, kept_areas=unknown_areas(session, known_rules))
    report, entries = plan(data, known_rules, skip_bad=skip_bad, progress=progress)
    if not entries and (report.errors or not report.rows):
        return report
    with transaction(factory) as session:
        return apply(session, report, entries, actor=actor, progress=progress, demo=demo)


# -- writing ---------------------------------------------------------------------------------------
def person_row(person: Person, place: Place | None, places: PlaceIndex) -> dict[str, str]:
    """A person as a roster row. lat/lon are written only where the place alone would not give back
    the same home (no place, a home of its own, a homonym), so an edited place is not overridden."""
    home = (person.home_lat, person.home_lon)
    lat = lon = ""
    if home[0] is not None and home[1] is not None:
        spot = find_place(places, place.name, area=person.area)[0] if place is not None else None
        if spot is None or spot.id != person.place_id or (spot.lat, spot.lon) != home:
            lat, lon = str(home[0]), str(home[1])
    return {
        "name": person.name,
        "phone": person.phone,
        "role": person.role,
        "language": person.language or "",
        "place": place.name if place is not None else "",
        "lat": lat,
        "lon": lon,
        "level": str(person.level) if person.level is not None else "",
        "area": person.area or "",
        "active": "true" if person.active else "false",
        "shifts": person.shifts or "",
    }


def export_csv(session: Session, places: PlaceIndex) -> str:
    """The approved roster as CSV, in the contract's columns and then `shifts`, ordered by id.

    Pending and rejected self-registrations are requests, not the roster: they are left out.
    """
    people = session.scalars(
        select(Person).where(Person.status == PersonStatus.APPROVED).order_by(Person.id)
    ).all()
    ids = {p.place_id for p in people if p.place_id is not None}
    named = {p.id: p for p in session.scalars(select(Place).where(Place.id.in_(ids)))} if ids else {}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ALL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for person in people:
        writer.writerow(person_row(person, named.get(person.place_id or 0), places))
    return out.getvalue()


# -- one person at a time (the API) ----------------------------------------------------------------
class Refused(ValueError):
    """A change the roster's rules refuse; the message names the column at fault."""


class Invalid(Refused):
    """A person who does not pass the rules of a roster row; `errors`: each column at fault and why."""

    def __init__(self, message: str, errors: Iterable[RowError] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


class Conflict(Refused):
    """A change that clashes with the roster as it is: a number taken, a person no longer pending."""


def rules_for(*, session: Session, region: str, languages: Iterable[str], places: PlaceIndexHolder) -> Rules:
    """Gather what a person is checked against: the region of bare numbers, the languages, the places."""
    return Rules(region=region, languages=frozenset(languages), places=places.get(session))


def in_area(*, text: str, rules: Rules) -> ColumnElement[bool]:
    """Who a filter by area finds: people whose area is the canonical name of the area `text` names
    (as roster areas are stored), or is `text` itself, case ignored (an area no book knows)."""
    given = text.strip()
    known = rules.places.area(given, region=rules.region)
    as_given = func.lower(Person.area) == given.lower()
    return or_(Person.area == known, as_given) if known else as_given


def matching(*, text: str, rules: Rules, keyring: Keyring) -> ColumnElement[bool]:
    """Who a search finds: names containing `text`, case ignored, and the person whose number it is
    (a full number in any notation, found by its blind index: numbers are sealed at rest)."""
    given = text.strip()
    by_name = func.lower(Person.name).contains(given.lower(), autoescape=True)
    phone = normalize(given, rules.region)
    if not phone.valid:
        return by_name
    return or_(Person.phone_index.in_(keyring.indexes(phone.value)), by_name)


def listing(
    *,
    rules: Rules,
    keyring: Keyring,
    search: str | None = None,
    role: Role | None = None,
    area: str | None = None,
    active: bool | None = None,
    status: PersonStatus | None = None,
) -> Select[Any]:
    """The people a roster list shows (unordered): every filter given must hold."""
    query = select(Person)
    if search and search.strip():
        query = query.where(matching(text=search, rules=rules, keyring=keyring))
    if role:
        query = query.where(Person.role == role)
    if area and area.strip():
        query = query.where(in_area(text=area, rules=rules))
    if active is not None:
        query = query.where(Person.active.is_(active))
    if status:
        query = query.where(Person.status == status)
    return query


def add(*, session: Session, values: Mapping[str, Any], rules: Rules, actor: str) -> Person:
    """Add one person, checked as one row of a roster file."""
    entry = _checked(_as_row(values), rules)
    _phone_free(session, entry.phone)
    person, _ = save(session, None, entry.values(), actor=actor, source="api")
    return person


def change(
    *, session: Session, person: Person, values: Mapping[str, Any], rules: Rules, actor: str
) -> Person:
    """Change the fields given; the person is checked again as a whole row (their stored area
    passes as it is, known or not: only an area given anew must be a known one)."""
    given = _as_row(values)
    place = session.get(Place, person.place_id) if person.place_id is not None else None
    row = person_row(person, place, rules.places)
    if given.keys() & set(LOCATION):  # a new place must not keep the old coordinates
        row |= dict.fromkeys(LOCATION, "")
    # A pending self-registration has no home yet: an edit of its name does not need one.
    need_home = bool(given.keys() & {"role", *LOCATION})
    entry = _checked(row | given, rules, need_home=need_home, kept_area=person.area)
    _phone_free(session, entry.phone, but=person.id)
    save(session, person, entry.values(), actor=actor, source="api")
    return person


def deactivate(*, session: Session, person: Person, actor: str) -> Person:
    """Deactivate: no more check-ins or forwards; the person stays, so their reports keep their history."""
    return _set(session, person, actor, AuditAction.PERSON_DEACTIVATE, pending=False, active=False)


def approve(*, session: Session, person: Person, actor: str) -> Person:
    """Approve a pending self-registration (JOIN): the person becomes an active focal point."""
    return _set(
        session,
        person,
        actor,
        AuditAction.PERSON_APPROVE,
        pending=True,
        status=PersonStatus.APPROVED,
        active=True,
    )


def reject(*, session: Session, person: Person, actor: str) -> Person:
    """Reject a pending self-registration: they stay known (a new JOIN does not re-open it), inactive."""
    return _set(
        session,
        person,
        actor,
        AuditAction.PERSON_REJECT,
        pending=True,
        status=PersonStatus.REJECTED,
        active=False,
    )


def _set(
    session: Session, person: Person, actor: str, action: AuditAction, *, pending: bool, **values: Any
) -> Person:
    """Set a few fields under one audit action; `pending`: only a pending self-registration."""
    if pending and person.status != PersonStatus.PENDING:
        raise Conflict(f"status: person {person.id} is {person.status}, not pending")
    save(session, person, values, actor=actor, source="api", action=action)
    return person


def _as_row(values: Mapping[str, Any]) -> dict[str, str]:
    """JSON values as the text of a CSV row, so that one set of rules checks both."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return {k: text(v) for k, v in values.items()}


def _checked(
    row: dict[str, str], rules: Rules, *, need_home: bool = True, kept_area: str | None = None
) -> Entry:
    entry = check_row(row, row=1, rules=rules, need_home=need_home, kept_area=kept_area)
    if isinstance(entry, list):
        raise Invalid("; ".join(f"{e.column}: {e.reason}" for e in entry), entry)
    return entry


def _phone_free(session: Session, phone: str, but: int | None = None) -> None:
    taken = Person.phone_index.in_(keyring_of(session).indexes(phone))
    other = session.scalar(select(Person.id).where(taken, Person.id != (but or 0)))
    if other is not None:
        raise Conflict(f"phone: already on the roster (person {other})")


def views(*, session: Session, people: list[Person]) -> list[PersonOut]:
    """Show people as the API does, with the name of each one's home place (one query)."""
    ids = {p.place_id for p in people if p.place_id is not None}
    query = select(Place.id, Place.name).where(Place.id.in_(ids))
    names = {place_id: name for place_id, name in session.execute(query)} if ids else {}
    return [
        PersonOut(
            id=p.id,
            name=p.name,
            phone=p.phone,
            role=Role(p.role),
            status=PersonStatus(p.status),
            language=p.language,
            place=names.get(p.place_id) if p.place_id is not None else None,
            lat=p.home_lat,
            lon=p.home_lon,
            level=p.level,
            area=p.area,
            active=p.active,
            opted_out=p.opted_out,
            demo=p.demo,
            shifts=p.shifts,
            last_seen_at=p.last_seen_at,
            silent_since=p.silent_since,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )
        for p in people
    ]
