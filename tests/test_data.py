"""Data: clear errors for unusable input, the embedded corpus, the token cache, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tfmr.config import Choice, DataConfig
from tfmr.data import Batches, DataError, embedded_corpus, prepare, read_text
from tfmr.tokenizers import CharTokenizer


def test_embedded_corpus_is_real_text():
    text = embedded_corpus()
    assert len(text) > 300_000
    assert "lambda" in text and "yield" in text and text.count("\n") > 5000


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"   \n\n", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "looks binary"),
        ("caf\u00e9".encode("latin-1"), "is not UTF-8 text (bad byte at offset 3)"),
    ],
)
def test_unusable_input_gets_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_text(path)


def test_folder_of_files_is_read_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert read_text(tmp_path) == "first\nsecond"


def test_second_prepare_reuses_the_cache(text_file, tmp_path, monkeypatch):
    cfg = DataConfig(path=str(text_file), tokenizer=Choice("char"))
    first = prepare(cfg, tmp_path / "cache", log=lambda *a: None)
    calls = []
    monkeypatch.setattr(CharTokenizer, "train", classmethod(lambda cls, text: calls.append(1)))
    second = prepare(cfg, tmp_path / "cache", log=lambda *a: None)
    assert calls == []  # no re-tokenization
    assert isinstance(
        second.train, np.ndarray
    )  # read whole (a small cache) or mapped: the same tokens
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    tok = second.tokenizer
    assert tok.decode(np.concatenate([second.train, second.val]).tolist()) == text_file.read_text()


def test_batches_are_shifted_windows_and_reproducible():
    ids = np.arange(100, dtype=np.uint16)
    a, b = Batches(ids, 8, 4, seed=1), Batches(ids, 8, 4, seed=1)
    x, y = a.next()
    assert x.shape == (4, 8) and torch.equal(y, x + 1)
    state = a.state()
    x2, _ = a.next()
    b.load_state(state)
    assert torch.equal(b.next()[0], x2)
