"""Weight-only quantization (tfmr/quantize.py): logits near fp32, greedy agreement, checkpoints
that round-trip (save, verify, load, decode) through the library and the CLI, one-line refusals.

Tolerances, stated once: the int8 kernel takes bf16 activations, so a quantized model's logits
differ from fp32 by bf16 rounding plus int8 rounding. On these random models (logits of order 1)
the largest difference is under 2% of the largest |logit| for int8 and under 1% for bf16.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from tfmr import ModelConfig, build_model, checkpoint
from tfmr.config import Choice, ConfigError, RunConfig, to_dict
from tfmr.decode import greedy
from tfmr.fastdecode import FastDecoder
from tfmr.quantize import (
    Bf16Linear,
    Int8Linear,
    WeightOnlyLinear,
    argmax_agreement,
    convert_,
    quantize_,
    quantize_int8,
)
from tfmr.tokenizers.char import CharTokenizer

TOLERANCE = {"int8": 0.02, "bf16": 0.01}  # max |logit - fp32 logit| / max |fp32 logit|

GPT2_LIKE = ModelConfig(vocab_size=64, dim=32, layers=2, heads=4, context=48)
LLAMA_LIKE = ModelConfig(
    vocab_size=64,
    dim=32,
    layers=2,
    heads=4,
    kv_heads=2,
    context=48,
    pos=Choice("rope"),
    norm=Choice("rmsnorm"),
    ffn=Choice("swiglu"),
    bias=False,
    tie_embeddings=False,
)
SEQ2SEQ = ModelConfig(
    arch="encoder-decoder",
    vocab_size=40,
    dim=32,
    layers=2,
    encoder_layers=2,
    heads=4,
    context=32,
    pos=Choice("learned"),
)


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _close(out, ref, weights):
    return (out - ref).abs().max().item() <= TOLERANCE[weights] * ref.abs().max().item()


def test_int8_rounding_is_per_channel_and_symmetric():
    w = torch.tensor([[1.0, -0.5, 0.25], [0.01, 0.03, -0.04]])
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and s.shape == (2,)
    assert torch.allclose(s.float(), torch.tensor([1.0, 0.04]) / 127, rtol=2**-8)
    assert q[0].tolist() == [127, -64, 32] and q[1].tolist() == [
        32,
        95,
        -127,
    ]  # each row's max is +-127
    assert ((q.float() * s.float()[:, None] - w).abs() <= s.float()[:, None] * 0.51).all()


@pytest.mark.parametrize("cfg", [GPT2_LIKE, LLAMA_LIKE], ids=["gpt2-like", "llama-like"])
@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_decoder_only_logits_within_tolerance_of_fp32(cfg, weights):
    model = _model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    ref = model(ids).logits
    q = quantize_(copy.deepcopy(model), weights)
    kinds = {type(m) for m in q.modules() if isinstance(m, WeightOnlyLinear)}
    assert kinds == {Int8Linear if weights == "int8" else Bf16Linear}
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())  # the head too
    assert _close(q(ids).logits, ref, weights)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_encoder_decoder_logits_within_tolerance_of_fp32(weights):
    model = _model(SEQ2SEQ)
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randint(1, 40, (2, 12), generator=g), torch.randint(1, 40, (2, 9), generator=g)
    ref = model(src, tgt).logits
    q = quantize_(copy.deepcopy(model), weights)
    assert _close(q(src, tgt).logits, ref, weights)
    start = tgt[:, :1]
    fast = FastDecoder(q, 2, 12).generate(start, 10, src=src)
    assert torch.equal(
        fast, greedy(q, start, 10, src=src)
    )  # the static-cache path decodes it the same


def test_greedy_agrees_with_fp32_on_95_percent_of_positions():
    model = _model(GPT2_LIKE)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # a trained model's peaky logits; random ones are near ties
    prompt = torch.randint(0, 64, (4, 4), generator=torch.Generator().manual_seed(3))
    ids = greedy(model, prompt, 40)
    for weights in ("int8", "bf16"):
        q = quantize_(copy.deepcopy(model), weights)
        assert argmax_agreement(model, q, ids, 4) >= 0.95
        fast = FastDecoder(q, 4, 44).generate(prompt, 40)
        assert torch.equal(fast, greedy(q, prompt, 40))
        assert (fast[:, 4:] == ids[:, 4:]).float().mean() >= 0.95


def _save_lm(model, directory, weights="fp32"):
    cfg = RunConfig(model=model.cfg)
    cfg.decode.weights = weights
    tok = CharTokenizer([chr(48 + i) for i in range(model.cfg.vocab_size)])  # "0" ... "o"
    return checkpoint.save(directory, model, to_dict(cfg), tok)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_quantized_checkpoint_round_trips(weights, tmp_path):
    from tfmr.cli.common import load_model

    model = _model(LLAMA_LIKE)
    q = quantize_(copy.deepcopy(model), weights)
    _save_lm(q, tmp_path / "q", weights)
    checkpoint.verify(tmp_path / "q")
    loaded, _, cfg = load_model(tmp_path / "q")
    assert cfg.decode.weights == weights and loaded.quantized == weights
    for a, b in zip(q.state_dict().values(), loaded.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b)
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(greedy(loaded, prompt, 12), greedy(q, prompt, 12))
    size = (tmp_path / "q" / "model.safetensors").stat().st_size
    _save_lm(model, tmp_path / "fp32")
    assert size < (tmp_path / "fp32" / "model.safetensors").stat().st_size


def test_a_quantized_model_decodes_only_as_what_it_holds():
    q = quantize_(_model(GPT2_LIKE), "int8")
    assert convert_(q, "int8", "int8") is q
    with pytest.raises(ConfigError, match="holds int8 weights"):
        convert_(q, "int8", "bf16")


@pytest.mark.parametrize(
    "cfg, message",
    [
        (
            ModelConfig(
                vocab_size=64, dim=32, layers=1, heads=4, context=16, ffn=Choice("moe", experts=2)
            ),
            r"blocks\.0\.ffn \(MoE\) reads its weight matrices itself",
        ),
        (
            ModelConfig(arch="encoder", vocab_size=64, dim=32, layers=1, heads=4, context=16),
            "this one is an encoder",
        ),
    ],
)
def test_what_cannot_be_quantized_is_refused_in_one_line(cfg, message):
    with pytest.raises(ConfigError, match=message) as e:
        quantize_(_model(cfg), "int8")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown decode.weights 'int4'; valid: fp32, bf16, int8"):
        quantize_(_model(GPT2_LIKE), "int4")


def _tfmr(*args):
    return subprocess.run(
        [sys.executable, "-m", "tfmr", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_quantize_then_generate(tmp_path):
    _save_lm(_model(GPT2_LIKE), tmp_path / "fp32")
    r = _tfmr(
        "checkpoint",
        "quantize",
        "--checkpoint",
        str(tmp_path / "fp32"),
        "--to",
        "int8",
        "--out",
        str(tmp_path / "q"),
    )
    assert r.returncode == 0, r.stderr
    assert "linear layers in int8" in r.stdout
    g = _tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(tmp_path / "q"),
        "--prompt",
        "a0b0",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
    )
    assert g.returncode == 0, g.stderr
    on_the_fly = _tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(tmp_path / "fp32"),
        "--prompt",
        "a0b0",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        "--set",
        "decode.weights=int8",
    )
    assert on_the_fly.returncode == 0 and on_the_fly.stdout == g.stdout
    bad = _tfmr(
        "lm",
        "generate",
        "--checkpoint",
        str(tmp_path / "q"),
        "--prompt",
        "a0",
        "--set",
        "decode.weights=bf16",
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "holds int8 weights" in bad.stderr
