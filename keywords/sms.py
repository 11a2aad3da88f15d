"""SMS segments: how many parts a text costs, counted as the network counts them.

GSM-7 (the `gsm0338` codec) fits 160 septets in one SMS and 153 per part once split; the
extension characters (`^ { } \\ [ ~ ] | €`) cost two. One character outside GSM-7 makes the whole
message UCS-2: 70 UTF-16 code units in one SMS, 67 per part (an emoji costs two).
"""

from __future__ import annotations

import math

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def gsm7_septets(text: str) -> int | None:
    """Septets of `text` in GSM-7, or None when it needs UCS-2."""
    try:
        return len(text.encode("gsm03.38"))
    except UnicodeEncodeError:
        return None


def encoding(text: str) -> str:
    return "GSM-7" if gsm7_septets(text) is not None else "UCS-2"


def segments(text: str) -> int:
    """How many SMS `text` is sent as (0 for the empty text)."""
    septets = gsm7_septets(text)
    if septets is not None:
        return 0 if septets == 0 else 1 if septets <= GSM7_SINGLE else math.ceil(septets / GSM7_PART)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= UCS2_SINGLE else math.ceil(units / UCS2_PART)


def fit_one(text: str) -> str:
    """`text` cut (at a word where possible) so that it is sent as one SMS."""
    if segments(text) <= 1:
        return text
    cut = text
    while segments(cut) > 1:
        cut = cut[: len(cut) - max(1, (len(cut) - GSM7_SINGLE) // 2 if encoding(cut) == "GSM-7" else 1)]
    space = cut.rfind(" ")
    return cut[:space] if space > len(cut) * 0.7 else cut
