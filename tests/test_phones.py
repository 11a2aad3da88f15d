"""The scrubber: every run of 7 or more digits is masked, however it is written; nothing else is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.enums import Precision
from app.phones import mask, scrub, scrub_data
from app.schemas import AlertPublic, for_viewer
from tests import leaks

MASKED = [
    # the leaks of issue 12
    ("A2 tel0810000003 Lopa", "A2 tel********03 Lopa"),
    ("A4 Largu +243.810.000.001", "A4 Largu +243.***.***.*01"),
    ("A3 Oicha appelez 081.000.0003", "A3 Oicha appelez ***.***.**03"),
    ("mama243810000001", "mama**********01"),
    ("chez0810000009", "chez********09"),
    # separators and their combinations
    ("+243 (0) 81-000.0001", "+243 (*) **-***.**01"),
    ("(081) 000 0001.", "(***) *** **01."),
    ("081 - 000 - 0003 svp", "*** - *** - **03 svp"),
    ("081/000/0003", "***/***/**03"),
    ("+243\u00a081\u00a0000\u00a00001", "+243\u00a0**\u00a0***\u00a0**01"),
    ("081\u2013000\u20130003", "***\u2013***\u2013**03"),
    ("0 8 1 0 0 0 0 0 0 3", "* * * * * * * * 0 3"),
    ("081_000_0003", "***_***_**03"),
    # prefixes and glue on either side
    ("tel:+243810000001", "tel:+243*******01"),
    ("TEL0810000003", "TEL********03"),
    ("0810000003mama", "********03mama"),
    ("appelez:0810000003!", "appelez:********03!"),
    ("00243810000001", "************01"),
    # other digits than ASCII
    ("\uff10\uff18\uff11\uff10\uff10\uff10\uff10\uff10\uff10\uff13", "********\uff10\uff13"),  # fullwidth
    (
        "+\u0662\u0664\u0663\u0668\u0661\u0660\u0660\u0660\u0660\u0660\u0660\u0661",
        "+\u0662\u0664\u0663*******\u0660\u0661",
    ),  # Arabic-Indic
    ("\u2460\u2461\u2462\u2463\u2464\u2465\u2466", "*****\u2465\u2466"),  # circled
    # other countries keep their own code
    ("+1 (202) 555-0143", "+1 (***) ***-**43"),
    ("+223 76 12 34 56", "+223 ** ** ** 56"),
    # exactly seven digits is a number; a date is one too (8 digits with dashes), see README
    ("1234567", "*****67"),
    ("le 2026-11-20", "le ****-**-20"),
    ("20/11/2026", "**/**/**26"),
    # a count right after a number joins its run; separators stay, so it still reads as a count
    ("0810000003 20 hommes", "********** 20 hommes"),
    ("K12 attaque chez0810000009 - 2 rapports", "K12 attaque chez*********9 - 2 rapports"),
]

KEPT = [
    "A1 Djugu 20",
    "ALERTE ATTAQUE Djugu 20 hommes armes 16:00",
    "123456",
    "12 345",
    "K42 A10 a3 fataki",
    "16:00 - 18:30",
    "http://127.0.0.1:8000/api/v1/alerts",
    "lat 1.922, lon 30.501",
    "20, 30, 40, 50 morts",
    "+243*****4567",  # already masked: masking twice changes nothing
    "",
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_numbers_are_masked_keeping_the_last_two_digits(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_what_is_not_a_number_stays(text: str) -> None:
    assert scrub(text) == text


def test_mask_of_a_sender_is_the_contracts() -> None:
    assert mask("+243812344567") == "+243*****4567"
    assert mask("+254700000001") == "+254*****0001"
    assert mask("0812344567") == "******4567"
    assert mask(None) is None


def test_plain_data_and_views_are_scrubbed_throughout() -> None:
    data = {"count": 20, "words": ["chez0810000009", "mama"], "0810000009": (1, "081 000 0009")}
    assert scrub_data(data) == {
        "count": 20,
        "words": ["chez********09", "mama"],
        "********09": (1, "*** *** **09"),
    }
    view = AlertPublic.model_validate(
        {
            "id": 1,
            "incident_id": 2,
            "message_id": 3,
            "category": "attack",
            "severity": "high",
            "place_name": "chez0810000009",
            "place_query": "chez0810000009",
            "lat": None,
            "lon": None,
            "precision": Precision.UNKNOWN,
            "language": "fr",
            "sender": "+243*****0009",
            "reported_at": "2026-11-20T07:30:00Z",
            "text": "A1 chez0810000009",
            "details": {"words": ["tel0810000009"]},
            "confidence": 0.9,
        }
    )
    out = for_viewer(view)
    assert (out.place_name, out.place_query, out.text) == ("chez********09",) * 2 + ("A1 chez********09",)
    assert out.details == {"words": ["tel********09"]} and out.sender == "+243*****0009"
    assert out.precision is Precision.UNKNOWN and out.reported_at.year == 2026


# -- any phone, any notation, anywhere in a text --------------------------------------------------
WORDS = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "P", "Zs"), exclude_characters="\x00"), max_size=12
)
GLUE = st.text(st.characters(categories=("L",)), max_size=5)


@settings(max_examples=500, deadline=None)
@given(
    phone=leaks.phones(),
    notation=st.sampled_from(sorted(leaks.NOTATIONS)),
    before=WORDS,
    after=WORDS,
    left=GLUE,
    right=GLUE,
)
def test_no_notation_anywhere_survives_the_scrubber(
    phone: str, notation: str, before: str, after: str, left: str, right: str
) -> None:
    written = leaks.NOTATIONS[notation](phone)
    text = f"{before} {left}{written}{right} {after}"
    assert leaks.found(text, [phone]), "the detector must see the raw number"
    out = scrub(text)
    assert not leaks.found(out, [phone]), (text, out)
    assert not leaks.unscrubbed(out) and scrub(out) == out


def test_every_character_with_a_digit_value_counts_as_a_digit() -> None:
    """Whatever a phone's keyboard or a copy-paste gives (fullwidth, circled, Ethiopic) is counted."""
    import sys
    import unicodedata

    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if unicodedata.digit(ch, None) is not None:
            assert scrub(ch * 7) == "*" * 5 + ch * 2, hex(code)
