"""One command grammar, `tfmr NOUN VERB [flags]` (docs/cli.md): the old spellings still run, as
the new ones, after one note naming the new spelling; each verb's parser owns its flags; every
flag's --help shows its default; docs/cli.md lists every command there is."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tfmr.cli import build_parser, main, spellings
from tfmr.cli import g2p as cli_g2p

ROOT = Path(__file__).resolve().parents[1]

# (old spelling, today's spelling, the note's old and new words)
OLD = [
    (["train", "--preset", "tiny"], ["lm", "train", "--preset", "tiny"], "train", "lm train"),
    (
        ["generate", "--checkpoint", "C", "--beam", "3"],
        ["lm", "generate", "--checkpoint", "C", "--beam", "3"],
        "generate",
        "lm generate",
    ),
    (
        ["eval", "decoding", "--checkpoint", "C"],
        ["lm", "eval", "decoding", "--checkpoint", "C"],
        "eval",
        "lm eval",
    ),
    (
        ["finetune", "--checkpoint", "C", "--lora", "rank=2", "--data", "t.txt"],
        ["lm", "finetune", "--checkpoint", "C", "--lora", "rank=2", "--data", "t.txt"],
        "finetune",
        "lm finetune",
    ),
    (
        ["average", "--out", "O", "C1", "C2"],
        ["checkpoint", "average", "--out", "O", "C1", "C2"],
        "average",
        "checkpoint average",
    ),
    (
        ["quantize", "--checkpoint", "C", "--to", "int8", "--out", "O"],
        ["checkpoint", "quantize", "--checkpoint", "C", "--to", "int8", "--out", "O"],
        "quantize",
        "checkpoint quantize",
    ),
    (
        ["convert", "--from-hf", "H", "--out", "O"],
        ["checkpoint", "import", "hf", "--checkpoint", "H", "--out", "O"],
        "convert --from-hf",
        "checkpoint import hf --checkpoint",
    ),
    (
        ["convert", "--out", "O", "--from-hf=H"],
        ["checkpoint", "import", "hf", "--checkpoint", "H", "--out", "O"],
        "convert --from-hf",
        "checkpoint import hf --checkpoint",
    ),
    (
        ["export", "--to", "hf", "--checkpoint", "C", "--out", "O", "--family", "llama"],
        ["checkpoint", "export", "hf", "--checkpoint", "C", "--out", "O", "--family", "llama"],
        "export --to hf",
        "checkpoint export hf",
    ),
    (
        ["export", "--checkpoint", "C", "--to=onnx", "--out", "O"],
        ["checkpoint", "export", "onnx", "--checkpoint", "C", "--out", "O"],
        "export --to onnx",
        "checkpoint export onnx",
    ),
    (
        ["serve", "--port", "0", "--g2p"],
        ["g2p", "serve", "--port", "0"],
        "serve --g2p",
        "g2p serve",
    ),
    (
        ["copytask", "--steps", "2"],
        ["experiment", "copytask", "--steps", "2"],
        "copytask",
        "experiment copytask",
    ),
    (["g2p", "predict", "train"], ["g2p", "pronounce", "train"], "g2p predict", "g2p pronounce"),
]


def _parsers(parser: argparse.ArgumentParser, path=("tfmr",)):
    """(command words, parser) for the parser and every subparser under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def _leaves() -> list[tuple[str, ...]]:
    return [
        path
        for path, p in _parsers(build_parser())
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
    ]


def _parsed(argv) -> dict:
    return vars(build_parser().parse_args(argv))


# ----------------------------------------------------------------------------- old spellings
@pytest.mark.parametrize(
    "old, new, old_words, new_words",
    OLD,
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_an_old_spelling_is_the_new_command_with_one_note(capsys, old, new, old_words, new_words):
    assert spellings.modern(old) == new
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"tfmr: note: 'tfmr {old_words}' is now 'tfmr {new_words}'; the old spelling still works for now"
    ]
    assert _parsed(new) == _parsed(spellings.modern(old))  # the same command, the same flags
    assert _parsed(new)["func"] is not None


def test_todays_spellings_pass_unchanged_and_quietly(capsys):
    leaves = _leaves()
    assert len(leaves) > 40 and ("tfmr", "checkpoint", "import", "hf") in leaves
    for path in leaves:
        argv = list(path[1:])
        assert spellings.modern(argv) == argv, argv
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "old, new",
    [
        (
            ["train", "--preset", "tiny", "--set", "model.haeds=8", "--out", "{tmp}/run"],
            ["lm", "train", "--preset", "tiny", "--set", "model.haeds=8", "--out", "{tmp}/run"],
        ),
        (
            ["average", "--last", "0", "--out", "{tmp}/avg", "{tmp}"],
            ["checkpoint", "average", "--last", "0", "--out", "{tmp}/avg", "{tmp}"],
        ),
        (
            ["convert", "--from-hf", "{tmp}/nothing", "--out", "{tmp}/ck"],
            ["checkpoint", "import", "hf", "--checkpoint", "{tmp}/nothing", "--out", "{tmp}/ck"],
        ),
    ],
    ids=["train", "average", "convert"],
)
def test_an_old_spelling_exits_as_the_new_one_and_says_the_same_error(capsys, tmp_path, old, new):
    old, new = ([a.replace("{tmp}", str(tmp_path)) for a in argv] for argv in (old, new))
    assert main(new) == 2
    new_err = capsys.readouterr().err.splitlines()
    assert main(old) == 2
    old_err = capsys.readouterr().err.splitlines()
    assert len(new_err) == 1 and new_err[0].startswith("tfmr: error: ")
    assert len(old_err) == 2 and old_err[0].startswith("tfmr: note: ") and old_err[1:] == new_err


@pytest.mark.parametrize(
    "argv, prog",
    [
        (["train", "--help"], "tfmr lm train"),
        (["export", "--to", "onnx", "--help"], "tfmr checkpoint export onnx"),
    ],
)
def test_an_old_spellings_help_is_the_new_commands(capsys, argv, prog):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert (
        e.value.code == 0 and out.startswith(f"usage: {prog} ") and err.startswith("tfmr: note: ")
    )


def test_serve_without_g2p_is_still_an_error_in_one_line(capsys):
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("tfmr: error: say what to serve: tfmr g2p serve")


def test_an_old_spelling_in_a_real_process():
    r = subprocess.run(
        [sys.executable, "-m", "tfmr", "average", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: tfmr checkpoint average ")
    assert r.stderr == (
        "tfmr: note: 'tfmr average' is now 'tfmr checkpoint average'; the old spelling still works "
        "for now\n"
    )


# ----------------------------------------------------------------------------- structure
def test_g2p_words_are_the_pronounce_verb_and_the_verbs_are_the_parsers():
    g2p = dict(_parsers(build_parser()))[("tfmr", "g2p")]
    verbs = next(a for a in g2p._actions if isinstance(a, argparse._SubParsersAction))
    assert tuple(verbs.choices) == cli_g2p.VERBS  # what spellings.py tells words from
    args = build_parser().parse_args(spellings.modern(["g2p", "hello", "--beam", "2"]))
    assert args.func is cli_g2p.run_predict and args.words == ["hello"] and args.beam == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["checkpoint", "export", "onnx", "--checkpoint", "C", "--out", "O", "--family", "gpt2"],
            "unrecognized arguments: --family gpt2 (see `tfmr checkpoint export onnx --help`)",
        ),
        (["checkpoint", "export", "--checkpoint", "C", "--out", "O"], "(choose from 'hf', 'onnx')"),
        (
            ["lm", "generate", "--checkpoint", "C", "--preset", "tiny"],
            "unrecognized arguments: --preset tiny",
        ),
        (["lm"], "the following arguments are required: VERB"),
        (["nope"], "argument NOUN: invalid choice: 'nope'"),
    ],
)
def test_a_usage_mistake_is_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert (
        e.value.code == 2
        and len(err.splitlines()) == 1
        and err.startswith("tfmr: error: ")
        and message in err
    )


# ----------------------------------------------------------------------------- --help shows the defaults
def test_every_flags_help_shows_its_default():
    """Rule: a flag that takes a value and has a default other than None or an empty list shows that
    value in its --help line. Exempt: switches (store_true and the like take no value), flags whose
    default is None (not given: their help says in words what happens then), repeatable flags that
    start empty, and hidden flags."""
    checked, missing = 0, []
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.help == argparse.SUPPRESS:
                continue
            if action.default is None or action.default == []:
                continue
            checked += 1
            if str(action.default) not in (formatter._expand_help(action) if action.help else ""):
                missing.append(f"{' '.join(path)} {action.option_strings[-1]}")
    assert missing == [] and checked > 100


@pytest.mark.parametrize(
    "argv, shown",
    [
        (["lm", "train"], "(default: runs/train)"),
        (["g2p", "train"], "(default: runs/g2p)"),
        (["lm", "finetune"], "(default: runs/finetune)"),
        (["g2p", "finetune"], "(default: scst)"),
    ],
)
def test_help_prints_the_defaults_of_out_and_the_like(capsys, argv, shown):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    assert shown in " ".join(capsys.readouterr().out.split())  # as printed, line breaks aside


# ----------------------------------------------------------------------------- docs/cli.md
def test_docs_cli_lists_every_command_and_every_old_spelling():
    doc = (ROOT / "docs" / "cli.md").read_text()
    tree = doc[doc.index("## The whole tree") : doc.index("## Old spellings")]
    nouns, noun = {}, None
    for row in re.findall(r"^\| (`\w+`)? ?\| (.*?) \|", tree, re.M):
        noun = row[0].strip("`") or noun
        nouns.setdefault(noun, []).append(row[1])
    for path in _leaves():
        noun, verbs = path[1], " ".join(path[2:])
        cells = " ".join(nouns.get(noun, []))
        if noun in ("bench", "experiment"):
            assert "NAME" in cells, path
        elif verbs:
            assert f"`{verbs}`" in cells, path
        else:
            assert noun in nouns, path
    old_table = doc[doc.index("| old spelling | new spelling |") :]
    for _old, _, old_words, _ in OLD:
        assert f"`tfmr {old_words.split(' --')[0]}" in old_table, old_words
