"""`tfmr checkpoint export hf`: a tfmr checkpoint in GPT-2 or Llama shape becomes a folder that
transformers' AutoModelForCausalLM loads with the same logits, with a tokenizer.json that the
tokenizers library encodes like tfmr's BPE; settings no family expresses are one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tfmr import Choice, ModelConfig, RunConfig, build_model, checkpoint  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.config import to_dict  # noqa: E402
from tfmr.tokenizers import BPE  # noqa: E402

TEXT = "Export me to Hugging Face, s'il vous plaît: 東京 🙂 1234 tokens!\n" * 10
SHAPES = {
    "gpt2": dict(
        pos=Choice("learned"),
        norm=Choice("layernorm"),
        ffn=Choice("mlp", activation="gelu_tanh"),
        bias=True,
        tie_embeddings=True,
    ),
    "llama": dict(
        pos=Choice("rope", base=5000.0),
        norm=Choice("rmsnorm"),
        ffn=Choice("swiglu", hidden=40),
        bias=False,
        tie_embeddings=False,
        kv_heads=2,
    ),
    "mistral": dict(
        pos=Choice("rope"),
        norm=Choice("rmsnorm"),
        ffn=Choice("swiglu"),
        bias=False,
        tie_embeddings=True,
        attention_pattern=Choice("sliding", window=6),
    ),
}


def _checkpoint(tmp_path, shape: str, pattern="gpt2", specials=("<|endoftext|>",), **changes):
    tok = BPE.train(TEXT, vocab_size=280, pattern=pattern, special_tokens=list(specials))
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=32,
        layers=2,
        heads=4,
        context=32,
        init_std=0.3,
        **{**SHAPES[shape], **changes},
    )
    model = build_model(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a mapping mistake there shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    path = tmp_path / "ckpt"
    checkpoint.save(path, model, to_dict(RunConfig(model=cfg)), tok)
    return path, model, tok


@pytest.mark.parametrize(
    "shape,pattern", [("gpt2", "gpt2"), ("llama", "gpt4"), ("mistral", "gpt2")]
)
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, shape, pattern, capsys):
    path, model, tok = _checkpoint(tmp_path, shape, pattern)
    out = tmp_path / "hf"
    assert main(["checkpoint", "export", "hf", "--checkpoint", str(path), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == shape
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, tok.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    probe = TEXT[:80] + " unseen wörds ✓ <|endoftext|>"
    assert hf_tok(probe).input_ids == tok.encode(probe, allowed_special="all")
    assert hf_tok.decode(tok.encode(probe, allowed_special="all")) == probe


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(pos=Choice("alibi")), "pos 'alibi' (GPT-2 has 'learned')"),
        (dict(residual=Choice("deepnorm")), "residual 'deepnorm'"),
        (dict(arch="encoder"), "only decoder-only models"),
    ],
)
def test_settings_no_family_expresses_are_refused_in_one_line(tmp_path, capsys, changes, message):
    path, _, _ = _checkpoint(tmp_path, "gpt2", **changes)
    code = main(
        ["checkpoint", "export", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_round_trip_through_tfmr_reader_keeps_the_bpe(tmp_path):
    from tfmr.interop import from_pretrained

    path, model, tok = _checkpoint(tmp_path, "llama", "gpt4")
    assert (
        main(
            ["checkpoint", "export", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")]
        )
        == 0
    )
    back = from_pretrained(tmp_path / "hf")
    assert (
        isinstance(back.tokenizer, BPE)
        and back.tokenizer.mergeable_ranks() == tok.mergeable_ranks()
    )
    assert (
        back.tokenizer.pat_str == tok.pat_str
        and back.tokenizer.special_tokens == tok.special_tokens
    )


@pytest.mark.parametrize(
    "shape,specials,start,end",
    [
        (
            "gpt2",
            ["<|endoftext|>"],
            "<|endoftext|>",
            "<|endoftext|>",
        ),  # GPT-2's default would be 50256
        ("llama", ["<s>", "</s>", "<pad>"], "<s>", "</s>"),  # Llama's default would be 1 and 2
        ("gpt2", [], None, None),  # none in the tokenizer: none in the config
    ],
)
def test_start_and_end_ids_come_from_the_models_own_tokenizer(
    tmp_path, recwarn, shape, specials, start, end
):
    import logging

    path, _, tok = _checkpoint(tmp_path, shape, specials=specials)
    assert (
        main(["export", "--to", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")])
        == 0
    )
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    expected = [tok.special_tokens.get(start), tok.special_tokens.get(end)]
    assert [saved["bos_token_id"], saved["eos_token_id"]] == expected
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    recwarn.clear()
    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [] and [str(w.message) for w in recwarn] == []
    assert [hf.config.bos_token_id, hf.config.eos_token_id] == expected
    assert all(i is None or 0 <= i < hf.config.vocab_size for i in expected)


def test_exported_files_have_the_umasks_mode(tmp_path):
    import os
    import stat

    path, _, _ = _checkpoint(tmp_path, "gpt2")
    old = os.umask(0o022)
    try:
        assert (
            main(["export", "--to", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "hf")])
            == 0
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert modes == {"config.json": 0o644, "model.safetensors": 0o644, "tokenizer.json": 0o644}
