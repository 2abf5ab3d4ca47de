"""Text streaming (tfmr.textstream): pieces join to the one-shot decode, and a UTF-8 character
split over byte-level tokens comes out whole, once its last byte is chosen; the CLI reads the
prompt from a file or stdin."""

from __future__ import annotations

import io

import pytest
import torch

from tfmr import ModelConfig, RunConfig, build_model, checkpoint
from tfmr.cli import main
from tfmr.config import to_dict
from tfmr.decode import greedy
from tfmr.textstream import TextPieces, stream_text
from tfmr.tokenizers import BPE, CharTokenizer

TEXT = "東京 café 🙂 naïve 東京 café"


@pytest.fixture(scope="module")
def bpe():
    return BPE.train(
        TEXT * 3, vocab_size=262, pattern="gpt2"
    )  # few merges: most characters stay split


def _pieces(tokenizer, ids):
    p = TextPieces(tokenizer)
    out = [p.add(i) for i in ids]
    return out, p.finish()


def test_split_characters_come_out_whole_when_their_last_byte_arrives(bpe):
    ids = bpe.encode("🙂東")
    assert [len(bpe.token_bytes(i)) for i in ids] == [
        1,
        1,
        1,
        1,
        1,
        2,
    ]  # 🙂: 4 tokens; 東: 1 byte + 2 bytes
    pieces, rest = _pieces(bpe, ids)
    assert pieces == ["", "", "", "🙂", "", "東"] and rest == ""


@pytest.mark.parametrize("text", [TEXT, "a\u00e9\u6771", "x 🙂🙃 y"])
def test_pieces_join_to_the_one_shot_decode_and_never_show_a_replacement(bpe, text):
    ids = bpe.encode(text)
    pieces, rest = _pieces(bpe, ids)
    assert "".join(pieces) + rest == text == bpe.decode(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_bytes_that_never_complete_a_character_become_what_decode_gives(bpe):
    ids = [0xE6, 0x9D, ord("a"), 0xF0]  # a cut 3-byte character, then 'a', then a lone lead byte
    pieces, rest = _pieces(bpe, ids)
    assert "".join(pieces) + rest == bpe.decode(ids) == "\ufffda\ufffd"


def test_tokenizers_without_bytes_use_the_decode_suffix_rule():
    char = CharTokenizer.train(TEXT)
    ids = char.encode(TEXT)
    pieces, rest = _pieces(char, ids)
    assert pieces == list(TEXT) and rest == ""


def test_tokenizers_library_wrapper_streams_whole_characters(bpe):
    pytest.importorskip("tokenizers")
    from tfmr.tokenizers.hf import HFTokenizer, to_hf_json

    hf = HFTokenizer(to_hf_json(bpe))
    ids = hf.encode(TEXT)
    assert ids == bpe.encode(TEXT)
    pieces, rest = _pieces(hf, ids)
    assert "".join(pieces) + rest == TEXT and not any("\ufffd" in p for p in pieces)


def _tiny(bpe):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=bpe.vocab_size, dim=32, layers=1, heads=2, context=64)
    return build_model(cfg).eval(), cfg


def test_stream_text_joins_to_the_greedy_continuation(bpe):
    model, _ = _tiny(bpe)
    ids = torch.tensor([bpe.encode("東京")])
    text = "".join(stream_text(model, bpe, ids, 12, temperature=0.0))
    assert text == bpe.decode(greedy(model, ids, 12)[0, ids.shape[1] :].tolist())


def test_generate_reads_the_prompt_from_a_file_and_from_stdin(bpe, tmp_path, capsys, monkeypatch):
    model, cfg = _tiny(bpe)
    checkpoint.save(tmp_path / "ckpt", model, to_dict(RunConfig(model=cfg)), bpe)
    args = [
        "lm",
        "generate",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
    ]
    assert main([*args, "--prompt", "東京 café"]) == 0
    direct = capsys.readouterr().out
    assert direct.startswith("東京 café")
    (tmp_path / "p.txt").write_text("東京 café", encoding="utf-8")
    assert main([*args, "--prompt-file", str(tmp_path / "p.txt")]) == 0
    assert capsys.readouterr().out == direct
    monkeypatch.setattr("sys.stdin", io.StringIO("東京 café"))
    assert main([*args, "--prompt", "-"]) == 0
    assert capsys.readouterr().out == direct
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    assert main([*args, "--prompt-file", str(tmp_path / "bad.txt")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
