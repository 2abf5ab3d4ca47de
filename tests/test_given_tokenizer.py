"""Your own tokenizer in training: `--set data.tokenizer.path=DIR` encodes the data with a saved
tokenizer (from `tfmr tokenizer train`, or a Hugging Face tokenizer.json) instead of training one,
and the checkpoint carries it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfmr.cli import main
from tfmr.tokenizers import BPE, load

TEXT = (
    "To be, or not to be: that is the question. 東京の夜 🙂 Whether 'tis nobler in the mind.\n" * 40
)


def _train(tmp_path, tokenizer_path, capsys):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    code = main(
        [
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "text.txt"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--set",
            "train.steps=2",
            "--set",
            f"data.tokenizer.path={tokenizer_path}",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (cached,) = (tmp_path / "cache").glob("*/train.bin")
    meta = json.loads((cached.parent / "meta.json").read_text())
    ids = np.concatenate(
        [np.fromfile(cached.parent / f"{s}.bin", dtype=meta["dtype"]) for s in ("train", "val")]
    )
    return ids.tolist(), load(tmp_path / "run" / "checkpoint")


def test_a_tokenizer_from_tfmr_tokenizer_train_encodes_the_training_data(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--data",
                str(tmp_path / "corpus.txt"),
                "--vocab-size",
                "300",
                "--out",
                str(tmp_path / "tok"),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    own = load(tmp_path / "tok")
    ids, saved = _train(tmp_path, tmp_path / "tok", capsys)
    assert ids == own.encode(TEXT)
    assert isinstance(saved, BPE) and saved.mergeable_ranks() == own.mergeable_ranks()


def test_a_hugging_face_tokenizer_json_encodes_the_training_data(tmp_path, capsys):
    tokenizers = pytest.importorskip("tokenizers")
    from tfmr.tokenizers.hf import HFTokenizer, to_hf_json

    data = to_hf_json(BPE.train(TEXT, vocab_size=290, pattern="gpt2"))
    data["normalizer"] = {
        "type": "Lowercase"
    }  # not tfmr's BPE any more: the tokenizers library encodes
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    ids, saved = _train(tmp_path, tmp_path / "tokenizer.json", capsys)
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert ids == reference.encode(TEXT).ids
    assert isinstance(saved, HFTokenizer) and saved.encode("To BE") == reference.encode("to be").ids


def test_other_options_beside_path_are_refused(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    code = main(
        [
            "lm",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "text.txt"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--set",
            "data.tokenizer=bpe",
            "--set",
            "data.tokenizer.vocab_size=300",
            "--set",
            f"data.tokenizer.path={tmp_path}",
        ]
    )
    assert code == 2 and "drop the options ['vocab_size']" in capsys.readouterr().err
