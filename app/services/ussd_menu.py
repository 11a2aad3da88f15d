"""The USSD menu as a pure state machine: a screen and a choice in, the next screen or an outcome out.

Report an alert, check in, or change language, in the caller's language. Nothing here touches a
database, a clock or the network: the caller as they were when the session began comes in as a
`Caller`, a typed place is named by a `Resolve` callable the session layer builds from the place
index, and the screens' words come from each grammar's `[ussd]` table. Africa's Talking sends
every input so far ("1*3*Lopa*20") with each step, so `walk` replays them from the first screen:
the same text always gives the same screen. A confirmed report or check-in ends the walk with an
`Outcome`, the SMS the card teaches ("A1 Djugu 20", "RAS"); app/services/ussd.py stores it through
the intake and asks `closing` for the END screen.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import assert_never

from keywords.parser import Lexicon
from keywords.sms import gsm7_septets

MAX_SCREEN = 182  # characters a USSD screen may hold, "CON "/"END " included
MAX_PLACE = 60  # characters of a typed place name
MAX_COUNT = 100_000
BACK = "0"  # on every screen but the first
UNKNOWN_COUNT = "00"  # "0" is taken by back

Resolve = Callable[[str], str | None]
"""The gazetteer name of a place the caller typed, or None when the index knows no such place."""


class Screen(StrEnum):
    """A CON screen of the menu; the session row records the one the caller is on."""

    LANGUAGE = "language"  # the first screen of a caller whose language is unknown
    MENU = "menu"
    CHANGE_LANGUAGE = "change_language"
    CATEGORY = "category"
    PLACE = "place"  # only for a caller with a home: at home, nearby, or typed
    NEARBY = "nearby"
    TYPED = "typed"
    NOT_FOUND = "not_found"
    COUNT = "count"
    CONFIRM = "confirm"


class OutcomeKind(StrEnum):
    """What a session ended with: the SMS it stores is a report or a check-in."""

    REPORT = "report"
    CHECKIN = "checkin"


class End(StrEnum):
    """An END screen, named by its key in the grammars' `[ussd]` table."""

    SENT = "sent"
    SENT_LATER = "sent_later"
    CHECKED_IN = "checked_in"
    EXPIRED = "expired"
    UNAVAILABLE = "unavailable"  # the database is away: dial again later


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller as they were when the session began; kept in the session row so replay never drifts."""

    person_id: int | None = None  # None: not on the roster
    language: str | None = None  # None: the first screen asks
    home: tuple[float, float] | None = None
    home_name: str | None = None
    area: str | None = None  # narrows the place lookup; the menu itself does not read it
    nearby: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class State:
    """Where the inputs so far got to: the screens behind the caller, and what they chose."""

    language: str
    stack: tuple[Screen, ...]
    category: str | None = None
    place: str | None = None  # the place name to send; None with `at_home`
    at_home: bool = False
    typed: str | None = None
    count: int | None = None
    done: OutcomeKind | None = None  # the session ends; later inputs change nothing
    invalid: bool = False  # the last input was refused: its screen is asked again, saying so
    changed_language: str | None = None  # the language the last input chose on the change screen

    @property
    def screen(self) -> Screen:
        """The screen the caller is on."""
        return self.stack[-1]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a session ended with: the SMS stored for the caller, and the language of its END screen."""

    kind: OutcomeKind
    text: str
    language: str


@dataclass(frozen=True, slots=True)
class Step:
    """What an input leads to: the new state, and the CON screen to show or the outcome to store."""

    state: State
    reply: str | Outcome


# -- the machine ------------------------------------------------------------------------------------
def languages(lex: Lexicon) -> list[str]:
    """List the languages offered, in menu order: the default language first, then the others by code."""
    return [lex.default_language, *sorted(lang for lang in lex.grammars if lang != lex.default_language)]


def start(*, caller: Caller, lex: Lexicon) -> State:
    """Begin a session: the menu in the caller's language, or the language choice for a stranger."""
    first = Screen.MENU if caller.language else Screen.LANGUAGE
    return State(language=caller.language or lex.default_language, stack=(first,))


def inputs(text: str) -> list[str]:
    """Split Africa's Talking's cumulative `text` ("1*3*Lopa*20") into the inputs, first to last."""
    return text.split("*") if text else []


def replay(values: Sequence[str], *, caller: Caller, lex: Lexicon, resolve: Resolve) -> State:
    """Walk the menu from the first screen through every input."""
    state = start(caller=caller, lex=lex)
    for value in values:
        state = advance(state, value, caller=caller, lex=lex, resolve=resolve)
    return state


def advance(state: State, choice: str, *, caller: Caller, lex: Lexicon, resolve: Resolve) -> State:
    """Take one input on the caller's screen; a refused one leaves them there, told it was invalid."""
    if state.done is not None:
        return state
    state = replace(state, invalid=False, changed_language=None)
    value = choice.strip()
    if value == BACK:
        if len(state.stack) > 1:
            return replace(state, stack=state.stack[:-1])
        return replace(state, invalid=True)
    moved = _MOVES[state.screen](state, value, caller, lex, resolve)
    return moved if moved is not None else replace(state, invalid=True)


def step(state: State, choice: str, *, caller: Caller, lex: Lexicon, resolve: Resolve) -> Step:
    """Take one input and show where it leads."""
    return show(advance(state, choice, caller=caller, lex=lex, resolve=resolve), caller=caller, lex=lex)


def walk(text: str, *, caller: Caller, lex: Lexicon, resolve: Resolve) -> Step:
    """Replay Africa's Talking's cumulative `text` from the first screen and show where it leads."""
    return show(replay(inputs(text), caller=caller, lex=lex, resolve=resolve), caller=caller, lex=lex)


def show(state: State, *, caller: Caller, lex: Lexicon) -> Step:
    """Pair the state with its CON screen, or, once the session is done, with the outcome to store."""
    if state.done is None:
        return Step(state, render(state, caller=caller, lex=lex))
    return Step(state, outcome(state, lex=lex))


def _number(value: str) -> int | None:
    """Read a number typed on the keypad ("05" is 5); None for anything else."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def _choice(value: str, n: int) -> int | None:
    """Read the 0-based option a caller typed among n, or None."""
    number = _number(value)
    return number - 1 if number is not None and 1 <= number <= n else None


def _push(state: State, screen: Screen) -> State:
    """Open the screen on top of the ones behind the caller."""
    return replace(state, stack=(*state.stack, screen))


# One function per screen: the next state for a valid input on it, None for an invalid one.
_Move = Callable[[State, str, Caller, Lexicon, Resolve], State | None]


def _on_language(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    langs = languages(lex)
    i = _choice(value, len(langs))
    return None if i is None else _push(replace(state, language=langs[i]), Screen.MENU)


def _on_change_language(
    state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve
) -> State | None:
    langs = languages(lex)
    if (i := _choice(value, len(langs))) is None:
        return None
    # Back to the menu rather than on to it: the caller came from there, and its back still works.
    return replace(state, stack=state.stack[:-1], language=langs[i], changed_language=langs[i])


def _on_menu(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    if value == "1":
        return _push(state, Screen.CATEGORY)
    if value == "2":
        return replace(state, done=OutcomeKind.CHECKIN)
    if value == "3":
        return _push(state, Screen.CHANGE_LANGUAGE)
    return None


def _on_category(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    number = _number(value)
    if number is None or str(number) not in lex.codes:
        return None
    # Without a home there is nothing to offer but typing the place.
    return _push(
        replace(state, category=lex.codes[str(number)]), Screen.PLACE if caller.home else Screen.TYPED
    )


def _on_place(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    if value == "1":
        return _push(replace(state, place=None, at_home=True), Screen.COUNT)
    if value == "2" and caller.nearby:
        return _push(state, Screen.NEARBY)
    if value == "3":
        return _push(state, Screen.TYPED)
    return None


def _on_nearby(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    i = _choice(value, len(caller.nearby))
    return None if i is None else _push(replace(state, place=caller.nearby[i], at_home=False), Screen.COUNT)


def _on_typed(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    if not any(c.isalpha() for c in value) or len(value) > MAX_PLACE:
        return None
    found = resolve(value)
    screen = Screen.COUNT if found else Screen.NOT_FOUND
    return _push(replace(state, typed=value, place=found, at_home=False), screen)


def _on_not_found(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    # Keeping it sends the name as typed; the pipeline places the alert at the caller's home.
    return _push(replace(state, place=state.typed), Screen.COUNT) if value == "1" else None


def _on_count(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    if value == UNKNOWN_COUNT:
        return _push(replace(state, count=None), Screen.CONFIRM)
    number = _number(value)
    if number is None or not 1 <= number <= MAX_COUNT:
        return None
    return _push(replace(state, count=number), Screen.CONFIRM)


def _on_confirm(state: State, value: str, caller: Caller, lex: Lexicon, resolve: Resolve) -> State | None:
    return replace(state, done=OutcomeKind.REPORT) if value == "1" else None


_MOVES: dict[Screen, _Move] = {
    Screen.LANGUAGE: _on_language,
    Screen.CHANGE_LANGUAGE: _on_change_language,
    Screen.MENU: _on_menu,
    Screen.CATEGORY: _on_category,
    Screen.PLACE: _on_place,
    Screen.NEARBY: _on_nearby,
    Screen.TYPED: _on_typed,
    Screen.NOT_FOUND: _on_not_found,
    Screen.COUNT: _on_count,
    Screen.CONFIRM: _on_confirm,
}


# -- screens ----------------------------------------------------------------------------------------
def gsm7(text: str) -> str:
    """Spell the text in the GSM-7 alphabet USSD phones display: accents it lacks are dropped ("ç" -> "c")."""
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
    """Build a `CON`/`END` screen; list options are cut from the end rather than exceed MAX_SCREEN."""
    options = list(listed)
    while True:
        text = gsm7(f"{kind} " + "\n".join([*lines, *options, *fixed]))
        if len(text) <= MAX_SCREEN or not options:
            break
        options.pop()
    assert len(text) <= MAX_SCREEN, f"USSD screen of {len(text)} characters"
    return text


def render(state: State, *, caller: Caller, lex: Lexicon) -> str:
    """Show the CON screen the caller is on."""
    t = lex.grammars[state.language].ussd
    head = [t["invalid"]] if state.invalid else []
    back = [f"{BACK} {t['back']}"] if len(state.stack) > 1 else []
    langs = languages(lex)
    names = lex.grammars[state.language].category_names
    match state.screen:
        case Screen.LANGUAGE:  # the caller cannot read any one language yet: the title is in all
            title = " / ".join(lex.grammars[lang].ussd["language"] for lang in langs)
            listed = [f"{i} {lex.grammars[g].name}" for i, g in enumerate(langs, 1)]
            return screen("CON", [*head, title], listed)
        case Screen.CHANGE_LANGUAGE:
            listed = [f"{i} {lex.grammars[g].name}" for i, g in enumerate(langs, 1)]
            return screen("CON", [*head, t["change_language"]], listed, back)
        case Screen.MENU:
            name = lex.grammars[state.language].name
            title = t["language_set"].format(language=name) if state.changed_language else t["menu"]
            options = [f"1 {t['report']}", f"2 {t['all_well']}", f"3 {t['change_language']}"]
            return screen("CON", [*head, title], [], options + back)
        case Screen.CATEGORY:
            cards = sorted(lex.codes.items(), key=lambda item: int(item[0]))
            listed = [f"{code} {names[category]}" for code, category in cards]
            return screen("CON", [*head, t["category"]], listed, back)
        case Screen.PLACE:
            home = t["home"].format(place=f" ({_short(caller.home_name)})" if caller.home_name else "")
            nearby = [f"2 {t['nearby']}"] if caller.nearby else []
            options = [f"1 {home}", *nearby, f"3 {t['type_place']}"]
            return screen("CON", [*head, t["place"]], [], options + back)
        case Screen.NEARBY:
            listed = [f"{i} {_short(name)}" for i, name in enumerate(caller.nearby, 1)]
            return screen("CON", [*head, t["nearby_title"]], listed, back)
        case Screen.TYPED:
            return screen("CON", [*head, t["typed"]], [], back)
        case Screen.NOT_FOUND:
            title = t["not_found"].format(place=state.typed)
            return screen("CON", [*head, title], [], [f"1 {t['keep']}", *back])
        case Screen.COUNT:
            return screen("CON", [*head, t["count"]], [], back)
        case Screen.CONFIRM:
            people = t["people"].format(count=state.count) if state.count else t["people_unknown"]
            place = state.place or caller.home_name or t["home"].format(place="")
            summary = f"{names[state.category or 'other']} - {_short(place)} - {people}"
            return screen("CON", [*head, t["confirm"], summary], [], [f"1 {t['send']}", *back])
        case _:
            assert_never(state.screen)


# Inputs that reach every CON screen, each once as given and once with a refused choice after it.
_WALKS = (
    (),
    ("3",),
    ("3", "1"),
    ("1",),
    ("1", "2"),
    ("1", "2", "2"),
    ("1", "2", "3"),
    ("1", "2", "3", "X" * MAX_PLACE),
    ("1", "2", "1"),
    ("1", "2", "1", "100000"),
)
_LONG_PLACE = "Kanyabayonga Iga Barriere Nord"


def long_screens(language: str, lex: Lexicon) -> list[tuple[str, str]]:
    """Name each screen of `language` over MAX_SCREEN with the longest values, or cutting the card's list."""
    caller = Caller(
        person_id=1, language=language, home=(0.0, 0.0), home_name=_LONG_PLACE, nearby=(_LONG_PLACE,) * 5
    )
    last = max(lex.codes, key=int)
    problems: dict[str, str] = {}

    def built(key: str, make: Callable[[], str]) -> str:
        try:
            text = make()
        except AssertionError:  # screen() refuses what it cannot cut down
            text = ""
            problems.setdefault(key, f"more than {MAX_SCREEN} characters with the longest values")
        if len(text) > MAX_SCREEN:
            problems.setdefault(key, f"{len(text)} characters with the longest values (at most {MAX_SCREEN})")
        return text

    for walk in _WALKS:
        for refused in ((), ("99",)):
            state = replay((*walk, *refused), caller=caller, lex=lex, resolve=lambda _: None)
            key = f"ussd.{state.screen}"
            text = built(key, partial(render, state, caller=caller, lex=lex))
            if text and state.screen is Screen.CATEGORY and f"\n{last} " not in text:
                problems.setdefault(key, f"the card's list is cut before code {last}")
    longest = max(lex.grammars[language].category_names.values(), key=len)
    values = {"code": "K1234567", "category": longest, "place": _LONG_PLACE}
    for kind in End:
        built(f"ussd.{kind}", partial(end, kind, language=language, lex=lex, **values))
    return sorted(problems.items())


def _short(name: str | None) -> str:
    """Cut a place name to what a screen shows: gazetteer names can be long, screens cannot."""
    return (name or "")[:MAX_PLACE]


def end(key: End, *, language: str, lex: Lexicon, **values: str) -> str:
    """Build an END screen: the session is over."""
    return screen("END", [lex.grammars[language].ussd[key].format(**values)])


def closing(
    outcome: Outcome,
    *,
    lex: Lexicon,
    code: str | None = None,
    category: str | None = None,
    place: str | None = None,
) -> str:
    """Build the END screen once the outcome is stored, naming the incident if processing gave its code."""
    if outcome.kind is OutcomeKind.CHECKIN:
        return end(End.CHECKED_IN, language=outcome.language, lex=lex)
    if code is None:  # processing is slow (or runs in a worker): the pipeline's SMS reply brings the code
        return end(End.SENT_LATER, language=outcome.language, lex=lex)
    names = lex.grammars[outcome.language].category_names
    return end(
        End.SENT,
        language=outcome.language,
        lex=lex,
        code=code,
        category=names.get(category or "other", category or ""),
        place=_short(place or "-"),
    )


# -- what a confirmed session sends -------------------------------------------------------------
def outcome(state: State, *, lex: Lexicon) -> Outcome:
    """Turn a finished session into the SMS to store."""
    assert state.done is not None, "the session has not ended"
    if state.done is OutcomeKind.REPORT:
        return Outcome(OutcomeKind.REPORT, report_sms(state, lex), state.language)
    return Outcome(OutcomeKind.CHECKIN, checkin_sms(state.language, lex), state.language)


def report_sms(state: State, lex: Lexicon) -> str:
    """Write the SMS the card teaches: trigger and card, place (none: at home), count ("A1 Djugu 20")."""
    grammar = lex.grammars[state.language]
    trigger = min(grammar.triggers, key=lambda w: (len(w), w)).upper()  # "A", or "T" in Swahili
    code = next(code for code, category in lex.codes.items() if category == state.category)
    parts = [f"{trigger}{code}", *([] if state.at_home or not state.place else [state.place])]
    return " ".join(parts + ([str(state.count)] if state.count else []))


def checkin_sms(language: str, lex: Lexicon) -> str:
    """Write the grammar's first check-in word: RAS, OK, SALAMA."""
    return " ".join(lex.grammars[language].commands["checkin"][0]).upper()
