"""Grammar files are validated when loaded; replies fit one SMS in every language."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from keywords.checks import long_replies, worst_reply
from keywords.grammar import GRAMMAR_DIR, REPLIES, GrammarError, load_all, load_grammar
from keywords.parser import Lexicon, lexicon, parse
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
    bambara = text.replace('language = "fr"', 'language = "bm"').replace(
        'name = "Français"', 'name = "Bamanankan"'
    )
    bambara = bambara.replace("attack = [", 'attack = ["kelenkelen", "kelew", ')
    (folder / "bm.toml").write_text(bambara, encoding="utf-8")
    grammars, codes = load_all.__wrapped__(folder)  # type: ignore[attr-defined]
    lex = Lexicon(grammars, codes, "fr")
    result = parse("KELEW Bunia", lex=lex)
    assert (result.intent, result.category, result.language) == ("alert", "attack", "bm")


def deployment_grammar(folder: Path, language: str, edit: Callable[[str], str]) -> Path:
    """Write `language`.toml into a deployment's folder: the shipped French grammar, edited."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{language}.toml"
    path.write_text(edit((GRAMMAR_DIR / "fr.toml").read_text(encoding="utf-8")), encoding="utf-8")
    return path


def test_a_deployment_folder_adds_a_language(tmp_path: Path) -> None:
    def bm(text: str) -> str:  # Bambara, for a network in Mali: a language the package has not
        text = text.replace('language = "fr"', 'language = "bm"').replace(
            'name = "Français"', 'name = "Bamanankan"'
        )
        return text.replace("attack = [", 'attack = ["kelenkelen", "kelew", ')

    deployment_grammar(tmp_path / "extra", "bm", bm)
    lex = lexicon("fr", GRAMMAR_DIR, tmp_path / "extra")
    assert set(lex.grammars) == set(load_all()[0]) | {"bm"} and lex.codes == load_all()[1]
    result = parse("KELEW Bunia", lex=lex)
    assert (result.intent, result.category, result.language) == ("alert", "attack", "bm")
    assert parse("KELEW Bunia").intent != "alert"  # the package's own lexicon is untouched


def test_a_deployment_folder_replaces_a_shipped_grammar(tmp_path: Path) -> None:
    deployment_grammar(
        tmp_path / "extra", "fr", lambda s: s.replace("{code} recu. Merci.", "{code} bien note.")
    )
    grammars, _ = load_all(GRAMMAR_DIR, tmp_path / "extra")
    assert (
        grammars["fr"].replies["ack"] == "{code} bien note."
        and grammars["fr"].path.parent == tmp_path / "extra"
    )
    assert (
        grammars["sw"] == load_all()[0]["sw"] and load_all()[0]["fr"].replies["ack"] == "{code} recu. Merci."
    )


@pytest.mark.parametrize(
    ("make", "named", "reason"),
    [
        (lambda folder: folder / "missing", "missing", "not a folder"),
        (lambda folder: folder, "extra", "no grammar file (xx.toml)"),
    ],
)
def test_a_deployment_folder_that_holds_no_grammar_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], named: str, reason: str
) -> None:
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "notes.txt").write_text("ln.toml next week", encoding="utf-8")
    with pytest.raises(GrammarError) as err:
        load_all(GRAMMAR_DIR, make(tmp_path / "extra"))
    assert (err.value.path.name, err.value.reason) == (named, reason)


def test_a_card_in_a_deployment_folder_is_refused(tmp_path: Path) -> None:
    deployment_grammar(tmp_path / "extra", "fr", lambda s: s)
    shutil.copy(GRAMMAR_DIR / "card.toml", tmp_path / "extra" / "card.toml")
    with pytest.raises(GrammarError, match=r"^card\.toml: -: the card's codes are Kengele's own"):
        load_all(GRAMMAR_DIR, tmp_path / "extra")


def test_a_reply_of_two_sms_is_named(tmp_path: Path) -> None:
    path = deployment_grammar(
        tmp_path, "fr", lambda s: s.replace("{code} recu. Merci.", "{code} recu. " + "Merci. " * 30)
    )
    ((key, reason),) = long_replies(load_grammar(path))
    assert key == "replies.ack" and reason.startswith(
        "2 SMS (GSM-7) with the longest values: K123456 recu. Merci."
    )


@pytest.mark.parametrize("language", sorted(load_all()[0]))
@pytest.mark.parametrize("key", sorted(REPLIES))
def test_every_reply_fits_one_segment(language: str, key: str) -> None:
    grammar = load_all()[0][language]
    text = worst_reply(grammar, key)
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
