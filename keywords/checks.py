"""What a grammar must hold beyond what loading checks: every reply sent as one SMS."""

from __future__ import annotations

from keywords.grammar import REPLIES, Grammar
from keywords.sms import encoding, segments

# The longest values the code puts in a reply's placeholders.
WORST = {
    "code": "K123456",
    "category": "WATU WENYE SILAHA",
    "place": "Kanyabayonga Iga Barriere",
    "who": "Col. Fatou Diallo-Traore",
    "people": " 120",
    "reports": "12",
    "time": "08:14",
    "area": "Kanyabayonga-Iga Barriere",
    "count": "120",
    "sender": "+243*****4567",
    "minutes": "1440",
    "names": "Dieudonne Lonu-Kasereka +119",  # the code adds names only while the SMS stays one segment
}


def worst_reply(grammar: Grammar, key: str) -> str:
    """The reply `key` with the longest values the code gives it (the grammar's longest category name)."""
    values = {name: WORST[name] for name in REPLIES[key]}
    if key == "join":
        values["place"] = f" ({WORST['place']})"
    if "category" in values:
        values["category"] = max(grammar.category_names.values(), key=len)
    return grammar.replies[key].format(**values)


def long_replies(grammar: Grammar) -> list[tuple[str, str]]:
    """Name each reply sent as more than one SMS with the longest values, and say how many."""
    problems = []
    for key in sorted(REPLIES):
        text = worst_reply(grammar, key)
        if segments(text) > 1:
            reason = f"{segments(text)} SMS ({encoding(text)}) with the longest values: {text}"
            problems.append((f"replies.{key}", reason))
    return problems
