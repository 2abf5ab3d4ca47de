"""Norms and their placement: formulas, the registry-wide contract for every norm and every
residual placement, DeepNet's constants and init, and DeepNorm with alpha = beta = 1 = Post-LN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tfmr import Choice, ConfigError, ModelConfig, build_model
from tfmr.model import RESIDUALS, DeepNorm, deepnorm_constants
from tfmr.norms import NORMS, LayerNorm, RMSNorm

DIM = 24


def _random_affine(norm):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_(1.0, 0.3)
    return norm


# ----------------------------------------------------------------------------- formulas


def test_rmsnorm_equals_its_formula():
    norm = _random_affine(RMSNorm(DIM, eps=1e-6))
    x = torch.randn(3, 5, DIM) * 4 + 1
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    if hasattr(F, "rms_norm"):  # PyTorch's own implementation as an outside reference
        torch.testing.assert_close(norm(x), F.rms_norm(x, (DIM,), norm.weight, eps=1e-6))
    assert [n for n, _ in norm.named_parameters()] == ["weight"]  # no bias, no centring


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_equals_its_formula_with_optional_bias(bias):
    norm = _random_affine(LayerNorm(DIM, bias=bias, eps=1e-5))
    x = torch.randn(3, 5, DIM) * 4 + 1
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + (norm.bias if bias else 0)
    torch.testing.assert_close(norm(x), expected)
    assert (norm.bias is not None) == bias


# ----------------------------------------------------------------------------- norm contract


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_norm_gives_unit_rms_keeps_shape_and_dtype(kind, dtype):
    norm = NORMS[kind](dim=DIM, bias=True).to(dtype)
    x = (torch.randn(4, 7, DIM) * 5 + 2).to(dtype)
    y = norm(x)
    assert y.shape == x.shape and y.dtype == dtype
    rms = y.float().pow(2).mean(-1).sqrt()  # fresh weights (1) and biases (0): unit RMS per token
    torch.testing.assert_close(rms, torch.ones_like(rms), atol=2e-2, rtol=0)
    assert norm.extra_repr()


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_every_norm_is_per_token_and_scale_invariant(kind):
    norm = _random_affine(NORMS[kind](dim=DIM, bias=True))
    x = torch.randn(2, 6, DIM)
    y = norm(x)
    torch.testing.assert_close(norm(x[:, 3:4]), y[:, 3:4])  # one token alone: same result
    torch.testing.assert_close(norm(7.5 * x), y, atol=1e-4, rtol=1e-4)  # norm(c x) = norm(x)
    y.sum().backward()
    assert all(p.grad is not None for p in norm.parameters())


# ----------------------------------------------------------------------------- placement contract


def _cfg(residual: Choice, **kw):
    base = dict(vocab_size=40, dim=DIM, layers=3, heads=4, context=16, residual=residual)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("residual", sorted(RESIDUALS))
@pytest.mark.parametrize("norm", sorted(NORMS))
def test_every_placement_and_norm_trains_and_decodes_with_a_cache(residual, norm):
    torch.manual_seed(0)
    model = build_model(_cfg(Choice(residual), norm=Choice(norm)))
    ids = torch.randint(0, 40, (2, 10))
    loss = model(ids, ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.eval()
    full = model(ids).logits
    state = model.start_state(2, 16)
    logits, state = model.step(ids[:, :4], state)
    for t in range(4, 10):
        logits, state = model.step(ids[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["decoder", "encoder-decoder"])
def test_deepnorm_with_alpha_and_beta_one_equals_post_ln(arch):
    kw = dict(arch=arch, pad_id=0) if arch == "encoder-decoder" else {}
    torch.manual_seed(0)
    post = build_model(_cfg(Choice("post"), **kw)).eval()
    deep = build_model(_cfg(Choice("deepnorm", alpha=1.0, beta=1.0), **kw)).eval()
    deep.load_state_dict(post.state_dict())
    scaled = build_model(_cfg(Choice("deepnorm", alpha=2.0, beta=1.0), **kw)).eval()
    scaled.load_state_dict(post.state_dict())
    ids = torch.randint(1, 40, (2, 9))
    args = (ids, ids) if arch == "encoder-decoder" else (ids,)
    torch.testing.assert_close(deep(*args).logits, post(*args).logits, atol=0, rtol=0)
    assert not torch.allclose(scaled(*args).logits, post(*args).logits, atol=1e-3)  # alpha matters


def test_deepnorm_constants_follow_the_deepnet_paper():
    # decoder-only, N = 16: alpha = 32^(1/4), beta = 128^(-1/4)
    assert deepnorm_constants("decoder-only", 16) == pytest.approx((2.3784, 0.29730), abs=1e-4)
    # encoder-decoder, N = M = 16: (N^4 M)^(1/16) = 2^(20/16) = 2.3784
    assert deepnorm_constants("encoder", 16, 16) == pytest.approx(
        (0.81 * 2.3784, 0.87 / 2.3784), abs=1e-4
    )
    assert deepnorm_constants("decoder", 16, 16) == pytest.approx((48**0.25, 192**-0.25))
    with pytest.raises(ValueError, match="valid: decoder-only"):
        deepnorm_constants("middle", 4)


def test_deepnorm_uses_the_stack_depth_and_role():
    model = build_model(_cfg(Choice("deepnorm"), layers=8))
    assert model.blocks[0].residual.alpha == pytest.approx(16**0.25)
    assert model.blocks[0].residual.beta == pytest.approx(64**-0.25)
    seq = build_model(_cfg(Choice("deepnorm"), layers=4, arch="encoder-decoder", encoder_layers=6))
    assert seq.encoder[0].residual.alpha == pytest.approx(0.81 * (6**4 * 4) ** (1 / 16))
    assert seq.blocks[0].residual.alpha == pytest.approx(12**0.25)
    assert isinstance(model.final_norm, torch.nn.Identity)  # post-norm blocks already end in a norm


def test_deepnorm_init_scales_values_outputs_and_ffn_by_beta():
    torch.manual_seed(0)
    dim, layers = 256, 16
    model = build_model(
        ModelConfig(vocab_size=40, dim=dim, layers=layers, heads=4, residual=Choice("deepnorm"))
    )
    beta = (8 * layers) ** -0.25
    xavier = math.sqrt(2 / (dim + dim))
    attn, ffn = model.blocks[3].attn, model.blocks[3].ffn
    assert attn.q_proj.weight.std().item() == pytest.approx(xavier, rel=0.03)
    assert attn.k_proj.weight.std().item() == pytest.approx(xavier, rel=0.03)
    assert attn.v_proj.weight.std().item() == pytest.approx(beta * xavier, rel=0.03)
    assert attn.out_proj.weight.std().item() == pytest.approx(beta * xavier, rel=0.03)
    assert ffn.w1.weight.std().item() == pytest.approx(
        beta * math.sqrt(2 / (dim + 4 * dim)), rel=0.03
    )
    assert "alpha=2.378, beta=0.2973" in repr(model.blocks[0].residual)


def test_bad_residual_option_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid options: alpha, beta"):
        build_model(_cfg(Choice("deepnorm", gamma=2)))
    with pytest.raises(ConfigError, match="valid kinds: pre, post, deepnorm"):
        build_model(_cfg(Choice("sandwich")))
    assert isinstance(build_model(_cfg(Choice("deepnorm"))).blocks[0].residual, DeepNorm)


def test_norm_depth_experiment_runs_and_writes_its_table_and_plot(tmp_path, capsys):
    import argparse
    import json

    from tfmr.experiments import EXPERIMENTS

    module = EXPERIMENTS["norm-depth"]
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path),
            "--set",
            "model.layers=2",
            "--set",
            "model.dim=16",
            "--set",
            "model.context=16",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.steps=3",
            "--set",
            "train.warmup=1",
            "--set",
            "train.eval_every=1",
        ]
    )
    assert module.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert [r["name"] for r in results] == ["post", "pre", "deepnorm"]
    assert all(len(r["history"]) == 3 and math.isfinite(r["final_val"]) for r in results)
    assert (tmp_path / "norm_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert "| deepnorm |" in capsys.readouterr().out
