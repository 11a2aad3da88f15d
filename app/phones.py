"""Phone numbers: E.164 normalisation and masking. A reporter's number can get them killed if it leaks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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


# 7 to 15 digits, maybe with a leading + and single spaces or dashes: anything that may be a phone
# number. Dotted runs (addresses, versions, times) are left alone.
_PHONE_RE = re.compile(r"(?<![\w.:])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ \-]?\d){6,14}(?!\w|[.:]\w)")


def scrub(text: str) -> str:
    """Mask every phone-number-like run in free text (log lines)."""
    return _PHONE_RE.sub(lambda m: mask(m.group(0)) or "", text)
