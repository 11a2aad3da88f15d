"""The USSD menu as Africa's Talking drives it: one table of sessions, every path, on both databases.

Each case is what Africa's Talking would post, step by step (`text` is every input so far joined
by `*`), with what the screen must start with and contain. Every screen the harness sees is also
checked for the USSD rules: at most 182 characters, starting `CON ` or `END `.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.config import Settings
from app.db import transaction, utcnow
from app.main import create_app
from app.models import Alert, AuditLog, CheckIn, Incident, Message, Person, Place, UssdSession
from app.services import gazetteer, ussd, ussd_menu
from app.services.geotag import distance_km
from app.services.runtime import Runtime
from keywords.grammar import GRAMMAR_DIR, USSD, GrammarError, load_grammar
from keywords.parser import lexicon
from tests import ussd_screens as screens
from tests.helpers import AT_SECRET, phone_is
from tests.test_corpus import CORPUS, load_roster, wait_processed

URL = f"/webhooks/africastalking/{AT_SECRET}/ussd"
JEANNE = "+243810000001"  # fr, home Djugu
AMANI = "+243810000003"  # sw, home Beni
GRACE = "+243810000004"  # en, home Kpandroma
PIERRE = "+243810000005"  # fr, home Lopa
SAMUEL = "+243810000007"  # fr, home Largu
STRANGER = "+243970000123"  # not on the roster


def dial(client: TestClient, session_id: str, phone: str, text: str, **extra: str) -> str:
    """One step of a session, as Africa's Talking posts it; the screen, checked against the USSD rules."""
    form = {"sessionId": session_id, "serviceCode": "*384*42#", "phoneNumber": phone, "text": text}
    r = client.post(URL, data={**form, "networkCode": "63902", **extra})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text.startswith(("CON ", "END ")), r.text
    assert len(r.text) <= ussd_menu.MAX_SCREEN, (len(r.text), r.text)
    return r.text


def expect(screen: str, starts: str, *contains: str) -> None:
    assert screen.startswith(starts), f"{screen!r} does not start with {starts!r}"
    for part in contains:
        assert part in screen, f"{part!r} not in {screen!r}"


@dataclass(frozen=True)
class Case:
    phone: str
    steps: list[tuple[str, ...]]  # (text as posted, the screen's start, what it contains...)
    sms: str | None = None  # the SMS the session stored, if it ended with one
    alert: dict[str, object] = field(default_factory=dict)  # what the report's alert must say


CASES = {
    "stranger picks English then types a place": Case(
        STRANGER,
        [
            ("", f"CON {screens.title()}", *screens.listed()),
            ("0", f"CON Choix invalide.\n{screens.title()}"),  # back on the first screen
            ("0*2", "CON Kengele", "1 Report an alert", "2 All is well", "3 Change language", "0 Back"),
            ("0*2*0", f"CON {screens.title()}"),
            ("0*2*0*2*1", "CON Which alert?", "1 ATTACK", "10 TENSION", "0 Back"),
            ("0*2*0*2*1*1", "CON Type the place name:"),  # no home: straight to typing
            ("0*2*0*2*1*1*largo", "CON How many people? Type the number, 00 if unknown"),
            ("0*2*0*2*1*1*largo*12", "CON Send this alert?", "ATTACK - Largu - 12 people", "1 Send"),
            ("0*2*0*2*1*1*largo*12*1", "END Alert received: K", "ATTACK Largu"),
        ],
        sms="A1 Largu 12",
        alert={"category": "attack", "place_name": "Largu", "precision": "place", "count": 12},
    ),
    "focal point reports at home": Case(
        JEANNE,
        [
            ("", "CON Kengele", "1 Signaler une alerte"),
            ("1", "CON Quelle alerte?", "2 HOMMES ARMES", "0 Retour"),
            ("1*2", "CON Ou?", "1 Chez moi (Djugu)", "2 Un village proche", "3 Taper le nom du lieu"),
            ("1*2*1", "CON Combien de personnes?"),
            ("1*2*1*20", "CON Envoyer cette alerte?", "HOMMES ARMES - Djugu - 20 personnes"),
            ("1*2*1*20*1", "END Alerte recue: K", "HOMMES ARMES Djugu"),
        ],
        sms="A2 20",
        alert={"category": "armed_presence", "place_name": "Djugu", "precision": "home", "count": 20},
    ),
    "nearby village, count unknown": Case(
        AMANI,
        [
            ("", "CON Kengele", "1 Tuma tahadhari"),
            ("1*6", "CON Wapi?", "1 Nyumbani kwangu (Beni)", "2 Kijiji cha karibu"),
            ("1*6*2", "CON Kijiji gani?", "1 Mbau\n2 Oicha\n", "0 Rudi"),
            ("1*6*2*2", "CON Watu wangapi?"),
            ("1*6*2*2*00", "CON Tuma tahadhari hii?", "UPORAJI - Oicha - idadi haijulikani"),
            ("1*6*2*2*00*1", "END Tahadhari imepokelewa: K", "UPORAJI Oicha"),
        ],
        sms="T6 Oicha",
        alert={"category": "looting", "place_name": "Oicha", "precision": "place", "count": None},
    ),
    "unknown place kept as typed": Case(
        GRACE,
        [
            ("1*7*3", "CON Type the place name:", "0 Back"),
            ("1*7*3*Zanzibarville", "CON Zanzibarville: place not known.", "1 Keep it as typed", "0 Back"),
            ("1*7*3*Zanzibarville*0", "CON Type the place name:"),
            ("1*7*3*Zanzibarville*0*Zanzibarville*1", "CON How many people?"),
            (
                "1*7*3*Zanzibarville*0*Zanzibarville*1*5",
                "CON Send this alert?",
                "ARSON - Zanzibarville - 5 people",
            ),
            ("1*7*3*Zanzibarville*0*Zanzibarville*1*5*1", "END Alert received: K", "ARSON Zanzibarville"),
        ],
        sms="A7 Zanzibarville 5",
        # Not in the gazetteer: the pipeline places it at the sender's home, keeping the name written.
        alert={"category": "arson", "place_name": "Zanzibarville", "precision": "home", "count": 5},
    ),
    "back at every level": Case(
        JEANNE,
        [
            ("1", "CON Quelle alerte?"),
            ("1*0", "CON Kengele"),
            ("1*0*3", "CON Changer de langue"),
            ("1*0*3*0", "CON Kengele"),
            ("1*0*3*0*1*4", "CON Ou?"),
            ("1*0*3*0*1*4*0", "CON Quelle alerte?"),
            ("1*0*3*0*1*4*0*4*2", "CON Quel village?"),
            ("1*0*3*0*1*4*0*4*2*0", "CON Ou?"),
            ("1*0*3*0*1*4*0*4*2*0*3", "CON Tapez le nom du lieu:"),
            ("1*0*3*0*1*4*0*4*2*0*3*0", "CON Ou?"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville", "CON Xyzville: lieu inconnu."),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0", "CON Tapez le nom du lieu:"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki", "CON Combien de personnes?"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki*0", "CON Tapez le nom du lieu:"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki*0*Fataki*3", "CON Envoyer", "TUERIE - Fataki - 3"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki*0*Fataki*3*0", "CON Combien de personnes?"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki*0*Fataki*3*0*00", "CON Envoyer", "nombre inconnu"),
            ("1*0*3*0*1*4*0*4*2*0*3*Xyzville*0*Fataki*0*Fataki*3*0*00*1", "END Alerte recue: K", "Fataki"),
        ],
        sms="A4 Fataki",
        alert={"category": "killing", "place_name": "Fataki", "precision": "place", "count": None},
    ),
    "invalid choice at every level": Case(
        GRACE,
        [
            ("7", "CON Invalid choice.\nKengele"),
            ("7*3", "CON Change language"),
            ("7*3*9", "CON Invalid choice.\nChange language"),
            ("7*3*9*0", "CON Kengele"),
            ("7*3*9*0*1*11", "CON Invalid choice.\nWhich alert?", "10 TENSION"),
            ("7*3*9*0*1*11*abc", "CON Invalid choice.\nWhich alert?"),
            ("7*3*9*0*1*11*abc*9*4", "CON Invalid choice.\nWhere?"),
            ("7*3*9*0*1*11*abc*9*4*2*6", "CON Invalid choice.\nWhich village?"),
            ("7*3*9*0*1*11*abc*9*4*2*6*0*3*123", "CON Invalid choice.\nType the place name:"),
            (
                "7*3*9*0*1*11*abc*9*4*2*6*0*3*123*Xyzville*2",
                "CON Invalid choice.\nXyzville: place not known.",
            ),
            ("7*3*9*0*1*11*abc*9*4*2*6*0*3*123*Xyzville*2*1*x", "CON Invalid choice.\nHow many people?"),
            ("7*3*9*0*1*11*abc*9*4*2*6*0*3*123*Xyzville*2*1*x*0000", "CON Invalid choice.\nHow many people?"),
            (
                "7*3*9*0*1*11*abc*9*4*2*6*0*3*123*Xyzville*2*1*x*0000*7*2",
                "CON Invalid choice.\nSend this alert?",
            ),
            ("7*3*9*0*1*11*abc*9*4*2*6*0*3*123*Xyzville*2*1*x*0000*7*2*0", "CON How many people?"),
        ],
    ),
    "check in": Case(PIERRE, [("", "CON Kengele"), ("2", "END Merci, RAS bien note.")], sms="RAS"),
}


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    gazetteer.store(rt.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    load_roster(rt)
    return rt


def person(runtime: Runtime, phone: str) -> Person:
    with runtime.factory() as session:
        found = session.scalar(select(Person).where(phone_is(phone)))
        assert found is not None
        return found


def inbound(runtime: Runtime) -> list[Message]:
    with runtime.factory() as session:
        return list(session.scalars(select(Message).where(Message.direction == "inbound")))


@pytest.mark.parametrize("name", list(CASES))
def test_session_table(client: TestClient, runtime: Runtime, name: str) -> None:
    case = CASES[name]
    session_id = "ATUid_" + re.sub(r"\W", "_", name)
    if case.phone == PIERRE:  # a check-in is waiting for their answer
        pierre = person(runtime, PIERRE).id
        with transaction(runtime.factory) as session:
            session.add(CheckIn(person_id=pierre, round_key="2026-01-01T08:00", sent_at=utcnow()))
    final = ""
    for text, starts, *contains in case.steps:
        final = dial(client, session_id, case.phone, text)
        expect(final, starts, *contains)
    if case.sms is None:  # left before sending: nothing stored
        assert inbound(runtime) == []
        return
    message = wait_processed(runtime, f"ussd-{session_id}")
    assert (message.text, message.sender, message.provider, message.recipient) == (
        case.sms,
        case.phone,
        "africastalking",
        "*384*42#",
    )
    with runtime.factory() as session:
        row = session.get(UssdSession, session_id)
        assert row is not None and row.ended_at is not None and row.message_id == message.id
        if case.alert:  # the pipeline made the alert and the incident; the END screen names it
            alert = session.scalar(select(Alert).where(Alert.message_id == message.id))
            assert alert is not None
            incident = session.get(Incident, alert.incident_id)
            assert incident is not None and incident.code == row.incident_code
            assert f" {incident.code} " in final
            expected = dict(case.alert)
            assert alert.details["count"] == expected.pop("count")
            assert {key: getattr(alert, key) for key in expected} == expected
        else:
            assert message.intent == "checkin"
            checkin = session.scalar(select(CheckIn))
            assert checkin is not None and checkin.answer_message_id == message.id
    # The provider retries the last step: the same END screen, and still one message stored.
    for _ in range(2):
        assert dial(client, session_id, case.phone, case.steps[-1][0]) == final
    assert len(inbound(runtime)) == 1


def test_nearby_villages_are_the_nearest_to_home(client: TestClient, runtime: Runtime) -> None:
    with runtime.factory() as session:
        places = list(session.scalars(select(Place).where(Place.name != "Beni")))
        beni = session.scalar(select(Place).where(Place.name == "Beni"))
        assert beni is not None
    nearest = sorted(places, key=lambda p: distance_km(beni.lat, beni.lon, p.lat, p.lon))[: ussd.NEARBY]
    screen = dial(client, "ATUid_near", AMANI, "1*1*2")
    listed = [line.split(" ", 1)[1] for line in screen.splitlines()[1:] if not line.startswith("0 ")]
    assert listed == [p.name for p in nearest]


def test_change_language(client: TestClient, runtime: Runtime) -> None:
    samuel = person(runtime, SAMUEL)
    expect(dial(client, "ATUid_lang", SAMUEL, ""), "CON Kengele", "3 Changer de langue")
    sw = screens.pick("sw")
    expect(dial(client, "ATUid_lang", SAMUEL, "3"), "CON Changer de langue", *screens.listed())
    for _ in range(2):  # a retried step changes nothing twice
        expect(dial(client, "ATUid_lang", SAMUEL, f"3*{sw}"), "CON Lugha: Kiswahili", "1 Tuma tahadhari")
    expect(dial(client, "ATUid_lang", SAMUEL, f"3*{sw}*1"), "CON Tahadhari gani?", "1 SHAMBULIO")
    assert person(runtime, SAMUEL).language == "sw"
    with runtime.factory() as session:
        (audit,) = session.scalars(select(AuditLog).where(AuditLog.action == "set_language"))
        assert (audit.actor, audit.entity, audit.entity_id) == (f"ussd:{samuel.id}", "person", str(samuel.id))
        assert audit.details == {"from": "fr", "to": "sw"}  # no phone number in the audit trail
        assert session.get(UssdSession, "ATUid_lang").language == "sw"  # type: ignore[union-attr]
    expect(dial(client, "ATUid_lang2", SAMUEL, ""), "CON Kengele", "1 Tuma tahadhari")  # the next call
    # A stranger's choice holds for the session only.
    expect(dial(client, "ATUid_lang3", STRANGER, f"{sw}*3*2"), "CON Language: English", "1 Report an alert")
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Person).where(phone_is(STRANGER))) == 0


def test_timeout_ends_the_session_and_stores_nothing(client: TestClient, runtime: Runtime) -> None:
    expect(dial(client, "ATUid_late", JEANNE, ""), "CON Kengele")
    expect(dial(client, "ATUid_late", JEANNE, "1*1*1*5"), "CON Envoyer cette alerte?")
    past = utcnow() - timedelta(seconds=runtime.settings.ussd_session_timeout + 1)
    with transaction(runtime.factory) as session:
        session.execute(update(UssdSession).values(updated_at=past))
    expect(dial(client, "ATUid_late", JEANNE, "1*1*1*5*1"), "END Session expiree. Recomposez le code.")
    expect(dial(client, "ATUid_late", JEANNE, "1*1*1*5*1"), "END Session expiree.")
    assert inbound(runtime) == []
    with runtime.factory() as session:
        row = session.get(UssdSession, "ATUid_late")
        assert row is not None and row.screen == "expired" and row.ended_at is not None


def test_a_session_id_from_another_phone_shows_nothing_of_the_first_caller(
    client: TestClient, runtime: Runtime
) -> None:
    expect(dial(client, "ATUid_mine", JEANNE, "1*1"), "CON ")  # Jeanne's home is on this screen
    answer = dial(client, "ATUid_mine", "+243820000077", "1*1")
    expect(answer, "END Session expiree.")
    assert "Djugu" not in answer


def test_restart_mid_session_continues(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        rt: Runtime = first.app.state.runtime  # type: ignore[attr-defined]
        gazetteer.store(rt.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
        load_roster(rt)
        expect(dial(first, "ATUid_restart", GRACE, "1*5"), "CON Where?")
        expect(dial(first, "ATUid_restart", GRACE, "1*5*2"), "CON Which village?")
    with TestClient(create_app(settings)) as second:  # a new process on the same database
        expect(dial(second, "ATUid_restart", GRACE, "1*5*2*1"), "CON How many people?")
        final = dial(second, "ATUid_restart", GRACE, "1*5*2*1*2*1")
        expect(final, "END Alert received: K", "SEXUAL VIOLENCE")
        rt = second.app.state.runtime  # type: ignore[attr-defined]
        assert wait_processed(rt, "ussd-ATUid_restart").outcome == "alert"


def test_slow_processing_promises_the_code_by_sms(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ussd, "PROCESSING_WAIT", 0.2)
    with TestClient(create_app(settings, processor=False)) as c:  # a web replica: a worker processes
        final = dial(c, "ATUid_slow", STRANGER, "1*1*3*Bunia*1*00*1")  # no gazetteer: kept as typed
        assert final == "END Alerte recue. Son code vous arrivera par SMS. Merci."
        rt: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
        (message,) = inbound(rt)
        assert (message.text, message.processed_at) == ("A3 Bunia", None)


@pytest.fixture
def secured(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(at_webhook_secret="s3cr3t-path"))) as c:
        yield c


FORM = {"sessionId": "ATUid_s", "serviceCode": "*384#", "phoneNumber": JEANNE, "text": ""}


def test_secret_path_is_checked(secured: TestClient) -> None:
    assert secured.post("/webhooks/africastalking/-/ussd", data=FORM).status_code == 403
    r = secured.post("/webhooks/africastalking/wrong/ussd", data=FORM)
    assert (r.status_code, r.json()) == (403, {"detail": "unknown webhook path secret"})
    assert secured.post("/webhooks/africastalking/s3cr3t-path/ussd", data=FORM).text.startswith("CON ")
    with secured.app.state.runtime.factory() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(UssdSession)) == 1


def test_without_a_secret_the_segment_is_a_dash_in_dev(make_settings: Callable[..., Settings]) -> None:
    with TestClient(create_app(make_settings(env="development", at_webhook_secret=None))) as c:
        assert c.post(f"/webhooks/africastalking/{AT_SECRET}/ussd", data=FORM).status_code == 403
        assert c.post("/webhooks/africastalking/-/ussd", data=FORM).status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("sessionId", None, "sessionId: missing"),
        ("sessionId", " ", "sessionId: empty"),
        ("sessionId", "x" * 91, "sessionId: longer than 90 characters"),
        ("phoneNumber", None, "phoneNumber: missing"),
        ("phoneNumber", "", "phoneNumber: empty"),
        ("text", None, "text: missing"),
    ],
)
def test_a_malformed_step_is_refused_naming_the_field(
    client: TestClient, field: str, value: str | None, detail: str
) -> None:
    form = {k: v for k, v in FORM.items() if k != field} | ({} if value is None else {field: value})
    r = client.post(URL, data=form)
    assert (r.status_code, r.json()) == (422, {"detail": detail})
    with client.app.state.runtime.factory() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(UssdSession)) == 0


# -- screens, without a database: every screen of every language within the USSD limit ------------
LONG = "Kanyabayonga Iga Barriere Nord"


@pytest.mark.parametrize("language", sorted(lexicon().grammars))
def test_every_screen_fits_in_every_language(language: str) -> None:
    lex = lexicon("fr")
    caller = ussd_menu.Caller(
        person_id=1, language=language, home=(0.0, 0.0), home_name=LONG, nearby=(LONG,) * 5
    )
    walks = [
        [],
        ["3"],
        ["3", "1"],
        ["1"],
        ["1", "2"],
        ["1", "2", "2"],
        ["1", "2", "3"],
        ["1", "2", "3", "X" * ussd_menu.MAX_PLACE],
        ["1", "2", "1"],
        ["1", "2", "1", "100000"],
    ]
    for walk in walks:
        for invalid in ([], ["99"]):
            state = ussd_menu.replay(walk + invalid, caller=caller, lex=lex, resolve=lambda _: None)
            text = ussd_menu.render(state, caller=caller, lex=lex)
            assert text.startswith("CON ") and len(text) <= ussd_menu.MAX_SCREEN, (len(text), text)
            if state.stack[-1] == "category":  # the card's list is whole, never cut
                assert "\n10 " in text
    first = ussd_menu.replay([], caller=replace(caller, language=None), lex=lex, resolve=lambda _: None)
    assert ussd_menu.render(first, caller=caller, lex=lex) == "\n".join(
        [f"CON {screens.title()}", *screens.listed()]
    )
    for key in ("sent", "sent_later", "checked_in", "expired"):
        values = {"code": "K1234567", "category": "WATU WENYE SILAHA", "place": LONG} if key == "sent" else {}
        assert len(ussd_menu.end(key, language=language, lex=lex, **values)) <= ussd_menu.MAX_SCREEN


def test_a_long_list_is_cut_rather_than_exceed_the_screen() -> None:
    lex = lexicon("fr")
    caller = ussd_menu.Caller(person_id=1, language="fr", home=(0.0, 0.0), nearby=("P" * 60,) * 5)
    state = ussd_menu.replay(["1", "1", "2"], caller=caller, lex=lex, resolve=lambda _: None)
    text = ussd_menu.render(state, caller=caller, lex=lex)
    assert len(text) <= ussd_menu.MAX_SCREEN and "1 " + "P" * 60 in text and "5 P" not in text
    assert text.endswith("\n0 Retour")


def test_the_card_sms_of_each_choice() -> None:
    lex = lexicon("fr")
    home = ussd_menu.Caller(person_id=1, language="sw", home=(0.0, 0.0), nearby=("Oicha",))

    def sms(walk: list[str]) -> str:
        state = ussd_menu.replay(walk, caller=home, lex=lex, resolve=lambda name: name.title())
        assert state.done == "report"
        return ussd_menu.report_sms(state, lex)

    assert sms(["1", "10", "1", "00", "1"]) == "T10"
    assert sms(["1", "1", "2", "1", "7", "1"]) == "T1 Oicha 7"
    assert sms(["1", "3", "3", "beni", "2", "1"]) == "T3 Beni 2"
    assert ussd_menu.checkin_sms("en", lex) == "OK" and ussd_menu.checkin_sms("sw", lex) == "SALAMA"


# -- the [ussd] table of each grammar is checked when the grammar is loaded -------------------------
@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        (lambda s: s.replace('send = "Envoyer"\n', ""), "ussd.send", "missing"),
        (lambda s: s.replace('keep = "Garder tel quel"', 'keep = ""'), "ussd.keep", "missing"),
        (
            lambda s: s.replace("{category} {place}. Merci.", "{officer}."),
            "ussd.sent",
            "placeholder 'officer'",
        ),
        (lambda s: s.replace('people = "{count}', 'people = "{count'), "ussd.people", "bad template"),
        (lambda s: s + 'goodbye = "Au revoir"\n', "ussd.goodbye", "not a known ussd text"),
        (lambda s: s[: s.index("[ussd]")], "ussd", "missing table"),
    ],
)
def test_a_broken_ussd_table_is_refused(tmp_path: Path, edit, key: str, reason: str) -> None:
    shutil.copytree(GRAMMAR_DIR, tmp_path / "grammars")
    path = tmp_path / "grammars" / "fr.toml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(GrammarError) as err:
        load_grammar(path)
    assert (err.value.key, str(err.value).startswith(f"fr.toml: {key}: ")) == (key, True)
    assert reason in err.value.reason


def test_every_grammar_has_every_ussd_text() -> None:
    for grammar in lexicon().grammars.values():
        assert set(grammar.ussd) == set(USSD), grammar.language
