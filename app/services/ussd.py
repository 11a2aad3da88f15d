"""The USSD menu (Africa's Talking): report an alert, check in, or change language, in the caller's language.

Where a caller is in the menu is replayed from Africa's Talking's cumulative `text` ("1*3*Lopa*20")
every time, so an answer depends on nothing but that text and the session row: a retry gets the
same screen and a restarted server continues where it was. The row keeps what must not change
during a session (the caller's language, home and nearby villages as they were when it began),
the screen reached, and the outcome. A confirmed report or check-in becomes the SMS the card
teaches ("A1 Djugu 20", "RAS") and is stored through the intake like any SMS, so the same
pipeline makes the alert and the incident; the intake's idempotency on the message id
(`ussd-<sessionId>`) means a retried last step never stores a second report.
"""

from __future__ import annotations

import asyncio
import math
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import transaction, utcnow
from app.models import Alert, AuditLog, Incident, Message, Person, Place, UssdSession
from app.phones import country, normalize
from gateways.base import InboundSms, UssdRequest
from keywords.parser import Lexicon
from keywords.sms import gsm7_septets

if TYPE_CHECKING:
    from app.services.runtime import Runtime

MAX_SCREEN = 182  # characters a USSD screen may hold, "CON "/"END " included
PROCESSING_WAIT = 5.0  # seconds a confirmed report waits for its incident code (AT waits about 10)
POLL = 0.05
NEARBY = 5  # villages offered near the caller's home
NEARBY_KM = 50.0  # half the side of the box they are looked for in
MAX_PLACE = 60  # characters of a typed place name
MAX_COUNT = 100_000


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller as they were when the session began; kept in the session row so replay never drifts."""

    person_id: int | None = None
    language: str | None = None  # None: the first screen asks
    home: tuple[float, float] | None = None
    home_name: str | None = None
    area: str | None = None
    nearby: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Caller:
        home = data.get("home")
        return cls(
            person_id=data.get("person_id"),
            language=data.get("language"),
            home=(float(home[0]), float(home[1])) if home else None,
            home_name=data.get("home_name"),
            area=data.get("area"),
            nearby=tuple(data.get("nearby") or ()),
        )


@dataclass(slots=True)
class State:
    """Where replaying the inputs got to: the screens behind the caller, and what they chose."""

    language: str
    stack: list[str]
    category: str | None = None
    place: str | None = None  # the place name to send; None with `at_home`
    at_home: bool = False
    typed: str | None = None
    count: int | None = None
    invalid: bool = False
    changed_language: str | None = None  # set by the last input only
    done: str | None = None  # report|checkin: the session ends


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a session ended with: the SMS stored for the caller, and the language of its END screen."""

    kind: str  # report|checkin
    text: str
    language: str


# -- the menu, replayed ----------------------------------------------------------------------------
def languages(lex: Lexicon) -> list[str]:
    """The languages offered, in menu order: the default language first, then the others by code."""
    return [lex.default_language, *sorted(lang for lang in lex.grammars if lang != lex.default_language)]


def _number(value: str) -> int | None:
    """A number typed on the keypad ("05" is 5); None for anything else."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def _choice(value: str, n: int) -> int | None:
    """The 0-based option a caller typed among n, or None."""
    number = _number(value)
    return number - 1 if number is not None and 1 <= number <= n else None


def replay(inputs: list[str], *, caller: Caller, lex: Lexicon, resolve: Callable[[str], str | None]) -> State:
    """Walk the menu from the first screen through every input; `resolve` names a typed place or None."""
    first = "menu" if caller.language else "language"
    state = State(language=caller.language or lex.default_language, stack=[first])
    for value in inputs:
        if state.done:
            break
        _step(state, value.strip(), caller, lex, resolve)
    return state


def _step(
    state: State, value: str, caller: Caller, lex: Lexicon, resolve: Callable[[str], str | None]
) -> None:
    state.invalid, state.changed_language = False, None
    current = state.stack[-1]
    if value == "0":  # back, on every screen but the first
        if len(state.stack) > 1:
            state.stack.pop()
        else:
            state.invalid = True
        return
    langs = languages(lex)
    nxt: str | None = None
    if current in ("language", "change_language"):
        if (i := _choice(value, len(langs))) is not None:
            state.language = langs[i]
            if current == "language":
                nxt = "menu"
            else:  # back to the menu, now in the new language
                state.stack.pop()
                state.changed_language = langs[i]
                return
    elif current == "menu":
        if value == "1":
            nxt = "category"
        elif value == "2":
            state.done = "checkin"
            return
        elif value == "3":
            nxt = "change_language"
    elif current == "category":
        if (number := _number(value)) is not None and str(number) in lex.codes:
            state.category = lex.codes[str(number)]
            nxt = "place" if caller.home else "typed"
    elif current == "place":
        if value == "1":
            state.place, state.at_home, nxt = None, True, "count"
        elif value == "2" and caller.nearby:
            nxt = "nearby"
        elif value == "3":
            nxt = "typed"
    elif current == "nearby":
        if (i := _choice(value, len(caller.nearby))) is not None:
            state.place, state.at_home, nxt = caller.nearby[i], False, "count"
    elif current == "typed":
        if any(c.isalpha() for c in value) and len(value) <= MAX_PLACE:
            found = resolve(value)
            state.typed = value
            state.place, state.at_home = found, False
            nxt = "count" if found else "not_found"
    elif current == "not_found":
        if value == "1":
            state.place, nxt = state.typed, "count"
    elif current == "count":
        if value == "00":
            state.count, nxt = None, "confirm"
        elif (number := _number(value)) is not None and 1 <= number <= MAX_COUNT:
            state.count, nxt = number, "confirm"
    elif current == "confirm" and value == "1":
        state.done = "report"
        return
    if nxt is None:
        state.invalid = True
    else:
        state.stack.append(nxt)


# -- screens ----------------------------------------------------------------------------------------
def gsm7(text: str) -> str:
    """The text in the GSM-7 alphabet USSD phones display: accents it lacks are dropped ("ç" -> "c")."""
    if gsm7_septets(text) is not None:
        return text
    out = []
    for ch in text:
        if gsm7_septets(ch) is None:
            ch = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            ch = ch if ch and gsm7_septets(ch) is not None else "?"
        out.append(ch)
    return "".join(out)


def screen(kind: str, lines: Sequence[str], listed: Sequence[str] = (), fixed: Sequence[str] = ()) -> str:
    """A `CON`/`END` screen; list options are cut from the end rather than exceed MAX_SCREEN."""
    options = list(listed)
    while True:
        text = gsm7(f"{kind} " + "\n".join([*lines, *options, *fixed]))
        if len(text) <= MAX_SCREEN or not options:
            break
        options.pop()
    assert len(text) <= MAX_SCREEN, f"USSD screen of {len(text)} characters"
    return text


def render(state: State, *, caller: Caller, lex: Lexicon) -> str:
    """The CON screen the caller is on."""
    t = lex.grammars[state.language].ussd
    current = state.stack[-1]
    head = [t["invalid"]] if state.invalid else []
    back = [f"0 {t['back']}"] if len(state.stack) > 1 else []
    langs = languages(lex)
    names = lex.grammars[state.language].category_names
    if current == "language":
        title = " / ".join(lex.grammars[lang].ussd["language"] for lang in langs)
        return screen("CON", [*head, title], [f"{i} {lex.grammars[g].name}" for i, g in enumerate(langs, 1)])
    if current == "change_language":
        listed = [f"{i} {lex.grammars[g].name}" for i, g in enumerate(langs, 1)]
        return screen("CON", [*head, t["change_language"]], listed, back)
    if current == "menu":
        title = t["language_set"].format(language=lex.grammars[state.language].name)
        options = [f"1 {t['report']}", f"2 {t['all_well']}", f"3 {t['change_language']}"]
        return screen("CON", [*head, title if state.changed_language else t["menu"]], [], options + back)
    if current == "category":
        cards = sorted(lex.codes.items(), key=lambda item: int(item[0]))
        listed = [f"{code} {names[category]}" for code, category in cards]
        return screen("CON", [*head, t["category"]], listed, back)
    if current == "place":
        home = t["home"].format(place=f" ({_short(caller.home_name)})" if caller.home_name else "")
        options = [f"1 {home}", *([f"2 {t['nearby']}"] if caller.nearby else []), f"3 {t['type_place']}"]
        return screen("CON", [*head, t["place"]], [], options + back)
    if current == "nearby":
        listed = [f"{i} {_short(name)}" for i, name in enumerate(caller.nearby, 1)]
        return screen("CON", [*head, t["nearby_title"]], listed, back)
    if current == "typed":
        return screen("CON", [*head, t["typed"]], [], back)
    if current == "not_found":
        return screen("CON", [*head, t["not_found"].format(place=state.typed)], [], [f"1 {t['keep']}", *back])
    if current == "count":
        return screen("CON", [*head, t["count"]], [], back)
    assert current == "confirm", current
    people = t["people"].format(count=state.count) if state.count else t["people_unknown"]
    place = state.place or caller.home_name or t["home"].format(place="")
    summary = f"{names[state.category or 'other']} - {_short(place)} - {people}"
    return screen("CON", [*head, t["confirm"], summary], [], [f"1 {t['send']}", *back])


def _short(name: str | None) -> str:
    """A place name as a screen shows it: gazetteer names can be long, screens cannot."""
    return (name or "")[:MAX_PLACE]


def end(key: str, *, language: str, lex: Lexicon, **values: str) -> str:
    """An END screen: the session is over."""
    return screen("END", [lex.grammars[language].ussd[key].format(**values)])


# -- what a confirmed session sends -------------------------------------------------------------
def report_sms(state: State, lex: Lexicon) -> str:
    """The SMS the card teaches: trigger and card number, place (none: at home), count ("A1 Djugu 20")."""
    grammar = lex.grammars[state.language]
    trigger = min(grammar.triggers, key=lambda w: (len(w), w)).upper()  # "A", or "T" in Swahili
    code = next(code for code, category in lex.codes.items() if category == state.category)
    parts = [f"{trigger}{code}", *([] if state.at_home or not state.place else [state.place])]
    return " ".join(parts + ([str(state.count)] if state.count else []))


def checkin_sms(language: str, lex: Lexicon) -> str:
    """The grammar's first check-in word: RAS, OK, SALAMA."""
    return " ".join(lex.grammars[language].commands["checkin"][0]).upper()


# -- the session row ------------------------------------------------------------------------------
def _caller(session: Session, phone: str, lex: Lexicon) -> Caller:
    person = session.scalar(select(Person).where(Person.phone == phone))
    if person is None:
        return Caller()
    home: tuple[float, float] | None = None
    if person.home_lat is not None and person.home_lon is not None:
        home = (person.home_lat, person.home_lon)
    place = session.get(Place, person.place_id) if person.place_id is not None else None
    return Caller(
        person_id=person.id,
        language=person.language if person.language in lex.grammars else None,
        home=home,
        home_name=place.name if place else None,
        area=person.area,
        nearby=nearby(session, home, exclude=place) if home else (),
    )


def nearby(session: Session, home: tuple[float, float], *, exclude: Place | None) -> tuple[str, ...]:
    """Up to NEARBY gazetteer places nearest the home (a bounding box, ordered by flat distance)."""
    lat, lon = home
    shrink = max(math.cos(math.radians(lat)), 0.01)
    dlat = NEARBY_KM / 111.2
    dlon = dlat / shrink
    distance = (Place.lat - lat) * (Place.lat - lat) + (Place.lon - lon) * (Place.lon - lon) * (
        shrink * shrink
    )
    query = (
        select(Place.name)
        .where(Place.lat.between(lat - dlat, lat + dlat), Place.lon.between(lon - dlon, lon + dlon))
        .order_by(distance, Place.id)
        .limit(NEARBY * 3)
    )
    if exclude is not None:
        query = query.where(Place.id != exclude.id)
    names: list[str] = []
    for name in session.scalars(query):
        if name not in names and (exclude is None or name != exclude.name):
            names.append(name)
    return tuple(names[:NEARBY])


def _advance(runtime: Runtime, request: UssdRequest) -> str | Outcome:
    """Replay the session to this step in one transaction: the screen, or the outcome to store."""
    lex = runtime.pipeline.lexicon
    now = utcnow()
    with transaction(runtime.factory) as session:
        row = session.get(UssdSession, request.session_id)
        if row is None:
            caller = _caller(session, request.phone, lex)
            row = UssdSession(
                session_id=request.session_id,
                phone=request.phone,
                service_code=request.service_code,
                language=caller.language or lex.default_language,
                text="",
                screen="start",
                data={"caller": {**asdict(caller), "nearby": list(caller.nearby)}},
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()  # a concurrent first request for this session fails here, and is redone
        elif row.phone != request.phone:  # a session id is one caller's: never show another's home
            return end("expired", language=lex.default_language, lex=lex)
        elif row.ended_at is not None:
            outcome = row.data.get("outcome")
            row.updated_at = now
            if outcome is None:  # expired
                return end("expired", language=row.language or lex.default_language, lex=lex)
            return Outcome(**outcome)
        elif now - row.updated_at > timedelta(seconds=runtime.settings.ussd_session_timeout):
            row.screen, row.ended_at, row.updated_at = "expired", now, now
            return end("expired", language=row.language or lex.default_language, lex=lex)
        caller = Caller.from_data(row.data["caller"])
        index = runtime.pipeline.places.get(session)
        where = country(request.phone)

        def resolve(name: str) -> str | None:
            found = index.resolve(name.split(), home=caller.home, area=caller.area, country=where)
            return found.place.name if found.place is not None and found.precision == "place" else None

        state = replay(
            request.text.split("*") if request.text else [], caller=caller, lex=lex, resolve=resolve
        )
        row.text, row.language, row.updated_at = request.text, state.language, now
        row.screen = state.done or state.stack[-1]
        choice = {
            "category": state.category,
            "place": state.place,
            "home": state.at_home,
            "count": state.count,
        }
        data: dict[str, Any] = {**row.data, "choice": choice}
        if state.changed_language and caller.person_id is not None:
            _set_language(session, caller.person_id, state.changed_language, now)
        if state.done is None:
            row.data = data
            return render(state, caller=caller, lex=lex)
        text = report_sms(state, lex) if state.done == "report" else checkin_sms(state.language, lex)
        outcome = Outcome(kind=state.done, text=text, language=state.language)
        row.data = {**data, "outcome": asdict(outcome)}
        return outcome


def _set_language(session: Session, person_id: int, language: str, now: datetime) -> None:
    person = session.get(Person, person_id)
    if person is None or person.language == language:
        return  # a retried step changes nothing twice
    details = {"from": person.language, "to": language}
    person.language = language
    session.add(
        AuditLog(
            actor=f"ussd:{person_id}",
            action="set_language",
            entity="person",
            entity_id=str(person_id),
            details=details,
            at=now,
        )
    )


def _stored_id(runtime: Runtime, provider: str, provider_id: str) -> int | None:
    with runtime.factory() as session:
        return session.scalar(
            select(Message.id).where(
                Message.direction == "inbound",
                Message.provider == provider,
                Message.provider_message_id == provider_id,
            )
        )


def _ended(runtime: Runtime, session_id: str, message_id: int | None, code: str | None) -> None:
    with transaction(runtime.factory) as session:
        row = session.get(UssdSession, session_id)
        if row is not None:
            row.message_id = message_id or row.message_id
            row.incident_code = code or row.incident_code
            row.ended_at = row.ended_at or utcnow()


def _processed(runtime: Runtime, message_id: int) -> tuple[bool, str | None, str | None, str | None]:
    """Whether the message was processed, and the incident code, category and place it made."""
    with runtime.factory() as session:
        found = session.execute(
            select(Message.processed_at, Incident.code, Alert.category, Alert.place_name)
            .outerjoin(Incident, Incident.id == Message.incident_id)
            .outerjoin(Alert, Alert.message_id == Message.id)
            .where(Message.id == message_id)
        ).first()
    if found is None:
        return False, None, None, None
    return found[0] is not None, found[1], found[2], found[3]


async def answer(*, runtime: Runtime, request: UssdRequest) -> str:
    """The screen for this step of a USSD session (`CON ...` or `END ...`, at most 182 characters)."""
    phone = normalize(request.phone, runtime.settings.default_region).value  # E.164 when valid
    request = replace(request, phone=phone)
    try:
        step = await asyncio.to_thread(_advance, runtime, request)
    except IntegrityError:  # two first requests of one session at once: the other row is there now
        step = await asyncio.to_thread(_advance, runtime, request)
    if isinstance(step, str):
        return step
    lex = runtime.pipeline.lexicon
    provider_id = f"ussd-{request.session_id}"
    raw = {
        "sessionId": [request.session_id],
        "serviceCode": [request.service_code or ""],
        "phoneNumber": [request.phone],
        "networkCode": [request.network_code or ""],
        "text": [request.text],
    }
    stored = await runtime.writer.store(
        InboundSms(
            provider=request.provider,
            provider_message_id=provider_id,
            sender=request.phone,
            recipient=request.service_code,
            text=step.text,
            reported_at=None,
            raw=raw,
        )
    )
    message_id = stored.message_id or await asyncio.to_thread(
        _stored_id, runtime, request.provider, provider_id
    )
    if step.kind == "checkin":
        await asyncio.to_thread(_ended, runtime, request.session_id, message_id, None)
        return end("checked_in", language=step.language, lex=lex)
    code = category = place = None
    deadline = time.monotonic() + PROCESSING_WAIT
    while message_id is not None:
        done, code, category, place = await asyncio.to_thread(_processed, runtime, message_id)
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL)
    await asyncio.to_thread(_ended, runtime, request.session_id, message_id, code)
    if code is None:  # processing is slow (or runs in a worker): the pipeline's SMS reply brings the code
        return end("sent_later", language=step.language, lex=lex)
    names = lex.grammars[step.language].category_names
    return end(
        "sent",
        language=step.language,
        lex=lex,
        code=code,
        category=names.get(category or "other", category or ""),
        place=_short(place or "-"),
    )
