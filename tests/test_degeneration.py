"""Degeneration metrics: the paper's repetition rule on worked cases, self-BLEU equal to
sacrebleu's, Zipf's exponent recovered from a Zipfian sample, distinct-n by hand, and the
`tfmr lm eval decoding` report end to end."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tfmr import ModelConfig, build_model
from tfmr.degeneration import (
    Strategy,
    compare_strategies,
    distinct_n,
    ending_loop,
    held_out_windows,
    parse_strategy,
    repetition,
    self_bleu,
    write_report,
    zipf_coefficient,
)


def test_a_phrase_of_three_or_more_repeated_at_the_end_is_a_loop():
    loop = ending_loop([1, 2, 3, 4, 7, 8, 9, 7, 8, 9, 7, 8, 9])
    assert loop.phrase == [7, 8, 9] and loop.times == 3


def test_short_phrases_count_only_past_fifty_repeats():
    assert ending_loop([1, 2, 1, 2, 1, 2]) is None  # a 2-token phrase, 3 times
    assert ending_loop([4] * 10) is None  # one token 10 times: the paper does not call it a loop
    loop = ending_loop([3] + [4] * 51)
    assert loop.phrase == [4] and loop.times == 51


def test_a_repeat_in_the_middle_is_not_a_loop():
    assert ending_loop([7, 8, 9, 7, 8, 9, 1, 2, 3, 4]) is None
    assert ending_loop([5, 6, 7, 5, 6, 7, 9]) is None  # the last token breaks the cycle
    assert ending_loop([5, 6, 7, 5, 6, 7, 5, 6]).phrase == [7, 5, 6]  # a cycle seen from any phase
    assert (
        repetition([[1, 2, 3, 1, 2, 3], [1, 2, 3, 4], [9, 9, 9, 9], [5, 6, 7, 8, 5, 6, 7, 8]])
        == 0.5
    )


def _sacrebleu_self_bleu(gens):
    sacrebleu = pytest.importorskip("sacrebleu")
    bleu = sacrebleu.metrics.BLEU(
        tokenize="none", smooth_method="floor", smooth_value=0.1, effective_order=False
    )
    text = [" ".join(map(str, g)) for g in gens]
    scores = [
        bleu.sentence_score(text[i], text[:i] + text[i + 1 :]).score / 100 for i in range(len(text))
    ]
    return sum(scores) / len(scores)


def test_self_bleu_equals_sacrebleu_sentence_bleu_against_all_others():
    rng = random.Random(0)
    gens = [[rng.randrange(8) for _ in range(rng.choice([2, 3, 5, 9, 14, 20]))] for _ in range(25)]
    assert self_bleu(gens) == pytest.approx(_sacrebleu_self_bleu(gens), abs=1e-9)
    gens = [
        [rng.randrange(300) for _ in range(30)] for _ in range(10)
    ]  # few shared 4-grams: floor smoothing
    assert self_bleu(gens) == pytest.approx(_sacrebleu_self_bleu(gens), abs=1e-9)


def test_self_bleu_of_identical_generations_is_one():
    assert self_bleu([[1, 2, 3, 4, 5]] * 4) == pytest.approx(1.0)


def test_zipf_coefficient_recovers_the_exponent():
    for s in (0.8, 1.0, 1.3):
        counts = [round(1e5 * r**-s) for r in range(1, 101)]
        gens = [
            [tok] * c for tok, c in reversed(list(enumerate(counts)))
        ]  # token `tok` has rank tok + 1
        assert zipf_coefficient(gens) == pytest.approx(s, abs=0.005)


def test_distinct_n_by_hand():
    gens = [[1, 2, 3, 1, 2], [1, 2, 4]]
    assert distinct_n(gens, 1) == 4 / 8  # 1 2 3 4 of 8 tokens
    assert distinct_n(gens, 2) == 4 / 6  # (1,2) (2,3) (3,1) (2,4) of 6 bigrams


def test_strategy_specs_parse_and_bad_ones_say_what_is_valid():
    assert parse_strategy("greedy") == Strategy("greedy", temperature=0.0)
    assert parse_strategy("top_k=40,temperature=0.7") == Strategy(
        "top_k=40,temperature=0.7", top_k=40, temperature=0.7
    )
    assert parse_strategy("beam-size=4").beam_size == 4
    with pytest.raises(ValueError, match="keys beam_size, temperature, top_k"):
        parse_strategy("topk=40")


def test_comparison_scores_every_strategy_and_writes_table_json_and_plot(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=20, dim=32, layers=1, heads=2, context=32)).eval()
    ids = np.random.default_rng(1).integers(0, 20, 2000)
    windows = held_out_windows(ids, 8, 24, seed=0)
    assert windows.shape == (8, 24)
    strategies = [parse_strategy(s) for s in ("greedy", "beam_size=2", "top_p=0.9")]
    cmp = compare_strategies(
        model, windows, 8, strategies, decode_text=str, batch_size=3, log=lambda *_: None
    )
    assert [r["strategy"] for r in cmp.rows] == ["human", "greedy", "beam_size=2", "top_p=0.9"]
    greedy_row, human_row = cmp.rows[1], cmp.rows[0]
    assert (
        greedy_row["perplexity"] < human_row["perplexity"]
    )  # the model likes its own arg-max best
    files = write_report(cmp, tmp_path)
    assert "| greedy |" in files["table"].read_text()
    assert json.loads(files["json"].read_text())["setup"]["new_tokens"] == 16
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"


def test_eval_decoding_and_beam_generate_on_a_trained_checkpoint(text_file, tmp_path):
    run = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfmr",
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(text_file),
            "--out",
            str(run),
            "--no-progress",
            "--set",
            "train.steps=3",
            "--set",
            "data.val_fraction=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfmr",
            "lm",
            "eval",
            "decoding",
            "--checkpoint",
            str(run / "checkpoint"),
            "--prompts",
            "4",
            "--prompt-len",
            "6",
            "--new-tokens",
            "10",
            "--strategy",
            "greedy",
            "--strategy",
            "top_k=5",
            "--out",
            str(tmp_path / "eval"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "eval" / "decoding.md").read_text()
    assert "| human |" in table and "| greedy |" in table and "| top_k=5 |" in table
    assert (tmp_path / "eval" / "decoding.png").exists()
    g = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfmr",
            "lm",
            "generate",
            "--checkpoint",
            str(run / "checkpoint"),
            "--prompt",
            "To be",
            "--max-new-tokens",
            "8",
            "--beam",
            "3",
            "--n-best",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert g.returncode == 0, g.stderr
    parts = re.split(r"--- beam (\d) of 3, score -[\d.]+\n", g.stdout)
    assert parts[0] == "" and parts[1] == "1" and parts[3] == "2"
    assert all(
        text.startswith("To be") and len(text) == len("To be") + 8 + 1
        for text in (parts[2], parts[4])
    )
