"""The dashboard's words in each language: English is the key, `locales/<lang>.toml` the translation.

A word missing from a language is shown in English (tests/test_dashboard.py checks that French has
every word the templates use); adding a language is adding a file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from functools import cache
from importlib import resources

DEFAULT = "en"


@cache
def catalog(language: str) -> dict[str, str]:
    """The translations of one language (empty for English, or a language with no file)."""
    if language == DEFAULT or not language.isalpha():
        return {}
    path = resources.files("app") / "locales" / f"{language}.toml"
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in table.get("words", {}).items()}


def languages() -> list[str]:
    """The languages the dashboard can be shown in, English first."""
    found = sorted(
        entry.name.removesuffix(".toml")
        for entry in (resources.files("app") / "locales").iterdir()
        if entry.name.endswith(".toml")
    )
    return [DEFAULT, *found]


def translator(language: str) -> Callable[..., str]:
    """A `t(text, **values)` for templates: the text in `language` (else English), values filled in."""
    words = catalog(language)

    def t(text: str, **values: object) -> str:
        said = words.get(text, text)
        return said.format(**values) if values else said

    return t
