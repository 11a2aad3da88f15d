"""Keyword grammars: one TOML file per language, validated when loaded, compiled into lookup tables."""

from __future__ import annotations

import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Any

GRAMMAR_DIR = Path(__file__).parent / "grammars"
CATEGORIES = (
    "attack",
    "armed_presence",
    "abduction",
    "killing",
    "sexual_violence",
    "looting",
    "arson",
    "displacement",
    "threat",
    "tension",
)
COMMANDS = ("checkin", "ack", "close", "help", "stop", "start", "join")
# Reply templates every language must have, with the placeholders each may use.
REPLIES: dict[str, set[str]] = {
    "alert": {"code", "category", "place"},
    "help": set(),
    "checkin": set(),
    "stop": set(),
    "start": set(),
    "join": {"place"},
    "unknown": set(),
    "ack": {"code"},
    "ack_already": {"code", "who"},
    "ack_refused": set(),
    "close": {"code"},
    "close_already": {"code", "who"},
    "close_refused": set(),
    "forward": {"code", "category", "place", "people", "reports", "time"},
    "beep": set(),
    "update": {"code", "category", "place", "reports", "time"},
    # The same two when the incident has one report: its singular is each language's own words
    # ("1 report", "1 rapport", "ripoti moja"), not a rule of the code. Optional (SINGULARS).
    "forward_one": {"code", "category", "place", "people", "reports", "time"},
    "update_one": {"code", "category", "place", "reports", "time"},
    "no_incident": {"code"},
    "checkin_request": set(),  # the scheduled check-in sent to every focal point
    "silent": {"area", "count", "names"},  # to officers and admins: focal points gone silent
    "acked": {"code", "who"},  # to the other officers told about it
    "closed": {"code", "who"},
    # to officers: one sender (masked) opened more incidents than KENGELE_FLOOD_LIMIT forwards
    "flood": {"sender", "count", "minutes", "code", "category", "place"},
}
# Reply templates a grammar may leave out, and the one used instead: a grammar written before the
# singulars existed still loads, and says "1 reports" rather than nothing.
SINGULARS: dict[str, str] = {"forward_one": "forward", "update_one": "update"}
# USSD screen texts every language must have, with the placeholders each may use (app/services/ussd_menu.py).
USSD: dict[str, set[str]] = {
    "language": set(),  # the word "language", joined across languages on a new caller's first screen
    "invalid": set(),
    "back": set(),
    "menu": set(),
    "report": set(),
    "all_well": set(),
    "change_language": set(),
    "category": set(),
    "place": set(),
    "home": {"place"},  # place: " (Djugu)" when the home has a name, else ""
    "nearby": set(),
    "type_place": set(),
    "nearby_title": set(),
    "typed": set(),
    "not_found": {"place"},
    "keep": set(),
    "count": set(),
    "confirm": set(),
    "people": {"count"},
    "people_unknown": set(),
    "send": set(),
    "sent": {"code", "category", "place"},
    "sent_later": set(),
    "checked_in": set(),
    "language_set": {"language"},
    "expired": set(),
    "unavailable": set(),  # the service cannot keep anything now: dial again later
}
# USSD texts a grammar may leave out, and the one used instead (a grammar written before them loads).
USSD_FALLBACKS: dict[str, str] = {"unavailable": "expired"}
SEPARATORS = ' \t\r\n.,-*#+;:!/()[]"«»_=&|<>~^{}$%@\\'
# Snowball algorithms a grammar may name (`stemmer = "french"`): the snowballstemmer package's.
STEMMERS = ("english", "french", "portuguese", "spanish", "arabic", "swedish", "german", "italian")


class GrammarError(ValueError):
    """A grammar file that cannot be used: names the file, the key and the reason."""

    def __init__(self, path: Path, key: str, reason: str) -> None:
        super().__init__(f"{path.name}: {key}: {reason}")
        self.path, self.key, self.reason = path, key, reason


def fold(text: str) -> str:
    """Lowercase without accents; curly apostrophes made straight."""
    text = text.replace("’", "'").replace("‘", "'").replace("`", "'")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def words_of(text: str) -> tuple[str, ...]:
    """Split folded text on the card's separators (a phrase in a grammar is split the same way).

    Beyond ASCII, every symbol (emoji, arrows), punctuation mark and invisible format character
    separates words too: "attaque🔥Djugu" is two words, "‼️" none.
    """
    out: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch in SEPARATORS or ch.isspace() or (ch > "\x7f" and _separates(ch)):
            if current:
                out.append("".join(current))
                current = []
        elif ch == "?":
            if current:
                out.append("".join(current))
                current = []
            out.append("?")
        else:
            current.append(ch)
    if current:
        out.append("".join(current))
    return tuple(out)


@lru_cache(maxsize=4096)
def _separates(ch: str) -> bool:
    if ch in "\u2019\u2018":  # a curly apostrophe is an apostrophe (fold makes it '): "l’attaque"
        return False
    kind = unicodedata.category(ch)
    return kind[0] in "SPZ" or kind == "Cf" or ch in "\ufe0e\ufe0f"


@dataclass(frozen=True)
class Grammar:
    """One language's words, as folded token tuples."""

    language: str
    name: str
    triggers: frozenset[str]
    categories: dict[str, tuple[tuple[str, ...], ...]]
    commands: dict[str, tuple[tuple[str, ...], ...]]
    count_units: frozenset[str]
    now: tuple[tuple[str, ...], ...]
    yesterday: tuple[tuple[str, ...], ...]
    stopwords: frozenset[str]
    replies: dict[str, str]
    category_names: dict[str, str]
    numbers: dict[str, int]
    countries: frozenset[str]
    greetings: frozenset[str]
    negations: frozenset[str]
    common: frozenset[str]
    ussd: dict[str, str]
    path: Path = field(compare=False)
    # Reading past the card (all optional, empty when a file has none):
    negations_after: frozenset[str] = frozenset()  # "babundi te": a negation after its verb
    calm: tuple[tuple[str, ...], ...] = ()  # "tout est calme", "amani": all is well, anywhere
    thing_units: frozenset[str] = frozenset()  # "50 vaches": a count of things, not of people
    relative: tuple[tuple[str, ...], ...] = ()  # "pres de", "karibu na": the place named next is an anchor
    direction: tuple[tuple[str, ...], ...] = ()  # "vers", "towards": the place named next is a direction
    distance_units: frozenset[str] = frozenset()  # "3 km de Beni": a distance, not a count
    past: tuple[tuple[str, ...], ...] = ()  # "l'an dernier": old news, not an alert
    not_alert: tuple[tuple[str, ...], ...] = ()  # "reunion", "formation": an announcement
    distress: tuple[tuple[str, ...], ...] = ()  # "au secours", "venez vite": an alert, of no category
    elisions: frozenset[str] = frozenset()  # "l'", "d'": a prefix cut off the word it is glued to
    multipliers: frozenset[str] = frozenset()  # "ntuku" (tens): multiplies the number next to it
    stemmer: str | None = None  # a Snowball algorithm ("french"): conjugated forms of category words
    # Verb forms made from each category word written as the infinitive: "ku{root}a" -> "wame{root}a".
    infinitive: str | None = None
    verb_forms: tuple[str, ...] = ()


def _str_list(path: Path, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise GrammarError(path, key, "must be a non-empty list of strings")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise GrammarError(path, key, f"holds {item!r}, not a non-empty string")
    return value


def _phrases(path: Path, key: str, value: Any) -> tuple[tuple[str, ...], ...]:
    phrases = []
    for item in _str_list(path, key, value):
        words = words_of(fold(item))
        if not words:
            raise GrammarError(path, key, f"{item!r} has no word in it")
        phrases.append(words)
    return tuple(phrases)


def _optional_words(path: Path, details: dict[str, Any], key: str) -> list[str]:
    if key not in details:
        return []
    return _str_list(path, f"details.{key}", details[key])


def _templates(
    path: Path,
    name: str,
    table: Any,
    spec: dict[str, set[str]],
    *,
    closed: bool,
    fallbacks: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A table of message templates: every key of `spec` present, no placeholder it does not fill.

    `closed`: a key the spec does not know is an error too (a misspelt screen name). `fallbacks`:
    a key that may be absent, and the key whose template it then takes.
    """
    if not isinstance(table, dict):
        raise GrammarError(path, name, "missing table")
    fallbacks = fallbacks or {}
    table = table | {k: table.get(v) for k, v in fallbacks.items() if k not in table}
    for key, allowed in spec.items():
        template = table.get(key)
        if not isinstance(template, str) or not template.strip():
            raise GrammarError(path, f"{name}.{key}", "missing")
        try:
            used = {field for _, field, _, _ in Formatter().parse(template) if field is not None}
        except ValueError as exc:
            raise GrammarError(path, f"{name}.{key}", f"bad template: {exc}") from None
        if used - allowed:
            raise GrammarError(path, f"{name}.{key}", f"unknown placeholder {sorted(used - allowed)[0]!r}")
    unknown = sorted(set(table) - set(spec))
    if closed and unknown:
        raise GrammarError(path, f"{name}.{unknown[0]}", f"is not a known {name} text")
    return {k: str(v) for k, v in table.items()}


def load_grammar(path: Path) -> Grammar:
    """Read and check one grammar file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GrammarError(path, "-", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GrammarError(path, "-", f"not TOML: {exc}") from None
    language = data.get("language")
    if not isinstance(language, str) or not language.isalpha() or not 2 <= len(language) <= 3:
        raise GrammarError(path, "language", "must be an ISO 639 code such as 'fr'")
    if path.stem != language:
        raise GrammarError(path, "language", f"is {language!r} but the file is named {path.name}")
    categories = data.get("categories")
    if not isinstance(categories, dict):
        raise GrammarError(path, "categories", "missing table")
    for name in categories:
        if name not in CATEGORIES:
            raise GrammarError(path, f"categories.{name}", "is not a category of the contract")
    missing = [c for c in CATEGORIES if c not in categories]
    if missing:
        raise GrammarError(path, f"categories.{missing[0]}", "missing")
    commands = data.get("commands")
    if not isinstance(commands, dict):
        raise GrammarError(path, "commands", "missing table")
    for name in COMMANDS:
        if name not in commands:
            raise GrammarError(path, f"commands.{name}", "missing")
    for name in commands:
        if name not in COMMANDS:
            raise GrammarError(path, f"commands.{name}", "is not a command")
    details = data.get("details", {})
    replies = _templates(path, "replies", data.get("replies"), REPLIES, closed=False, fallbacks=SINGULARS)
    names = data.get("category_names")
    if not isinstance(names, dict) or any(c not in names for c in (*CATEGORIES, "other")):
        raise GrammarError(path, "category_names", "must name every category and 'other'")
    numbers = data.get("numbers", {})
    if not isinstance(numbers, dict):
        raise GrammarError(path, "numbers", "must be a table of word = number")
    for word, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100_000:
            raise GrammarError(path, f"numbers.{word}", "must be a whole number from 0 to 100000")
    countries = data.get("countries", [])
    if not isinstance(countries, list) or not all(isinstance(c, str) and len(c) == 2 for c in countries):
        raise GrammarError(path, "countries", "must be a list of ISO 3166 alpha-2 codes")
    name = data.get("name", language)
    ussd = _templates(path, "ussd", data.get("ussd"), USSD, closed=True, fallbacks=USSD_FALLBACKS)
    stemmer = data.get("stemmer")
    if stemmer is not None and stemmer not in STEMMERS:
        raise GrammarError(
            path, "stemmer", f"{stemmer!r} is not a Snowball algorithm ({', '.join(STEMMERS)})"
        )
    infinitive, verb_forms = _morphology(path, data.get("morphology"))

    def phrases(key: str) -> tuple[tuple[str, ...], ...]:
        return _phrases(path, f"details.{key}", details[key]) if key in details else ()

    def words(key: str) -> frozenset[str]:
        return frozenset(fold(w) for w in _optional_words(path, details, key))

    return Grammar(
        language=language,
        name=str(name),
        triggers=frozenset(fold(w) for w in _str_list(path, "triggers", data.get("triggers"))),
        categories={c: _phrases(path, f"categories.{c}", categories[c]) for c in CATEGORIES},
        commands={c: _phrases(path, f"commands.{c}", commands[c]) for c in COMMANDS},
        count_units=frozenset(
            fold(w) for w in _str_list(path, "details.count_units", details.get("count_units", ["-"]))
        ),
        now=_phrases(path, "details.now", details.get("now", ["-"])),
        yesterday=_phrases(path, "details.yesterday", details.get("yesterday", ["-"])),
        stopwords=frozenset(
            fold(w) for w in _str_list(path, "details.stopwords", details.get("stopwords", ["-"]))
        ),
        replies=replies,
        category_names={k: str(v) for k, v in names.items()},
        numbers={fold(k): v for k, v in numbers.items()},
        countries=frozenset(c.upper() for c in countries),
        greetings=frozenset(fold(w) for w in _optional_words(path, details, "greetings")),
        negations=frozenset(fold(w) for w in _optional_words(path, details, "negations")),
        common=frozenset(fold(w) for w in _optional_words(path, details, "common")),
        ussd=ussd,
        path=path,
        negations_after=words("negations_after"),
        calm=phrases("calm"),
        thing_units=words("thing_units"),
        relative=phrases("relative"),
        direction=phrases("direction"),
        distance_units=words("distance_units"),
        past=phrases("past"),
        not_alert=phrases("not_alert"),
        distress=phrases("distress"),
        elisions=frozenset(fold(w).rstrip("'") for w in _optional_words(path, details, "elisions")),
        multipliers=words("multipliers"),
        stemmer=stemmer,
        infinitive=infinitive,
        verb_forms=verb_forms,
    )


def _morphology(path: Path, table: Any) -> tuple[str | None, tuple[str, ...]]:
    """`[morphology]`: `infinitive = "ku{root}a"` and `forms = ["wame{root}a", ...]`, or nothing."""
    if table is None:
        return None, ()
    if not isinstance(table, dict):
        raise GrammarError(path, "morphology", "must be a table with infinitive and forms")
    infinitive = table.get("infinitive")
    if not isinstance(infinitive, str) or infinitive.count("{root}") != 1:
        raise GrammarError(
            path, "morphology.infinitive", "must be a pattern holding {root} once, as 'ku{root}a'"
        )
    forms = _str_list(path, "morphology.forms", table.get("forms"))
    for form in forms:
        if form.count("{root}") != 1:
            raise GrammarError(path, "morphology.forms", f"{form!r} must hold {{root}} once")
    return fold(infinitive), tuple(fold(f) for f in forms)


def load_codes(path: Path) -> dict[str, str]:
    """The card's number codes (same in every language)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GrammarError(path, "-", f"cannot read: {exc}") from None
    codes = data.get("codes")
    if not isinstance(codes, dict) or not codes:
        raise GrammarError(path, "codes", "missing table")
    for key, value in codes.items():
        if not key.isdigit():
            raise GrammarError(path, f"codes.{key}", "must be a number")
        if value not in CATEGORIES:
            raise GrammarError(path, f"codes.{key}", f"{value!r} is not a category")
    return {str(int(k)): v for k, v in codes.items()}


@lru_cache(maxsize=8)
def load_all(
    directory: Path = GRAMMAR_DIR, extra: Path | None = None
) -> tuple[dict[str, Grammar], dict[str, str]]:
    """Every grammar of the folder (one per `xx.toml`) and the card's codes.

    `extra` (KENGELE_GRAMMARS_DIR) is a deployment's folder: its `xx.toml` add languages or replace
    the folder's file of the same language. The card's codes stay the folder's: a card reprinted in
    one deployment only would teach codes the others read differently.
    """
    grammars = _grammars(directory)
    if extra is not None:
        if (extra / "card.toml").exists():
            raise GrammarError(
                extra / "card.toml", "-", "the card's codes are Kengele's own; remove this file"
            )
        grammars |= _grammars(extra)
    return grammars, load_codes(directory / "card.toml")


def _grammars(directory: Path) -> dict[str, Grammar]:
    if not directory.is_dir():
        raise GrammarError(directory, "-", "not a folder")
    grammars = {}
    for path in sorted(directory.glob("*.toml")):
        if path.stem == "card":
            continue
        grammar = load_grammar(path)
        grammars[grammar.language] = grammar
    if not grammars:
        raise GrammarError(directory, "-", "no grammar file (xx.toml)")
    return grammars
