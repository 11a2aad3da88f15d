"""The USSD menu as a pure state machine, without a database: screen in, choice in, screen out.

The table walks every screen with every kind of input: each path forward, back, and invalid
choices, with the whole screen (or the SMS a finished session stores) that must come out. Then the
limits: every screen reachable in every language within 182 characters, typed places found or
not, and the END screens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from app.services.ussd_menu import (
    MAX_PLACE,
    MAX_SCREEN,
    Caller,
    End,
    Outcome,
    OutcomeKind,
    Screen,
    State,
    advance,
    closing,
    end,
    gsm7,
    inputs,
    languages,
    long_screens,
    replay,
    show,
    start,
    step,
    walk,
)
from keywords.parser import Lexicon, lexicon
from tests import ussd_screens as screens

LEX = lexicon("fr")
GRACE = Caller(person_id=4, language="en", home=(1.5, 30.2), home_name="Djugu", nearby=("Mbau", "Oicha"))
AMANI = replace(GRACE, language="sw")
NAMELESS = Caller(person_id=8, language="en", home=(1.5, 30.2))  # a home without a gazetteer name
JEANNE = replace(GRACE, language="fr")
STRANGER = Caller()
KNOWN = {"largo": "Largu", "beni": "Beni"}  # what the place index would find, by what was typed


def resolve(name: str) -> str | None:
    return KNOWN.get(name.lower())


def con(*lines: str) -> str:
    return "CON " + "\n".join(lines)


def invalid(screen: str) -> str:
    """The same screen asked again, after a refused choice."""
    return screen.replace("CON ", "CON Invalid choice.\n", 1)


LANGUAGE = con(screens.title(), *screens.listed())
SW = screens.pick("sw")  # what a caller presses for Swahili
MENU_LINES = ("Kengele", "1 Report an alert", "2 All is well", "3 Change language")
MENU = con(*MENU_LINES)
CATEGORIES = [
    "1 ATTACK",
    "2 ARMED MEN",
    "3 ABDUCTION",
    "4 KILLING",
    "5 SEXUAL VIOLENCE",
    "6 LOOTING",
    "7 ARSON",
    "8 DISPLACEMENT",
    "9 THREAT",
    "10 TENSION",
]
CATEGORY = con("Which alert?", *CATEGORIES, "0 Back")
KATEGORIA = con(
    "Tahadhari gani?",
    *["1 SHAMBULIO", "2 WATU WENYE SILAHA", "3 UTEKAJI", "4 MAUAJI", "5 UBAKAJI", "6 UPORAJI"],
    *["7 MOTO", "8 WAKIMBIZI"],
    "9 TISHIO",
    "10 MVUTANO",
    "0 Rudi",
)
PLACE = con("Where?", "1 At my home (Djugu)", "2 A nearby village", "3 Type the place name", "0 Back")
NEARBY = con("Which village?", "1 Mbau", "2 Oicha", "0 Back")
TYPED = con("Type the place name:", "0 Back")
COUNT = con("How many people? Type the number, 00 if unknown", "0 Back")
CHANGE = con("Change language", *screens.listed(), "0 Back")


def confirm(summary: str) -> str:
    return con("Send this alert?", summary, "1 Send", "0 Back")


def report(text: str, language: str = "en") -> Outcome:
    return Outcome(OutcomeKind.REPORT, text, language)


@dataclass(frozen=True)
class Case:
    caller: Caller
    text: str  # the inputs that reached the screen, as Africa's Talking joins them
    choice: str
    then: Screen | OutcomeKind  # where the caller is after the choice, or how the session ended
    out: str | Outcome  # the whole screen shown, or the outcome to store


CASES = {
    # -- the first screen of a caller whose language is unknown
    "stranger picks English": Case(STRANGER, "", "2", Screen.MENU, con(*MENU_LINES, "0 Back")),
    "stranger picks French": Case(
        STRANGER,
        "",
        "1",
        Screen.MENU,
        con("Kengele", "1 Signaler une alerte", "2 Tout va bien (RAS)", "3 Changer de langue", "0 Retour"),
    ),
    "stranger picks Swahili": Case(
        STRANGER,
        "",
        SW,
        Screen.MENU,
        con("Kengele", "1 Tuma tahadhari", "2 Hali ni shwari", "3 Badilisha lugha", "0 Rudi"),
    ),
    "no back from the language screen": Case(
        STRANGER, "", "0", Screen.LANGUAGE, "CON Choix invalide.\n" + LANGUAGE[4:]
    ),
    "no language past the last": Case(
        STRANGER, "", screens.past_the_last(), Screen.LANGUAGE, "CON Choix invalide.\n" + LANGUAGE[4:]
    ),
    "back from the stranger's menu": Case(STRANGER, "2", "0", Screen.LANGUAGE, LANGUAGE),
    # -- the menu
    "report": Case(GRACE, "", "1", Screen.CATEGORY, CATEGORY),
    "all is well": Case(GRACE, "", "2", OutcomeKind.CHECKIN, Outcome(OutcomeKind.CHECKIN, "OK", "en")),
    "tout va bien": Case(JEANNE, "", "2", OutcomeKind.CHECKIN, Outcome(OutcomeKind.CHECKIN, "RAS", "fr")),
    "hali ni shwari": Case(AMANI, "", "2", OutcomeKind.CHECKIN, Outcome(OutcomeKind.CHECKIN, "SALAMA", "sw")),
    "change language": Case(GRACE, "", "3", Screen.CHANGE_LANGUAGE, CHANGE),
    "no back from the first menu": Case(GRACE, "", "0", Screen.MENU, invalid(MENU)),
    "no fourth option": Case(GRACE, "", "4", Screen.MENU, invalid(MENU)),
    "letters on the menu": Case(GRACE, "", "abc", Screen.MENU, invalid(MENU)),
    # -- changing language
    "to Swahili, back on the menu": Case(
        GRACE,
        "3",
        SW,
        Screen.MENU,
        con("Lugha: Kiswahili", "1 Tuma tahadhari", "2 Hali ni shwari", "3 Badilisha lugha"),
    ),
    "to the same language": Case(GRACE, "3", "2", Screen.MENU, con("Language: English", *MENU_LINES[1:])),
    "back without changing": Case(GRACE, "3", "0", Screen.MENU, MENU),
    "no such language": Case(GRACE, "3", screens.past_the_last(), Screen.CHANGE_LANGUAGE, invalid(CHANGE)),
    "the new language holds after": Case(GRACE, f"3*{SW}", "1", Screen.CATEGORY, KATEGORIA),
    # -- the card's categories
    "a category, with a home": Case(GRACE, "1", "2", Screen.PLACE, PLACE),
    "a category, without a home": Case(STRANGER, "2*1", "2", Screen.TYPED, TYPED),
    "a category typed with a zero": Case(GRACE, "1", "05", Screen.PLACE, PLACE),
    "the last card": Case(GRACE, "1", "10", Screen.PLACE, PLACE),
    "no card 11": Case(GRACE, "1", "11", Screen.CATEGORY, invalid(CATEGORY)),
    "letters for a category": Case(GRACE, "1", "abc", Screen.CATEGORY, invalid(CATEGORY)),
    "back to the menu": Case(GRACE, "1", "0", Screen.MENU, MENU),
    # -- where
    "at home": Case(GRACE, "1*2", "1", Screen.COUNT, COUNT),
    "a nearby village": Case(GRACE, "1*2", "2", Screen.NEARBY, NEARBY),
    "type the place": Case(GRACE, "1*2", "3", Screen.TYPED, TYPED),
    "no fourth way": Case(GRACE, "1*2", "4", Screen.PLACE, invalid(PLACE)),
    "back to the categories": Case(GRACE, "1*2", "0", Screen.CATEGORY, CATEGORY),
    "a home with no name": Case(
        NAMELESS,
        "1",
        "2",
        Screen.PLACE,
        con("Where?", "1 At my home", "3 Type the place name", "0 Back"),
    ),
    "no nearby village to offer": Case(
        NAMELESS,
        "1*2",
        "2",
        Screen.PLACE,
        con("Invalid choice.", "Where?", "1 At my home", "3 Type the place name", "0 Back"),
    ),
    # -- a nearby village
    "the second village": Case(GRACE, "1*2*2", "2", Screen.COUNT, COUNT),
    "no third village": Case(GRACE, "1*2*2", "3", Screen.NEARBY, invalid(NEARBY)),
    "back to where": Case(GRACE, "1*2*2", "0", Screen.PLACE, PLACE),
    # -- a typed place
    "a place the index knows": Case(GRACE, "1*2*3", "largo", Screen.COUNT, COUNT),
    "spaces around the name": Case(GRACE, "1*2*3", "  largo ", Screen.COUNT, COUNT),
    "a place the index does not know": Case(
        GRACE,
        "1*2*3",
        "Zanzibarville",
        Screen.NOT_FOUND,
        con("Zanzibarville: place not known.", "1 Keep it as typed", "0 Back"),
    ),
    "digits are not a place": Case(GRACE, "1*2*3", "123", Screen.TYPED, invalid(TYPED)),
    "a name longer than 60": Case(GRACE, "1*2*3", "X" * (MAX_PLACE + 1), Screen.TYPED, invalid(TYPED)),
    "a name of 60": Case(
        GRACE,
        "1*2*3",
        "X" * MAX_PLACE,
        Screen.NOT_FOUND,
        con("X" * MAX_PLACE + ": place not known.", "1 Keep it as typed", "0 Back"),
    ),
    "back from typing": Case(GRACE, "1*2*3", "0", Screen.PLACE, PLACE),
    "typing in French": Case(
        JEANNE,
        "1*2*3",
        "Xyzville",
        Screen.NOT_FOUND,
        con("Xyzville: lieu inconnu.", "1 Garder tel quel", "0 Retour"),
    ),
    # -- a place not known
    "keep it as typed": Case(GRACE, "1*2*3*Zanzibarville", "1", Screen.COUNT, COUNT),
    "nothing but keep": Case(
        GRACE,
        "1*2*3*Zanzibarville",
        "2",
        Screen.NOT_FOUND,
        invalid(con("Zanzibarville: place not known.", "1 Keep it as typed", "0 Back")),
    ),
    "back to type again": Case(GRACE, "1*2*3*Zanzibarville", "0", Screen.TYPED, TYPED),
    # -- how many
    "a count": Case(GRACE, "1*1*1", "20", Screen.CONFIRM, confirm("ATTACK - Djugu - 20 people")),
    "count unknown": Case(GRACE, "1*1*1", "00", Screen.CONFIRM, confirm("ATTACK - Djugu - number unknown")),
    "the largest count": Case(
        GRACE, "1*1*1", "100000", Screen.CONFIRM, confirm("ATTACK - Djugu - 100000 people")
    ),
    "more than the largest": Case(GRACE, "1*1*1", "100001", Screen.COUNT, invalid(COUNT)),
    "zeros are not a count": Case(GRACE, "1*1*1", "0000", Screen.COUNT, invalid(COUNT)),
    "letters are not a count": Case(GRACE, "1*1*1", "x", Screen.COUNT, invalid(COUNT)),
    "back to where, from the count": Case(GRACE, "1*1*1", "0", Screen.PLACE, PLACE),
    "back to the village list": Case(GRACE, "1*1*2*1", "0", Screen.NEARBY, NEARBY),
    "a village on the summary": Case(
        GRACE, "1*4*2*2", "3", Screen.CONFIRM, confirm("KILLING - Oicha - 3 people")
    ),
    "the found name on the summary": Case(
        GRACE, "1*1*3*largo", "12", Screen.CONFIRM, confirm("ATTACK - Largu - 12 people")
    ),
    "the typed name on the summary": Case(
        GRACE, "1*7*3*Zanzibarville*1", "5", Screen.CONFIRM, confirm("ARSON - Zanzibarville - 5 people")
    ),
    "a nameless home on the summary": Case(
        NAMELESS, "1*1*1", "2", Screen.CONFIRM, confirm("ATTACK - At my home - 2 people")
    ),
    "the summary in Swahili": Case(
        AMANI,
        "1*6*2*2",
        "00",
        Screen.CONFIRM,
        con("Tuma tahadhari hii?", "UPORAJI - Oicha - idadi haijulikani", "1 Tuma", "0 Rudi"),
    ),
    # -- send: the SMS the card teaches
    "send from home": Case(GRACE, "1*2*1*20", "1", OutcomeKind.REPORT, report("A2 20")),
    "send from home, count unknown": Case(GRACE, "1*10*1*00", "1", OutcomeKind.REPORT, report("A10")),
    "send from a village": Case(GRACE, "1*6*2*2*7", "1", OutcomeKind.REPORT, report("A6 Oicha 7")),
    "send a found place": Case(GRACE, "1*1*3*largo*12", "1", OutcomeKind.REPORT, report("A1 Largu 12")),
    "send as typed": Case(
        GRACE, "1*7*3*Zanzibarville*1*00", "1", OutcomeKind.REPORT, report("A7 Zanzibarville")
    ),
    "send in Swahili": Case(AMANI, "1*6*2*2*00", "1", OutcomeKind.REPORT, report("T6 Oicha", "sw")),
    "send in French": Case(JEANNE, "1*2*1*20", "1", OutcomeKind.REPORT, report("A2 20", "fr")),
    "a stranger sends": Case(STRANGER, "2*1*1*largo*12", "1", OutcomeKind.REPORT, report("A1 Largu 12")),
    "nothing but send": Case(
        GRACE, "1*1*1*20", "2", Screen.CONFIRM, invalid(confirm("ATTACK - Djugu - 20 people"))
    ),
    "back to the count": Case(GRACE, "1*1*1*20", "0", Screen.COUNT, COUNT),
}


@pytest.mark.parametrize("name", list(CASES))
def test_screen_in_choice_in_screen_out(name: str) -> None:
    case = CASES[name]
    before = replay(inputs(case.text), caller=case.caller, lex=LEX, resolve=resolve)
    assert before.done is None
    after = step(before, case.choice, caller=case.caller, lex=LEX, resolve=resolve)
    assert (after.state.done or after.state.screen, after.reply) == (case.then, case.out)
    # Africa's Talking sends the inputs so far, not the last one: replaying them gives the same answer.
    text = f"{case.text}*{case.choice}" if case.text else case.choice
    assert walk(text, caller=case.caller, lex=LEX, resolve=resolve) == after


def test_the_first_screen() -> None:
    assert walk("", caller=STRANGER, lex=LEX, resolve=resolve).reply == LANGUAGE
    assert walk("", caller=GRACE, lex=LEX, resolve=resolve).reply == MENU
    assert walk("", caller=JEANNE, lex=LEX, resolve=resolve).reply == con(
        "Kengele", "1 Signaler une alerte", "2 Tout va bien (RAS)", "3 Changer de langue"
    )
    assert start(caller=STRANGER, lex=LEX) == State(language="fr", stack=(Screen.LANGUAGE,))
    assert start(caller=AMANI, lex=LEX) == State(language="sw", stack=(Screen.MENU,))
    others = sorted(set(LEX.grammars) - {"fr"})
    assert {"en", "fr", "sw"} <= set(LEX.grammars)
    assert languages(LEX) == ["fr", *others]  # the default first, then by code
    assert languages(lexicon("sw")) == ["sw", *sorted(set(LEX.grammars) - {"sw"})]


def test_the_inputs_of_a_cumulative_text() -> None:
    assert inputs("") == []
    assert inputs("1") == ["1"]
    assert inputs("1*3*Lopa*20") == ["1", "3", "Lopa", "20"]
    assert inputs("1**2") == ["1", "", "2"]  # an empty input is a refused one
    assert walk("1**2", caller=GRACE, lex=LEX, resolve=resolve).reply == PLACE
    assert walk("1*", caller=GRACE, lex=LEX, resolve=resolve).reply == invalid(CATEGORY)


def test_back_all_the_way_and_forward_again() -> None:
    text = "1*2*3*Zanzibarville*0*0*0*0"  # not found -> typed -> place -> category -> menu
    assert walk(text, caller=GRACE, lex=LEX, resolve=resolve).reply == MENU
    assert walk(text + "*0", caller=GRACE, lex=LEX, resolve=resolve).reply == invalid(MENU)
    state = walk(text + "*0*1*7*1*00", caller=GRACE, lex=LEX, resolve=resolve).state
    # Going back and choosing again: the later choices are the ones sent.
    assert (state.screen, state.category, state.at_home, state.place, state.count) == (
        Screen.CONFIRM,
        "arson",
        True,
        None,
        None,
    )
    assert walk(text + "*0*1*7*1*00*1", caller=GRACE, lex=LEX, resolve=resolve).reply == report("A7")


def test_a_typed_place_found_then_a_home_chosen_sends_no_place() -> None:
    text = "1*1*3*largo*0*0*1*5*1"  # typed Largu, went back, chose home
    assert walk(text, caller=GRACE, lex=LEX, resolve=resolve).reply == report("A1 5")


def test_the_invalid_notice_lasts_one_screen() -> None:
    steps = ["9", "9", "1"]
    state = start(caller=GRACE, lex=LEX)
    shown = []
    for choice in steps:
        result = step(state, choice, caller=GRACE, lex=LEX, resolve=resolve)
        state = result.state
        shown.append(result.reply)
    assert shown == [invalid(MENU), invalid(MENU), CATEGORY]


def test_the_language_notice_lasts_one_screen() -> None:
    assert walk(f"3*{SW}", caller=GRACE, lex=LEX, resolve=resolve).state.changed_language == "sw"
    after = walk(f"3*{SW}*1*0", caller=GRACE, lex=LEX, resolve=resolve)
    assert after.state.changed_language is None
    assert after.reply == con("Kengele", "1 Tuma tahadhari", "2 Hali ni shwari", "3 Badilisha lugha")


def test_a_finished_session_ignores_what_follows() -> None:
    done = walk("2", caller=GRACE, lex=LEX, resolve=resolve)
    assert walk("2*1*1*3", caller=GRACE, lex=LEX, resolve=resolve) == done
    assert advance(done.state, "1", caller=GRACE, lex=LEX, resolve=resolve) is done.state
    sent = walk("1*1*1*5*1", caller=GRACE, lex=LEX, resolve=resolve)
    assert walk("1*1*1*5*1*0*0", caller=GRACE, lex=LEX, resolve=resolve).reply == sent.reply == report("A1 5")


def test_the_place_index_is_asked_only_for_a_typed_place() -> None:
    asked: list[str] = []

    def counting(name: str) -> str | None:
        asked.append(name)
        return resolve(name)

    walk("1*1*2*1*5", caller=GRACE, lex=LEX, resolve=counting)
    assert asked == []
    walk("1*1*3*123*  Beni *0*Nowhere", caller=GRACE, lex=LEX, resolve=counting)
    assert asked == ["Beni", "Nowhere"]  # trimmed; digits refused before the index is asked


def test_a_place_found_by_its_index_name() -> None:
    found = walk("1*1*3*BENI", caller=AMANI, lex=LEX, resolve=resolve)
    assert (found.state.screen, found.state.place, found.state.typed) == (Screen.COUNT, "Beni", "BENI")
    assert walk("1*1*3*BENI*00*1", caller=AMANI, lex=LEX, resolve=resolve).reply == report("T1 Beni", "sw")
    lost = walk("1*1*3*Benni", caller=AMANI, lex=LEX, resolve=resolve)
    assert (lost.state.screen, lost.state.place, lost.state.typed) == (Screen.NOT_FOUND, None, "Benni")
    assert lost.reply == con("Benni: mahali hapajulikani.", "1 Tumia jina hili", "0 Rudi")


# -- the USSD length limit, in every language -------------------------------------------------------
LONG = "Kanyabayonga Iga Barriere Nord Kanyabayonga Iga Barriere Nord"[:MAX_PLACE]
CHOICES = ["0", "1", "2", "3", "5", "10", "00", "100000", "99", "X" * MAX_PLACE, "Y" * MAX_PLACE]


def reachable(caller: Caller, depth: int = 9) -> dict[State, str | Outcome]:
    """Every state the choices reach within `depth` inputs (the longest path and a refusal), shown."""
    seen = {start(caller=caller, lex=LEX)}
    frontier = list(seen)
    for _ in range(depth):
        later = []
        for state in frontier:
            for choice in CHOICES:
                new = advance(
                    state, choice, caller=caller, lex=LEX, resolve=lambda n: LONG if "X" in n else None
                )
                if new not in seen:
                    seen.add(new)
                    later.append(new)
        frontier = later
    return {state: show(state, caller=caller, lex=LEX).reply for state in seen}


@pytest.mark.parametrize("language", [None, *sorted(LEX.grammars)])
def test_every_reachable_screen_fits(language: str | None) -> None:
    caller = Caller(person_id=1, language=language, home=(0.0, 0.0), home_name=LONG, nearby=(LONG,) * 5)
    shown = reachable(caller)
    screens = set(Screen) - ({Screen.LANGUAGE} if language else set())
    # Every screen is reached, plain and after a refused choice.
    asked = {(state.screen, state.invalid) for state in shown if state.done is None}
    assert asked == {(screen, refused) for screen in screens for refused in (False, True)}
    for state, reply in shown.items():
        if isinstance(reply, Outcome):
            assert state.done is not None and reply.text
            continue
        assert reply.startswith("CON ") and len(reply) <= MAX_SCREEN, (len(reply), reply)
        lines = reply.splitlines()
        if len(state.stack) > 1:  # back is never the option cut
            assert lines[-1].startswith("0 ")
        if state.screen is Screen.CATEGORY:  # the card's list is whole, never cut
            assert [line.split(" ")[0] for line in lines[1 + int(state.invalid) : -1]] == [
                str(n) for n in range(1, 11)
            ]
        if state.screen is Screen.NEARBY:  # five long names do not fit: the last are cut
            assert 1 <= len(lines) - 2 - int(state.invalid) < 5


def test_a_long_list_keeps_its_head_and_back() -> None:
    caller = replace(GRACE, nearby=("P" * MAX_PLACE,) * 5)
    screen = walk("1*1*2", caller=caller, lex=LEX, resolve=resolve).reply
    assert screen == con("Which village?", "1 " + "P" * 60, "2 " + "P" * 60, "0 Back")
    assert len(screen) <= MAX_SCREEN
    again = walk("1*1*2*9", caller=caller, lex=LEX, resolve=resolve).reply
    assert again == con("Invalid choice.", "Which village?", "1 " + "P" * 60, "2 " + "P" * 60, "0 Back")
    # Cut from the screen, not from the choice: the fifth village is still chosen by its number.
    assert walk("1*1*2*5", caller=caller, lex=LEX, resolve=resolve).state.place == "P" * 60


def test_a_long_home_name_is_shortened_on_screen() -> None:
    caller = replace(GRACE, home_name="H" * 80)
    place = walk("1*1", caller=caller, lex=LEX, resolve=resolve).reply
    assert isinstance(place, str) and f"1 At my home ({'H' * 60})\n" in place
    summary = walk("1*1*1*3", caller=caller, lex=LEX, resolve=resolve).reply
    assert summary == confirm(f"ATTACK - {'H' * 60} - 3 people")


# -- the END screens ------------------------------------------------------------------------------
SENT = Outcome(OutcomeKind.REPORT, "A1 Largu 12", "en")


@pytest.mark.parametrize(
    ("outcome", "values", "screen"),
    [
        (
            SENT,
            {"code": "K1234567", "category": "attack", "place": "Largu"},
            "Alert received: K1234567 ATTACK Largu. Thank you.",
        ),
        (
            SENT,
            {"code": "K1234567", "category": None, "place": None},
            "Alert received: K1234567 ALERT -. Thank you.",
        ),
        (
            SENT,
            {"code": "K12", "category": "flood", "place": "P" * 80},
            f"Alert received: K12 flood {'P' * 60}. Thank you.",
        ),
        (SENT, {}, "Alert received. Its code will come by SMS. Thank you."),
        (
            replace(SENT, language="fr"),
            {"code": "K7", "category": "looting", "place": "Oicha"},
            "Alerte recue: K7 PILLAGE Oicha. Merci.",
        ),
        (replace(SENT, language="sw"), {}, "Tahadhari imepokelewa. Nambari yake itakuja kwa SMS. Asante."),
        (Outcome(OutcomeKind.CHECKIN, "OK", "en"), {}, "Thank you, all calm noted."),
        (Outcome(OutcomeKind.CHECKIN, "RAS", "fr"), {"code": "K1"}, "Merci, RAS bien note."),
        (Outcome(OutcomeKind.CHECKIN, "SALAMA", "sw"), {}, "Asante, salama imepokelewa."),
    ],
)
def test_the_closing_screen(outcome: Outcome, values: dict[str, str | None], screen: str) -> None:
    assert closing(outcome, lex=LEX, **values) == "END " + screen


@pytest.mark.parametrize("language", sorted(LEX.grammars))
def test_every_end_screen_fits(language: str) -> None:
    assert end(End.EXPIRED, language=language, lex=LEX).startswith("END ")
    worst = {"code": "K1234567", "category": "armed_presence", "place": LONG}
    for outcome in (Outcome(kind, "x", language) for kind in OutcomeKind):
        for values in (worst, {}):
            assert len(closing(outcome, lex=LEX, **values)) <= MAX_SCREEN
    assert len(end(End.EXPIRED, language=language, lex=LEX)) <= MAX_SCREEN


def test_the_expired_screen() -> None:
    assert end(End.EXPIRED, language="fr", lex=LEX) == "END Session expiree. Recomposez le code."
    assert end(End.EXPIRED, language="sw", lex=LEX) == "END Muda umekwisha. Piga tena."


def test_screens_are_spelled_in_gsm7() -> None:
    assert gsm7("Français") == "Francais"  # GSM-7 has Ç but not ç
    assert gsm7("Ça, é, ü") == "Ça, é, ü"  # these it has
    assert gsm7("fête") == "fete"
    assert gsm7("Łódź") == "?odz"  # Ł has no letter to fall back on
    assert walk("3", caller=GRACE, lex=LEX, resolve=resolve).reply == CHANGE  # "Français" in the grammar


@pytest.mark.parametrize("language", sorted(LEX.grammars))
def test_no_shipped_screen_is_too_long(language: str) -> None:
    assert long_screens(language, LEX) == []


def test_a_screen_too_long_is_named() -> None:
    """What `kengele grammar check` reports: the screen, by its key in the [ussd] table."""
    fr = LEX.grammars["fr"]
    wordy = replace(fr, ussd=fr.ussd | {"menu": "M" * 150, "sent": "S" * 190})
    lex = Lexicon(LEX.grammars | {"fr": wordy}, LEX.codes, "fr")
    assert [key for key, _ in long_screens("fr", lex)] == ["ussd.menu", "ussd.sent"]
