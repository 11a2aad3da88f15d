"""Grammar files are validated when loaded; replies fit one SMS in every language."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from keywords.grammar import GRAMMAR_DIR, REPLIES, GrammarError, load_all, load_grammar
from keywords.parser import Lexicon, parse
from keywords.sms import encoding, fit_one, segments


def copy_grammars(tmp_path: Path) -> Path:
    target = tmp_path / "grammars"
    shutil.copytree(GRAMMAR_DIR, target)
    return target


@pytest.mark.parametrize(
    ("edit", "key", "reason"),
    [
        (lambda s: s.replace('language = "fr"', 'language = "french"'), "language", "ISO 639"),
        (
            lambda s: s.replace("[categories]\n", '[categories]\nweather = ["pluie"]\n'),
            "categories.weather",
            "not a category",
        ),
        (lambda s: s.replace("attack = [", "attack_typo = ["), "categories.attack_typo", "not a category"),
        (
            lambda s: s.replace('help = ["aide"', 'help = [42, "aide"'),
            "commands.help",
            "not a non-empty string",
        ),
        (
            lambda s: s.replace('ack = "{code} recu. Merci."', 'ack = "{code} recu par {officer}."'),
            "replies.ack",
            "placeholder",
        ),
        (lambda s: s.replace("no_incident = ", "no_incident_x = "), "replies.no_incident", "missing"),
        (lambda s: s.replace("forward_one = ", "forward_one = 1 #"), "replies.forward_one", "missing"),
        (lambda s: s.replace("vingt = 20", "vingt = -20"), "numbers.vingt", "whole number"),
        (lambda s: s + "\n[[[broken", "-", "not TOML"),
    ],
)
def test_a_broken_file_is_refused_with_file_key_and_reason(
    tmp_path: Path, edit, key: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    folder = copy_grammars(tmp_path)
    path = folder / "fr.toml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(GrammarError) as err:
        load_grammar(path)
    assert err.value.path.name == "fr.toml" and err.value.key == key and reason in err.value.reason
    assert str(err.value).startswith(f"fr.toml: {key}: ")


def test_a_grammar_without_the_singular_templates_uses_the_plural_ones(tmp_path: Path) -> None:
    """A grammar written before forward_one/update_one existed still loads: '1 rapports' over no grammar."""
    folder = copy_grammars(tmp_path)
    path = folder / "fr.toml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text(
        "".join(x for x in lines if not x.startswith(("forward_one", "update_one"))), encoding="utf-8"
    )
    grammar = load_grammar(path)
    assert grammar.replies["forward_one"] == grammar.replies["forward"]
    assert grammar.replies["update_one"] == grammar.replies["update"]
    assert "{reports} rapports" in grammar.replies["forward_one"]


def test_file_name_must_match_language(tmp_path: Path) -> None:
    folder = copy_grammars(tmp_path)
    (folder / "fr.toml").rename(folder / "ln.toml")
    with pytest.raises(GrammarError, match=r"ln\.toml: language"):
        load_all.__wrapped__(folder)  # type: ignore[attr-defined]


def test_adding_a_language_is_adding_a_file(tmp_path: Path) -> None:
    folder = copy_grammars(tmp_path)
    text = (folder / "fr.toml").read_text(encoding="utf-8")
    lingala = text.replace('language = "fr"', 'language = "ln"').replace(
        'name = "Français"', 'name = "Lingala"'
    )
    lingala = lingala.replace("attack = [", 'attack = ["etumba", "kobunda", ')
    (folder / "ln.toml").write_text(lingala, encoding="utf-8")
    grammars, codes = load_all.__wrapped__(folder)  # type: ignore[attr-defined]
    lex = Lexicon(grammars, codes, "fr")
    result = parse("ETUMBA na Bunia", lex=lex)
    assert (result.intent, result.category, result.language) == ("alert", "attack", "ln")


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


@pytest.mark.parametrize("language", sorted(load_all()[0]))
@pytest.mark.parametrize("key", sorted(REPLIES))
def test_every_reply_fits_one_segment(language: str, key: str) -> None:
    grammar = load_all()[0][language]
    values = {name: WORST[name] for name in REPLIES[key]}
    if key == "join":
        values["place"] = f" ({WORST['place']})"
    for name in ("category",):
        if name in values:
            values[name] = max(grammar.category_names.values(), key=len)
    text = grammar.replies[key].format(**values)
    assert segments(text) == 1, f"{language}.{key} is {segments(text)} segments ({encoding(text)}): {text}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("é" * 160, 1),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("[" * 81, 2),
        ("ç" * 70, 1),
        ("ç" * 71, 2),
        ("ê" * 134, 2),
        ("ê" * 135, 3),
        ("’" + "a" * 69, 1),
        ("🔥" * 35, 1),
        ("🔥" * 36, 2),
    ],
)
def test_segments(text: str, expected: int) -> None:
    assert segments(text) == expected


@pytest.mark.parametrize(
    "text", ["Alerte recue: K1 " + "Djugu " * 40, "Tahadhari ç " * 20, "🔥" * 100, "x" * 400]
)
def test_fit_one(text: str) -> None:
    cut = fit_one(text)
    assert segments(cut) == 1 and text.startswith(cut) and len(cut) > 0
