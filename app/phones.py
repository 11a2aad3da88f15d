"""Phone numbers: E.164 normalisation and masking. A reporter's number can get them killed if it leaks."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

import phonenumbers


@dataclass(frozen=True, slots=True)
class Phone:
    value: str  # E.164 when valid, else what was given (trimmed)
    valid: bool


@lru_cache(maxsize=65536)
def normalize(raw: str, region: str) -> Phone:
    """E.164 for a number in any common notation; an invalid one is kept as given and flagged."""
    given = raw.strip()
    try:
        parsed = phonenumbers.parse(given, region)
    except phonenumbers.NumberParseException:
        return Phone(given, False)
    if not phonenumbers.is_valid_number(parsed):
        return Phone(given, False)
    return Phone(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), True)


@lru_cache(maxsize=65536)
def country(phone: str | None) -> str | None:
    """The ISO country of an E.164 number, if it has one."""
    if not phone or not phone.startswith("+"):
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or None
    except phonenumbers.NumberParseException:
        return None


def mask(phone: str | None) -> str | None:
    """`+243*****4567`: the country code and the last four digits, nothing else."""
    if phone is None:
        return None
    digits = re.sub(r"\D", "", phone)
    if len(digits) <= 6:
        return "*" * len(digits)
    if phone.startswith("+"):
        try:
            cc = str(phonenumbers.parse(phone, None).country_code)
        except phonenumbers.NumberParseException:
            cc = digits[:3]
        return "+" + cc + "*" * (len(digits) - len(cc) - 4) + digits[-4:]
    return "*" * (len(digits) - 4) + digits[-4:]


# -- the scrubber: one rule for every text a viewer or a log can see -------------------------------
# A digit is any character with a digit value: every Unicode decimal digit (`\d`: Arabic-Indic,
# fullwidth, Devanagari...) and the 128 others (superscript, subscript, circled, parenthesised,
# Ethiopic...), all listed here as ranges: `unicodedata.digit` is not None for exactly these.
_DIGIT = (
    "\\d\u00b2\u00b3\u00b9\u1369-\u1371\u19da\u2070\u2074-\u2079\u2080-\u2089\u2460-\u2468"
    "\u2474-\u247c\u2488-\u2490\u24ea\u24f5-\u24fd\u24ff\u2776-\u277e\u2780-\u2788\u278a-\u2792"
    "\U00010a40-\U00010a43\U00010e60-\U00010e68\U00011052-\U0001105a\U0001f100-\U0001f10a"
)
# What people put between the groups of a number: spaces, dots, dashes, slashes, parentheses,
# brackets, underscores (and their fullwidth and typographic forms). Colons and commas are not
# among them, so clock times ("16:00") and lists ("20, 30") stay as written.
_SEPARATOR = (
    "\\s.\\-\u2010-\u2015\u2212/\\\\()\\[\\]_\u00b7\uff08\uff09\uff0d\uff0e\uff0f\uff3b\uff3c\uff3d\uff3f"
)
MIN_DIGITS = 7
KEEP = 2
# No word boundary on either side: `tel0810000003` and `mama243810000001` are numbers too; any
# number of separators between two digits (`+243 (0) 81-000.0001`, `081 - 000 - 0003`). The
# separators are possessive (`*+`): they never hold a digit, so nothing is worth backtracking into.
_RUN = re.compile(rf"[+\uff0b]?[{_DIGIT}](?:[{_SEPARATOR}]*+[{_DIGIT}]){{{MIN_DIGITS - 1},}}")
_COUNTRY_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _masked(match: re.Match[str]) -> str:
    """The run with every digit but the last 2 (and a country code after `+`) starred, in place.

    Separators stay where they were, so the text keeps its shape: a count written after a number
    (`0810000003 20 hommes` -> `********** 20 hommes`) is still read as a count.
    """
    run = match.group(0)
    at = [i for i, ch in enumerate(run) if unicodedata.digit(ch, None) is not None]
    shown = set(at[-KEEP:])
    if run[0] in "+\uff0b":  # a country code says which network, not who: readers keep it
        lead = "".join(str(unicodedata.digit(run[i])) for i in at[:3])
        size = next((n for n in (1, 2, 3) if lead[:n] in _COUNTRY_CODES), 0)
        shown.update(at[:size])
    hidden = set(at) - shown
    return "".join("*" if i in hidden else ch for i, ch in enumerate(run))


def scrub(text: str) -> str:
    """Mask every run of 7 or more digits in free text, keeping the last 2 (`+243 ** *** **01`)."""
    return _RUN.sub(_masked, text)


def scrub_data(value: Any) -> Any:
    """Scrub every string inside plain data (dicts, lists, tuples); numbers, enums and times stay."""
    if isinstance(value, Enum):  # a code's own value (a status, a purpose): no reporter wrote it
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(k): scrub_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_data(v) for v in value)
    return value
