"""Text (+ the sender's context) -> ParseResult. Pure: no database, no web framework, no clock."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import snowballstemmer
from rapidfuzz.distance import DamerauLevenshtein

from keywords.grammar import GRAMMAR_DIR, Grammar, fold, load_all, words_of

MIN_TYPO_LEN = 5  # words of five letters or more are recognised with one typing error
MAX_COUNT = 100_000
_GLUED = re.compile(r"^([a-z]+)(\d{1,2})$")
_INCIDENT_CODE = re.compile(r"^k?(\d{1,7})$")
_NUMBER_GLUED = re.compile(r"^(\d{1,6})([a-z]{2,})$")
_CLOCK = re.compile(r"\b\d{1,2}[:h]\d{2}\b|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b")
# A phone number written in a text ("appelez 081.000.0003", "tel0810000003", "+243 81 000 0001"):
# digits joined by . - / ( ) or glued to letters, or space-separated groups after a leading 0 or
# +. Seven digits or more are a number to call, never a count of people nor a place word.
_PHONE_LIKE = re.compile(r"(?:\+|\b0)\d+(?: \d{2,4})+|\+?[\d().\-/]*\d[\d().\-/]*")
PHONE_DIGITS = 7


def _drop_phone_numbers(text: str) -> str:
    """Blank out what reads as a phone number, leaving the letters around it."""

    def blank(match: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in match.group())
        return " " if digits >= PHONE_DIGITS else match.group()

    return _PHONE_LIKE.sub(blank, text) if any(c.isdigit() for c in text) else text


class Intent(StrEnum):
    """What a message means. The commands are the grammars' `[commands]` tables, by the same names."""

    ALERT = "alert"
    CHECKIN = "checkin"
    ACK = "ack"
    CLOSE = "close"
    HELP = "help"
    STOP = "stop"
    START = "start"
    JOIN = "join"
    UNKNOWN = "unknown"


INTENTS = tuple(Intent)


class Via(StrEnum):
    """How an intent was read."""

    KEYWORD = "keyword"  # a trigger, then a category word ("ALERTE pillage Djugu")
    CODE = "code"  # a card's number, its trigger written or not ("A1 Djugu", "8 Lopa")
    FREE_TEXT = "free_text"  # no trigger: a category word in a sentence
    CHECKIN_NUMBER = "checkin_number"  # a bare number answering a check-in
    BEEP = "beep"  # a missed call, read by the service: no text at all


# The roles (the app's app.enums.Role values) whose "OK 8" acknowledges K8; others must write "OK K8".
OFFICER_ROLES = ("officer", "admin")


@dataclass(frozen=True, slots=True)
class SenderContext:
    role: str | None = None  # focal_point | officer | admin | None (unknown number)
    language: str | None = None
    checkin_pending: bool = False


@dataclass(slots=True)
class ParseResult:
    intent: Intent
    language: str
    confidence: float
    category: str | None = None
    place_words: list[str] = field(default_factory=list)
    count: int | None = None
    time: str | None = None  # now|yesterday
    code: str | None = None  # incident code of an ack/close
    details: list[str] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)  # "pilage -> pillage"
    via: Via = Via.KEYWORD
    # Words read past the card, each with what it was read as: "wameteka -> kuteka (abduction)".
    readings: list[str] = field(default_factory=list)
    things: dict[str, int] = field(default_factory=dict)  # "50 vaches": counts of what is not people
    offset: str | None = None  # "3 km de · vers Mavivi": where, from the place named (the anchor)
    needs_review: bool = False  # read with low confidence: a person should look at it first
    words_used: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["words_used"]
        return out


@dataclass(frozen=True, slots=True)
class _Entry:
    words: tuple[str, ...]
    kind: str  # category|command|now|yesterday|calm|relative|direction|past|not_alert|distress
    value: str
    language: str
    source: str | None = None  # the grammar's word this form was made from ("kuteka" for "wameteka")
    guessed: bool = False  # read by a Snowball stem: likely, not certain (a made verb form is certain)


# Which category an alert is, when a sentence names several: the event it reports, not the first
# card word in it. Armed men who loot is looting; tension with shooting is an attack.
RANK = {"tension": 0, "threat": 1, "armed_presence": 1, "displacement": 2}
STRONG = 3
MIN_STEM = 4  # a Snowball stem shorter than this ("vol", "tu") matches too much to be read by
MIN_GLUED = 4  # a word glued to another is found when it has this many letters
NEGATION_REACH = 4  # a negation this many small words before a category word still negates it
PHRASE_KINDS = ("calm", "relative", "direction", "past", "not_alert", "distress")
_CODE_GLUED = re.compile(r"^([a-z]+)(\d{1,2})([a-z]{3,})(\d{1,6})?$")  # "a1djugu", "a3fataki5"
_WORD_NUMBER = re.compile(r"^([a-z]{3,})(\d{1,6})$")  # "djugu20"


class Lexicon:
    """Every grammar compiled into lookup tables the parser walks token by token."""

    def __init__(self, grammars: dict[str, Grammar], codes: dict[str, str], default_language: str) -> None:
        self.grammars = grammars
        self.codes = codes
        self.default_language = default_language if default_language in grammars else next(iter(grammars))
        self.triggers: dict[str, set[str]] = {}
        self.stopwords: dict[str, set[str]] = {}
        self.count_units: set[str] = set()
        self.numbers: dict[str, int] = {}
        self.greetings: set[str] = set()
        self.negations: set[str] = set()
        self.negation_languages: dict[str, set[str]] = {}  # French "ni" is Sango "the"
        self.multipliers: set[str] = set()  # "cent", "mia", "ntuku": what multiplies a number next to it
        # A negation after its verb negates that language's words only: Lingala "babundi te", but
        # not French "attaque, je te dis".
        self.negations_after: dict[str, set[str]] = {}
        self.thing_units: set[str] = set()
        self.distance_units: set[str] = set()
        self.elisions: set[str] = set()
        self.stemmers: dict[str, Any] = {}
        # Ordinary words never read as a keyword with a typing error ("village" is not "pillage").
        self.protected: set[str] = set()
        by_first: dict[str, list[_Entry]] = {}
        for lang, g in grammars.items():
            for word in g.triggers:
                self.triggers.setdefault(word, set()).add(lang)
            for word in g.stopwords:
                self.stopwords.setdefault(word, set()).add(lang)
            self.count_units |= g.count_units
            self.numbers.update(g.numbers)
            self.multipliers |= {w for w, v in g.numbers.items() if v in (100, 1000)} | g.multipliers
            self.greetings |= g.greetings
            self.negations |= g.negations
            for word in g.negations:
                self.negation_languages.setdefault(word, set()).add(lang)
            for word in g.negations_after:
                self.negations_after.setdefault(word, set()).add(lang)
            self.thing_units |= g.thing_units
            self.distance_units |= g.distance_units
            self.elisions |= g.elisions
            if g.stemmer:
                self.stemmers[lang] = snowballstemmer.stemmer(g.stemmer)
            self.protected |= g.common | g.stopwords | g.count_units | set(g.numbers) | g.greetings
            self.protected |= g.thing_units | g.distance_units
            entries = [_Entry(p, "category", c, lang) for c, ps in g.categories.items() for p in ps]
            entries += _verb_forms(g, entries)
            for kind in PHRASE_KINDS:
                entries += [_Entry(p, kind, kind, lang) for p in getattr(g, kind)]
            entries += [_Entry(p, "command", c, lang) for c, ps in g.commands.items() for p in ps]
            entries += [_Entry(p, "now", "now", lang) for p in g.now]
            entries += [_Entry(p, "yesterday", "yesterday", lang) for p in g.yesterday]
            for entry in entries:
                by_first.setdefault(entry.words[0], []).append(entry)
        # A negation negates the words of every language (people switch mid-sentence: "pas de
        # bitumba") unless it is an ordinary word of another one (French "ni", Sango's "the";
        # Swahili "si", French "if"): then only its own language's.
        everyone = set(grammars)
        for negations in (self.negation_languages, self.negations_after):
            for word, langs in negations.items():
                elsewhere = {
                    lang
                    for lang, g in grammars.items()
                    if lang not in langs and word in g.stopwords | g.common | g.greetings | set(g.numbers)
                }
                negations[word] = set(langs) if elsewhere else everyone
        self.phrase_languages: dict[tuple[str, ...], set[str]] = {}
        for entries in by_first.values():
            for entry in entries:
                self.phrase_languages.setdefault(entry.words, set()).add(entry.language)
        # Longest phrase first, so "hommes armes" wins over "hommes".
        self.by_first = {w: sorted(es, key=lambda e: -len(e.words)) for w, es in by_first.items()}
        vocabulary = set(self.by_first) | set(self.triggers)
        for entries in self.by_first.values():
            for entry in entries:
                vocabulary.update(entry.words)
        self.vocabulary = frozenset(vocabulary)
        # Words found glued to another ("attaquedjugu"): category words, triggers, units of people.
        self.glue_words = frozenset(
            w
            for w in set(self.triggers)
            | {e.words[0] for es in self.by_first.values() for e in es if e.kind == "category"}
            | self.count_units
            if len(w) >= MIN_GLUED and w.isalpha()
        )
        # Stems of the one-word category words of each language with a Snowball stemmer.
        self.stems: dict[str, dict[str, _Entry]] = {}
        for lang, stem in self.stemmers.items():
            table: dict[str, _Entry] = {}
            for es in self.by_first.values():
                for e in es:
                    if e.kind == "category" and e.language == lang and len(e.words) == 1 and e.source is None:
                        root = stem.stemWord(e.words[0])
                        if len(root) >= MIN_STEM:
                            table.setdefault(root, e)
            self.stems[lang] = table
        self._stemmed: dict[str, _Entry | None] = {}
        self._deletes: dict[str, set[str]] = {}
        # A typing error is read onto a grammar's own words only, never onto a made verb form
        # ("anaumwa", is sick, is one letter from "anauawa", is being killed).
        made = {e.words[0] for es in self.by_first.values() for e in es if e.source is not None}
        written = {w for es in self.by_first.values() for e in es if e.source is None for w in e.words}
        for word in vocabulary - (made - written):
            if len(word) >= MIN_TYPO_LEN and word.isalpha():
                for variant in _deletes(word) | {word}:
                    self._deletes.setdefault(variant, set()).add(word)

    def language_of_country(self, country: str | None) -> str | None:
        """The language a grammar lists for this country (ISO alpha-2), if one does."""
        if country:
            for lang, grammar in self.grammars.items():
                if country.upper() in grammar.countries:
                    return lang
        return None

    def correct(self, token: str) -> str | None:
        """The one vocabulary word within one typing error of `token`, if any."""
        if len(token) < MIN_TYPO_LEN or not token.isalpha() or token in self.vocabulary:
            return None
        if token in self.protected:
            return None
        candidates: set[str] = set()
        for variant in _deletes(token) | {token}:
            candidates |= self._deletes.get(variant, set())
        best = sorted(
            (w for w in candidates if DamerauLevenshtein.distance(token, w, score_cutoff=1) <= 1),
            key=lambda w: (w[0] != token[0], abs(len(w) - len(token)), w),
        )
        return best[0] if best else None

    def stemmed(self, token: str, written: str | None = None) -> _Entry | None:
        """The category word `token` is a conjugated or derived form of, by its Snowball stem.

        `written` is the word with its accents: Snowball's French rules need them ("pillèrent").
        """
        key = written.lower() if written else token
        if key in self._stemmed:
            return self._stemmed[key]
        found = None
        if len(token) > MIN_STEM and token.isalpha() and token not in self.protected:
            for lang, stem in self.stemmers.items():
                for form in dict.fromkeys((key, token)):
                    root = fold(stem.stemWord(form))
                    if len(root) >= MIN_STEM and (entry := self.stems[lang].get(root)) is not None:
                        found = _Entry((token,), "category", entry.value, lang, entry.words[0], True)
                        break
                if found:
                    break
        if len(self._stemmed) > 100_000:  # a bound on memory, whatever the traffic
            self._stemmed.clear()
        self._stemmed[key] = found
        return found

    def unglue(self, token: str) -> list[str] | None:
        """Two words written without a space ("attaquedjugu", "djuguattaque"), if one is ours."""
        if len(token) < MIN_GLUED + 3 or not token.isalpha() or token in self.vocabulary:
            return None
        for cut in range(len(token) - 3, MIN_GLUED - 1, -1):  # the longest word of ours first
            if token[:cut] in self.glue_words:
                return [token[:cut], token[cut:]]
        for cut in range(3, len(token) - MIN_GLUED + 1):
            if token[cut:] in self.glue_words:
                return [token[:cut], token[cut:]]
        return None

    def match_at(self, tokens: list[str], i: int) -> _Entry | None:
        """The longest grammar phrase starting at token i."""
        for entry in self.by_first.get(tokens[i], ()):
            n = len(entry.words)
            if tuple(tokens[i : i + n]) == entry.words:
                return entry
        return None


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _verb_forms(grammar: Grammar, entries: list[_Entry]) -> list[_Entry]:
    """The forms `[morphology]` makes of each category word written as an infinitive."""
    if grammar.infinitive is None:
        return []
    head, _, tail = grammar.infinitive.partition("{root}")
    made: list[_Entry] = []
    for entry in entries:
        if len(entry.words) != 1:
            continue
        word = entry.words[0]
        if not (word.startswith(head) and word.endswith(tail) and len(word) > len(head) + len(tail) + 1):
            continue
        root = word[len(head) : len(word) - len(tail)]
        for form in grammar.verb_forms:
            made.append(
                _Entry((form.replace("{root}", root),), "category", entry.value, entry.language, word)
            )
    return made


@lru_cache(maxsize=8)
def lexicon(
    default_language: str = "fr", directory: Path = GRAMMAR_DIR, extra: Path | None = None
) -> Lexicon:
    grammars, codes = load_all(directory, extra)
    return Lexicon(grammars, codes, default_language)


def _number(token: str) -> int | None:
    return int(token) if token.isdigit() and len(token) <= 6 else None


def _incident_code(token: str | None) -> str | None:
    if token is None:
        return None
    found = _INCIDENT_CODE.match(token)
    return f"K{int(found.group(1))}" if found else None


def parse(text: str, context: SenderContext | None = None, *, lex: Lexicon | None = None) -> ParseResult:
    """Read one SMS: what the sender means, in which language, and how sure we are."""
    context = context or SenderContext()
    lex = lex or lexicon()
    text = _CLOCK.sub(" ", _drop_phone_numbers(text[:2000]))  # "5:30", "06/05": not counts either
    original = list(words_of(text))
    tokens = [fold(t) for t in original]
    pairs = [(o, t) for o, t in zip(original, tokens, strict=True) if t]
    while pairs and pairs[0][1] in lex.greetings:  # "Bonjour, A1 Djugu", "Habari, salama"
        pairs.pop(0)
    if not pairs:
        return ParseResult(Intent.UNKNOWN, _language({}, context, lex), 0.0)
    original, tokens = [p[0] for p in pairs], [p[1] for p in pairs]
    _split_words(tokens, original, lex)

    for i in range(len(tokens) - 2, -1, -1):  # "K 42", "K-42", "K.42" -> "k42"
        if tokens[i] == "k" and tokens[i + 1].isdigit():
            tokens[i : i + 2] = ["k" + tokens[i + 1]]
            original[i : i + 2] = [original[i] + original[i + 1]]
    if len(tokens) > 1 and _INCIDENT_CODE.match(tokens[0]) and tokens[0].startswith("k"):
        tokens[0], tokens[1] = tokens[1], tokens[0]  # "K42 OK" -> "OK K42"
        original[0], original[1] = original[1], original[0]

    for position in (0, 1):  # "A1", "ALERT3", and "ALERTE A1"
        glued = _GLUED.match(tokens[position]) if position < len(tokens) else None
        if glued and glued.group(1) in lex.triggers and (position == 0 or tokens[0] in lex.triggers):
            tokens[position : position + 1] = [glued.group(1), str(int(glued.group(2)))]
            original[position : position + 1] = [original[position][: len(glued.group(1))], glued.group(2)]
            if position == 1:
                del tokens[0], original[0]
            break
    if len(tokens) > 1 and tokens[0] in lex.triggers and tokens[1].isdigit():
        tokens[1] = str(int(tokens[1]))  # "A 01"

    for i in range(len(tokens) - 1, -1, -1):  # "20hommes" -> "20", "hommes"
        unit = _NUMBER_GLUED.match(tokens[i])
        if unit:
            tokens[i : i + 1] = [unit.group(1), unit.group(2)]
            original[i : i + 1] = [original[i][: len(unit.group(1))], original[i][len(unit.group(1)) :]]

    # Typing errors are corrected tentatively: a correction stands only where it makes a keyword
    # the message needs, so that a place name is never "corrected" into a keyword.
    corrected: dict[int, str] = {}
    keyword_form = tokens[0] in lex.triggers
    for i, token in enumerate(tokens):
        if i > 0 and not keyword_form and len(token) < 7:
            continue  # in free text only long words (and the first, a command) are read through a typo
        fixed = lex.correct(token)
        if fixed is not None:
            corrected[i] = token
            tokens[i] = fixed

    votes: dict[str, float] = {}
    command = _command(tokens, original, context, lex, votes)
    if command is not None:
        used = [k for k in corrected if k < command.words_used]
        command.corrections = [f"{original[k]} -> {tokens[k]}" for k in used]
        return command
    return _alert(tokens, original, context, lex, votes, corrected)


def _split_words(tokens: list[str], original: list[str], lex: Lexicon) -> None:
    """Cut what was written as one word into the words it holds, in place: an elided article
    ("l'attaque", "d'hommes"), a code glued to its place ("A1Djugu"), a place glued to a count
    ("Djugu20"), two words without a space ("attaquedjugu")."""
    for i in range(len(tokens) - 1, -1, -1):
        token = tokens[i]
        parts: list[str] | None = None
        if "'" in token:
            head, _, rest = token.partition("'")
            if head in lex.elisions and rest:
                parts = [rest]
        elif not token.isalpha() and (glued := _CODE_GLUED.match(token)) and glued.group(1) in lex.triggers:
            parts = [g for g in glued.groups() if g]
        elif (
            not token.isalpha()
            and (number := _WORD_NUMBER.match(token))
            and number.group(1) not in lex.triggers
            and not _INCIDENT_CODE.match(token)
        ):
            parts = [number.group(1), number.group(2)]
        elif len(token) >= MIN_GLUED + 3 and lex.stemmed(token, original[i]) is None:  # not "piller"+"ent"
            parts = lex.unglue(token)
            if parts is not None:  # "alertkidnapjiba": three words, cut twice
                parts = [q for p in parts for q in (lex.unglue(p) or [p])]
        if parts is None:
            continue
        tokens[i : i + 1] = parts
        written = original[i]
        if len(written) == len(token):  # the letters as written (their case, their accents)
            cuts = [len(token) - sum(len(p) for p in parts[k:]) for k in range(len(parts))]
            original[i : i + 1] = [written[a:b] for a, b in zip(cuts, [*cuts[1:], len(written)], strict=True)]
        else:
            original[i : i + 1] = parts


def _vote(votes: dict[str, float], languages: set[str] | str, weight: float = 1.0) -> None:
    for lang in {languages} if isinstance(languages, str) else languages:
        votes[lang] = votes.get(lang, 0.0) + weight


def _language(votes: dict[str, float], context: SenderContext, lex: Lexicon) -> str:
    preferred = context.language if context.language in lex.grammars else lex.default_language
    if not votes:
        return preferred
    top = max(votes.values())
    leaders = [lang for lang, v in votes.items() if v == top]
    return preferred if preferred in leaders else sorted(leaders)[0]


def _command(
    tokens: list[str], original: list[str], context: SenderContext, lex: Lexicon, votes: dict[str, float]
) -> ParseResult | None:
    """Commands are read at the start of a message only."""
    if len(tokens) == 1 and (n := _number(tokens[0])) is not None and context.checkin_pending:
        if n == 0:
            return ParseResult(Intent.CHECKIN, _language({}, context, lex), 1.0, via=Via.CHECKIN_NUMBER)
        if str(n) in lex.codes:
            return ParseResult(
                Intent.ALERT,
                _language({}, context, lex),
                0.9,
                category=lex.codes[str(n)],
                via=Via.CHECKIN_NUMBER,
            )
    entries = [e for e in lex.by_first.get(tokens[0], ()) if e.kind == "command"]
    matched = [e for e in entries if tuple(tokens[: len(e.words)]) == e.words]
    if not matched:
        return None
    longest = max(len(e.words) for e in matched)
    matched = [e for e in matched if len(e.words) == longest]
    rest = tokens[longest:]
    rest_original = original[longest:]
    code = _incident_code(rest[0]) if rest else None
    if code is not None and not rest[0].startswith("k") and context.role not in OFFICER_ROLES:
        code = None  # "OK 8" from a focal point is no acknowledgement
    has_category = any(
        (entry := lex.match_at(rest, i)) is not None and entry.kind == "category" for i in range(len(rest))
    )
    for intent in (Intent.ACK, Intent.CLOSE):
        langs = {e.language for e in matched if e.value == intent}
        if langs and code is not None:
            _vote(votes, langs)
            return ParseResult(
                intent,
                _language(votes, context, lex),
                1.0,
                code=code,
                details=rest_original[1:],
                words_used=longest,
            )
    for intent in (Intent.HELP, Intent.STOP, Intent.START, Intent.JOIN):
        langs = {e.language for e in matched if e.value == intent}
        if langs and intent != Intent.JOIN and has_category:
            return None  # "Help! armed men at Fataki" is an alert, "Stop the fighting" no opt-out
        if langs:
            _vote(votes, langs)
            place = [o for o, t in zip(rest_original, rest, strict=True) if t not in lex.stopwords]
            return ParseResult(
                intent,
                _language(votes, context, lex),
                1.0,
                place_words=place if intent == Intent.JOIN else [],
                details=[] if intent == Intent.JOIN else rest_original,
                words_used=longest,
            )
    checkin = {e.language for e in matched if e.value == Intent.CHECKIN}
    if checkin and not has_category:
        _vote(votes, checkin)
        return ParseResult(
            Intent.CHECKIN, _language(votes, context, lex), 1.0, details=rest_original, words_used=longest
        )
    ack = {e.language for e in matched if e.value in (Intent.ACK, Intent.CLOSE)}
    if ack and not rest:
        # "ACK" alone: an officer acknowledging without a code; the handler asks for it.
        intent = Intent.ACK if any(e.value == Intent.ACK for e in matched) else Intent.CLOSE
        _vote(votes, ack)
        return ParseResult(intent, _language(votes, context, lex), 0.6, words_used=longest)
    return None


def _mentions_category(tokens: list[str], lex: Lexicon) -> bool:
    matches = (lex.match_at(tokens, i) for i in range(len(tokens)))
    return any(entry is not None and entry.kind == "category" for entry in matches)


def _alert(
    tokens: list[str],
    original: list[str],
    context: SenderContext,
    lex: Lexicon,
    votes: dict[str, float],
    corrected: dict[int, str],
) -> ParseResult:
    distance = len(tokens) > 1 and tokens[1] in lex.distance_units  # "3 km de Beni": no card number
    if (
        tokens[0] in lex.codes
        and len(tokens) > 1
        and not distance
        and not _mentions_category(tokens[1:], lex)
    ):
        tokens = ["a", *tokens]  # "8 Lopa": the card's number with the trigger left out
        original = ["", *original]
        corrected = {k + 1: v for k, v in corrected.items()}
    consumed = [False] * len(tokens)
    category: str | None = None
    via = Via.FREE_TEXT
    confidence = 0.75
    i = 0
    if tokens[0] in lex.triggers and not (len(tokens) > 2 and tokens[2] in lex.distance_units):
        # (not "à 3 km de Beni": the French "à" before a distance is no trigger, 3 no card number)
        _vote(votes, lex.triggers[tokens[0]], 0.5)
        consumed[0] = True
        via, confidence, i = Via.KEYWORD, 1.0, 1
        if len(tokens) > 1 and tokens[1] in lex.codes:
            category, via = lex.codes[tokens[1]], Via.CODE
            consumed[1] = True
    details: list[str] = []
    time_word: str | None = None
    readings: list[str] = []
    said: set[str] = set()  # the phrase kinds the message holds: calm, past, not_alert, distress
    negated = 0
    offset: list[str] = []
    heading: list[str] = []  # the place a direction names ("vers Mavivi")
    category_words = ""
    guessed = False  # a category word read by its stem only
    while i < len(tokens):
        if consumed[i]:
            i += 1
            continue
        entry = lex.match_at(tokens, i)
        if entry is None and tokens[i] not in lex.vocabulary and i not in corrected:
            entry = lex.stemmed(tokens[i], original[i])
        if entry is None or entry.kind == "command":
            i += 1
            continue
        n = len(entry.words)
        span = range(i, i + n)
        if entry.kind == "category" and _negated(
            tokens, i, n, lex, lex.phrase_languages.get(entry.words, {entry.language})
        ):
            negated += 1  # "pas de tension", "hakuna mapigano", "babundi te": said not to be happening
            _vote(votes, lex.phrase_languages.get(entry.words, {entry.language}))
            for k in span:
                consumed[k] = True
            i += n
            continue
        if entry.kind in ("calm", "past", "not_alert", "distress"):
            said.add(entry.kind)
            _vote(votes, lex.phrase_languages.get(entry.words, {entry.language}))
            for k in span:
                consumed[k] = True
            i += n
            continue
        if entry.kind in ("relative", "direction"):
            end = i + n
            if entry.kind == "direction":  # "vers Mavivi": a direction, not where it happened
                while end < len(tokens) and tokens[end] in lex.stopwords:
                    end += 1
                if end < len(tokens) and not consumed[end] and tokens[end] not in lex.vocabulary:
                    heading.append(original[end])
                    end += 1
            offset.append(" ".join(w for w in original[i:end] if w))
            for k in range(i, end):
                consumed[k] = True
            i = end
            continue
        if entry.kind == "category" and category is not None and any(k in corrected for k in span):
            for k in span:  # a second category word only by correction: keep what was written
                tokens[k] = corrected.pop(k, tokens[k])
            i += 1
            continue
        for k in span:
            consumed[k] = True
        _vote(votes, lex.phrase_languages.get(entry.words, {entry.language}))
        written = " ".join(original[i : i + n])
        if entry.kind == "category":
            if entry.source is not None:
                readings.append(f"{written} -> {entry.source} ({entry.value})")
                guessed = guessed or entry.guessed
            if category is None:
                category, category_words = entry.value, written
            elif via != Via.CODE and RANK.get(entry.value, STRONG) > RANK.get(category, STRONG):
                details.append(category_words)  # the event the sentence reports wins over a presence
                category, category_words = entry.value, written
            else:
                details.append(written)
        elif time_word is None:
            time_word = entry.kind
        i += n
    for k in [k for k in corrected if not consumed[k]]:
        tokens[k] = corrected.pop(k)  # a correction that made no keyword is undone
    corrections = [f"{original[k]} -> {tokens[k]}" for k in sorted(corrected)]
    if category is None and (0 in corrected or len(tokens[0]) == 1):
        via = Via.FREE_TEXT  # "A demain", or a trigger read through a typing error, says too little
    if via == Via.FREE_TEXT and category is None and (negated or "calm" in said):
        # "pas d'incident cette nuit, aucun coup de feu", "everything calm, no shooting"
        return ParseResult(Intent.CHECKIN, _language(votes, context, lex), 0.8, via=Via.FREE_TEXT)
    if via == Via.FREE_TEXT and ("past" in said or "not_alert" in said):
        return ParseResult(Intent.UNKNOWN, _language(votes, context, lex), 0.0)  # old news, a meeting
    if category is None and via == Via.FREE_TEXT and "distress" not in said:
        for token in tokens:
            if token in lex.stopwords:
                _vote(votes, lex.stopwords[token], 0.25)
        return ParseResult(Intent.UNKNOWN, _language(votes, context, lex), 0.0)
    count = None
    things: dict[str, int] = {}
    counted: set[int] = set()  # where the things counted so far are written
    for k, token in enumerate(tokens):
        if consumed[k]:
            continue
        number = _number(token)
        if number is None:
            number = lex.numbers.get(token)
        if number is None or number > MAX_COUNT:
            continue
        consumed[k] = True
        used = 0
        if not token.isdigit():  # number words joined into one: "deux cents", "kumi na tano"
            number, used = _compose(tokens, k, number, consumed, lex)
            for j in range(k + 1, k + 1 + used):
                consumed[j] = True
        nxt = k + 1 + used  # the word after the number
        after = tokens[nxt] if nxt < len(tokens) and not consumed[nxt] else None
        if after is not None and not token.isdigit() and (after.isdigit() or after in lex.numbers):
            continue  # "une quinzaine", "a dozen": the article before the number word
        if k > 0 and not consumed[k - 1] and tokens[k - 1] in lex.distance_units:
            consumed[k - 1] = True
            offset.insert(0, f"{original[k - 1]} {original[k]}")  # "km 5 kutoka Oicha"
            continue
        if after in lex.distance_units:
            consumed[nxt] = True
            written = " ".join(original[k : nxt + 1])
            offset.insert(0, written)  # "3 km", "deux cents metres": a distance, not a count
            continue
        unit = _unit_of(tokens, k, lex)
        if unit is not None and unit < k and unit in counted:
            unit = None  # "50 vaches, 3 bergers": the cows have their number already
        if unit is not None:
            counted.add(unit)
            things[tokens[unit]] = things.get(tokens[unit], 0) + number  # "50 vaches": not people
            consumed[unit] = True
            details.append(f"{original[k]} {original[unit]}")
            continue
        if count is None:
            count = number
            details.append(original[k])
    place: list[str] = []
    for k, token in enumerate(tokens):
        if consumed[k]:
            continue
        if token in lex.stopwords:
            _vote(votes, lex.stopwords[token], 0.25)
            continue
        if token in lex.count_units or token in lex.thing_units:
            details.append(original[k])
            continue
        if token.isdigit() or token in lex.greetings or token in lex.negations or token in lex.vocabulary:
            continue  # place names are not numbers (nor phone numbers)
        place.append(original[k])
    if not place and heading:  # "hommes en armes vers Bule": no other place named, so Bule it is
        place = heading
    confidence -= 0.1 * len(corrections) + (0.1 if guessed else 0.0)
    if category is None:  # "au secours, venez vite": distress, of no category
        confidence = 0.4
    review = via == Via.FREE_TEXT and (guessed or bool(corrections) or category is None or "calm" in said)
    return ParseResult(
        Intent.ALERT,
        _language(votes, context, lex),
        round(max(confidence, 0.1), 2),
        category=category or "other",
        place_words=place,
        count=count,
        time=time_word,
        details=details,
        corrections=corrections,
        via=via,
        readings=readings,
        things=things,
        offset=" · ".join(offset) or None,
        needs_review=review or confidence < 0.6,
    )


CONNECTORS = frozenset({"na", "et", "and"})  # "kumi na tano", "vingt et un", "zomi na mitano"


def _compose(tokens: list[str], k: int, number: int, consumed: list[bool], lex: Lexicon) -> tuple[int, int]:
    """The number the words from k on write, and how many words after k it took: a unit and a
    multiplier in either order ("deux cents", "mia tano", "ntuku mibale"), tens and units
    ("dix sept", "twenty one", "kumi na tano", "cent cinquante")."""

    def word(j: int) -> int | None:
        ok = j < len(tokens) and not consumed[j] and not tokens[j].isdigit()
        return lex.numbers.get(tokens[j]) if ok else None

    nxt = word(k + 1)
    here, there = tokens[k], tokens[k + 1] if k + 1 < len(tokens) else ""
    if nxt is not None and there in lex.multipliers and 2 <= number <= 99:
        return number * nxt, 1  # "deux cents", "trois mille"
    if nxt is not None and here in lex.multipliers and 2 <= nxt <= 9:
        return number * nxt, 1  # "mia tano", "ntuku mibale": the multiplier first
    if nxt is not None and number >= 10 and number % 10 == 0 and 1 <= nxt < min(number, 100):
        return number + nxt, 1  # "dix sept", "twenty one", "cent cinquante"
    if k + 2 < len(tokens) and tokens[k + 1] in CONNECTORS and number >= 10:
        unit = word(k + 2)
        if unit is not None and 1 <= unit <= 9:
            return number + unit, 2  # "kumi na tano", "vingt et un"
    return number, 0


def _unit_of(tokens: list[str], k: int, lex: Lexicon) -> int | None:
    """Where the thing counted by the number at k is written: "50 vaches", "une dizaine de vaches",
    "nyumba 10" (a thing word may also have been the category: "vaches" is looting)."""
    people_next = k + 1 < len(tokens) and tokens[k + 1] in lex.count_units
    for j in (k + 1, k + 2) if people_next else (k + 1, k + 2, k - 1):
        if 0 <= j < len(tokens) and tokens[j] in lex.thing_units:
            if j == k + 2 and tokens[k + 1] not in lex.stopwords:
                continue  # "50 hommes ... vaches": only a small word may stand between
            return j
    return None


def _negated(tokens: list[str], i: int, n: int, lex: Lexicon, languages: set[str]) -> bool:
    """Whether the phrase at tokens[i:i+n] (a word of `languages`) is said not to happen, by a
    negation of one of its languages: before it ("pas de", "no", "hakuna"), or after it as
    Lingala and Sango put it ("babundi te", "a pika ndo ni ape"), over a few small words."""

    def negates(word: str, table: dict[str, set[str]]) -> bool:
        return bool(table.get(word, set()) & languages)

    if any(negates(t, lex.negation_languages) for t in tokens[max(0, i - 2) : i]):
        return True
    k = i - 1  # "il n'y a pas eu de pillage": back over small words to the negation
    while k >= 0 and i - k <= NEGATION_REACH and tokens[k] in lex.stopwords:
        k -= 1
    if k >= 0 and negates(tokens[k], lex.negation_languages):
        return True
    after = i + n
    for k in range(after, min(len(tokens), after + NEGATION_REACH)):
        if negates(tokens[k], lex.negations_after):
            return True
        if k >= after + 1 and tokens[k] not in lex.stopwords:
            return False  # two words of substance on: another clause
    return False
