"""Which language to write to someone in: one rule for replies, forwards, notices, check-ins, USSD."""

from __future__ import annotations

from app.phones import country
from keywords.parser import Lexicon


def language_for(
    *, lexicon: Lexicon, roster: str | None = None, message: str | None = None, phone: str | None = None
) -> str:
    """Choose a language: the roster's, else the message's, else the number's country's, else the default.

    A language without a grammar is passed over, so a grammar taken away never leaves anyone
    without an answer. `phone` is for a number the roster does not know: a registered person
    without a language is written to in the default one, as their roster entry says nothing else.
    """
    for language in (roster, message):
        if language is not None and language in lexicon.grammars:
            return language
    by_country = lexicon.language_of_country(country(phone)) if phone else None
    return by_country or lexicon.default_language
