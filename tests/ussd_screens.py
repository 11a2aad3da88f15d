"""The language screens of the USSD menu, as the shipped grammars make them (tests/test_ussd*.py).

Every grammar file is a language of the menu: the default first, then the others by code. The
names and the word "language" are written here as each screen shows them, so that a test reads
what a caller reads; the order and the numbers follow whatever grammars the package has.
"""

from __future__ import annotations

from app.services.ussd_menu import languages
from keywords.parser import Lexicon, lexicon

# As the screens show them (in GSM-7: "Francais", not "Français").
NAMES = {"fr": "Francais", "en": "English", "sw": "Kiswahili", "sg": "Sängö", "ln": "Lingala"}
WORD = {"fr": "Langue", "en": "Language", "sw": "Lugha", "sg": "Yanga", "ln": "Lokota"}


def order(lex: Lexicon | None = None) -> list[str]:
    return languages(lex or lexicon("fr"))


def pick(language: str, lex: Lexicon | None = None) -> str:
    """The number a caller presses for `language` on a language screen."""
    return str(order(lex).index(language) + 1)


def listed(lex: Lexicon | None = None) -> list[str]:
    """The language screens' lines: "1 Francais", "2 English", ..."""
    return [f"{i} {NAMES[lang]}" for i, lang in enumerate(order(lex), 1)]


def title(lex: Lexicon | None = None) -> str:
    """The first screen's title: the word "language" in every language, "Langue / Language / ..."."""
    return " / ".join(WORD[lang] for lang in order(lex))


def past_the_last(lex: Lexicon | None = None) -> str:
    """A number one past the last language."""
    return str(len(order(lex)) + 1)
