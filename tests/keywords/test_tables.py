"""Every grammar has a table of what people text; one harness checks them all."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from keywords.grammar import load_all
from keywords.parser import SenderContext, parse

TABLES = Path(__file__).parent / "tables"
MIN_CASES = 60


def cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(TABLES.glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            out.append((path.stem, case))
    return out


def test_every_grammar_has_a_table_of_at_least_60_cases() -> None:
    grammars, _ = load_all()
    counts = {lang: sum(1 for lang2, _ in cases() if lang2 == lang) for lang in grammars}
    assert all(n >= MIN_CASES for n in counts.values()), counts


@pytest.mark.parametrize(("table", "case"), cases(), ids=[f"{t}:{c['text'][:40]}" for t, c in cases()])
def test_case(table: str, case: dict[str, Any]) -> None:
    context = SenderContext(
        role=case.get("role"), language=case.get("lang"), checkin_pending=case.get("pending", False)
    )
    result = parse(case["text"], context)
    got = {"intent": result.intent}
    expected = {"intent": case["intent"]}
    for field in ("category", "count", "time", "code", "language", "things", "offset", "needs_review"):
        if field in case:
            expected[field] = case[field]
            got[field] = getattr(result, field)
    if "place" in case:
        expected["place"] = case["place"]
        got["place"] = result.place_words
    assert got == expected, result
