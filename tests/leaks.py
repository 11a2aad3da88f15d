"""Finding a phone number where it must not be: the notations people write, and a strict detector.

The detector is written apart from the scrubber (app/phones.py) so a test does not grade the
scrubber by its own rule: it folds every compatibility form (fullwidth, superscript, circled,
Arabic-Indic digits) with NFKC and `unicodedata.digit`, deletes every character people put between
the groups of a number, and looks for any 7 consecutive digits of the phone, in its international
(`243810000001`) or its national (`0810000001`) form.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import phonenumbers
from hypothesis import strategies as st

WINDOW = 7

# Phones the property tests wrote; the session's log check (tests/conftest.py) looks for them all.
PHONES: set[str] = set()

# Whitespace, dots, dashes, slashes, parentheses, brackets, underscores: what can sit between two
# digits while a reader still reads one number (the list, with brackets, underscores and
# typographic dashes). Letters, `*`, `:` and `,` end a number; `tel0810000003`'s digits are still
# consecutive.
_BETWEEN = re.compile(r"[\s.\-\u2010-\u2015\u2212/\\()\[\]_\u00b7]")
_RUN = re.compile(rf"\d{{{WINDOW},}}", re.ASCII)
_SERVER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?$")


def digits_only(text: str) -> str:
    """The text with compatibility forms folded, every digit ASCII and every separator gone."""
    folded = unicodedata.normalize("NFKC", text)
    ascii_digits = "".join(
        str(unicodedata.digit(ch)) if unicodedata.digit(ch, None) is not None else ch for ch in folded
    )
    return _BETWEEN.sub("", ascii_digits)


@lru_cache(maxsize=4096)
def windows(phone: str) -> frozenset[str]:
    """Every 7 consecutive digits of an E.164 phone, international and national forms."""
    parsed = phonenumbers.parse(phone, None)
    international = f"{parsed.country_code}{parsed.national_number}"
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    forms = {international, re.sub(r"\D", "", national), str(parsed.national_number)}
    return frozenset(form[i : i + WINDOW] for form in forms for i in range(len(form) - WINDOW + 1))


def found(text: str, phones: Iterable[str]) -> list[str]:
    """The phones of which `text` holds 7 consecutive digits (in any notation)."""
    runs = _RUN.findall(digits_only(text))
    if not runs:
        return []
    seen = {run[i : i + WINDOW] for run in runs for i in range(len(run) - WINDOW + 1)}
    return [phone for phone in phones if not seen.isdisjoint(windows(phone))]


def texts_of(doc: Any) -> Iterator[str]:
    """Every text a JSON document holds: keys, strings and numbers, not the server's own timestamps."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield str(key)
            yield from texts_of(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from texts_of(value)
    elif isinstance(doc, str):
        if not _SERVER_TIME.match(doc):
            yield doc
    elif doc is not None and not isinstance(doc, bool):
        yield str(doc)


def found_in_json(doc: Any, phones: Iterable[str]) -> list[tuple[str, str]]:
    """(phone, text) for every text of a JSON document that holds 7 consecutive digits of a phone."""
    phones = list(phones)
    return [(phone, text) for text in texts_of(doc) for phone in found(text, phones)]


def log_texts(line: str) -> list[str]:
    """The texts of one log line: every value but the timestamp of a JSON line, else the line."""
    try:
        doc = json.loads(line)
    except ValueError:
        return [line]
    if not isinstance(doc, dict):
        return [line]
    doc.pop("ts", None)
    return list(texts_of(doc))


def unscrubbed(text: str) -> bool:
    """Whether a text holds 7 digits in a row (after folding), which no scrubbed text can."""
    folded = unicodedata.normalize("NFKC", text)
    return re.search(r"\d{7}", folded) is not None


def scan_logs(paths: Iterable[Path], phones: Iterable[str]) -> list[str]:
    """Log lines (file:line: text) that hold 7 digits in a row, or 7 consecutive digits of a phone."""
    phones = list(phones)
    bad = []
    for path in paths:
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for text in log_texts(line):
                if unscrubbed(text) or found(text, phones):
                    bad.append(f"{path.name}:{number}: {text[:300]}")
    return bad


# -- notations: a phone as people write it (E.164 in, text out) -----------------------------------
def _parts(phone: str) -> tuple[str, str]:
    parsed = phonenumbers.parse(phone, None)
    return str(parsed.country_code), str(parsed.national_number)


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) - 0x30 + 0xFF10) if c.isdigit() else c for c in text)


def _arabic_indic(text: str) -> str:
    return "".join(chr(ord(c) - 0x30 + 0x0660) if c.isdigit() else c for c in text)


def _groups(nsn: str, sizes: tuple[int, ...]) -> list[str]:
    out, i = [], 0
    for size in sizes:
        out.append(nsn[i : i + size])
        i += size
    if i < len(nsn):
        out.append(nsn[i:])
    return [g for g in out if g]


NOTATIONS: dict[str, Callable[[str], str]] = {
    "e164": lambda p: p,
    "national": lambda p: "0" + _parts(p)[1],
    "international 00": lambda p: "00" + "".join(_parts(p)),
    "country code, no plus": lambda p: "".join(_parts(p)),
    "spaced": lambda p: f"+{_parts(p)[0]} " + " ".join(_groups(_parts(p)[1], (2, 3))),
    "dotted": lambda p: f"+{_parts(p)[0]}." + ".".join(_groups(_parts(p)[1], (3, 3))),
    "dashed national": lambda p: "0" + "-".join(_groups(_parts(p)[1], (2, 3))),
    "slashed": lambda p: "0" + "/".join(_groups(_parts(p)[1], (2, 3))),
    "trunk in parentheses": lambda p: (
        f"+{_parts(p)[0]} (0) {_parts(p)[1][:2]}-" + ".".join(_groups(_parts(p)[1][2:], (3,)))
    ),
    "area in parentheses": lambda p: f"(0{_parts(p)[1][:2]}) " + " ".join(_groups(_parts(p)[1][2:], (3,))),
    "tel: uri": lambda p: "tel:" + p,
    "tel glued": lambda p: "tel0" + _parts(p)[1],
    "digit by digit": lambda p: " ".join("0" + _parts(p)[1]),
    "spaced dashes": lambda p: "0" + " - ".join(_groups(_parts(p)[1], (2, 3))),
    "no-break spaces": lambda p: f"+{_parts(p)[0]}\u00a0" + "\u00a0".join(_groups(_parts(p)[1], (2, 3))),
    "en dashes": lambda p: "0" + "\u2013".join(_groups(_parts(p)[1], (2, 3))),
    "fullwidth": lambda p: _fullwidth("0" + _parts(p)[1]),
    "arabic-indic": lambda p: _arabic_indic("+" + "".join(_parts(p))),
}


# -- phones: mobile numbers of the networks Kengele serves ----------------------------------------
PREFIXES = ("+24381", "+24382", "+24397", "+24399", "+23672", "+23675", "+22376")


@st.composite
def phones(draw: st.DrawFn) -> str:
    """A mobile number of DRC (9 national digits), CAR or Mali (8), E.164."""
    prefix = draw(st.sampled_from(PREFIXES))
    width = (13 if prefix.startswith("+243") else 12) - len(prefix)
    return prefix + draw(st.text("0123456789", min_size=width, max_size=width))
