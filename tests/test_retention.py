"""Retention (RetNet, Sun et al. 2023) as a sequence mixer (`model.mixer=retention`) and hybrid
stacks (`model.mixer_pattern`): the recurrent form equals the parallel form at every position,
cached decoding equals the full forward, the decoding state has one size at every length.
The registry contracts (training, checkpoints, cached decoding) run in tests/test_contracts.py."""

from __future__ import annotations

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.builder import mixer_kinds
from tfmr.config import ConfigError, RunConfig, apply_override
from tfmr.fastdecode import FastDecoder
from tfmr.mixers import (
    Attention,
    Retention,
    retention_chunk,
    retention_decays,
    retention_parallel,
    retention_recurrent,
)


def _qkv(B=2, H=4, T=24, Dk=8, Dv=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, T, Dk, generator=g),
        torch.randn(B, H, T, Dk, generator=g) * Dk**-0.5,
        torch.randn(B, H, T, Dv, generator=g),
    )


def test_decays_are_the_papers():
    """gamma_h = 1 - 2^(-5-h): 1 - 1/32, 1 - 1/64, 1 - 1/128, 1 - 1/256 for four heads."""
    gamma = torch.exp(retention_decays(4)).double()
    torch.testing.assert_close(
        gamma,
        torch.tensor([1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256], dtype=torch.float64),
        atol=1e-7,
        rtol=0,
    )


def test_recurrent_form_equals_parallel_form_at_every_position():
    q, k, v = _qkv()
    lg = retention_decays(4)
    par = retention_parallel(q, k, v, lg)
    rec, _ = retention_recurrent(q, k, v, lg)
    torch.testing.assert_close(rec, par, atol=1e-5, rtol=0)
    # the parallel form written out for one position: o_n = sum_m gamma^(n-m) (q_n . k_m) v_m
    n, gamma = 17, torch.exp(lg)[:, None]  # (H, 1)
    w = (q[:, :, n : n + 1] @ k[:, :, : n + 1].transpose(-2, -1))[:, :, 0] * gamma ** (
        n - torch.arange(n + 1)
    )
    torch.testing.assert_close(
        par[:, :, n], (w[..., None] * v[:, :, : n + 1]).sum(2), atol=1e-5, rtol=0
    )


def test_chunks_carry_the_state_exactly():
    """Chunks of 7, 5, 1, 1 and 10 tokens through the chunkwise form equal one recurrent pass."""
    q, k, v = _qkv()
    lg = retention_decays(4)
    rec, final = retention_recurrent(q, k, v, lg)
    S, outs, at = torch.zeros(2, 4, 8, 16), [], 0
    for size in (7, 5, 1, 1, 10):
        out, S = retention_chunk(
            q[:, :, at : at + size], k[:, :, at : at + size], v[:, :, at : at + size], lg, S
        )
        outs.append(out)
        at += size
    torch.testing.assert_close(torch.cat(outs, dim=2), rec, atol=1e-5, rtol=0)
    torch.testing.assert_close(S, final, atol=1e-5, rtol=0)


def _model(pattern="", pos="rope", **kw):
    torch.manual_seed(0)
    return build_model(
        ModelConfig(
            vocab_size=50,
            dim=32,
            layers=3,
            heads=4,
            context=32,
            pos=Choice(pos),
            mixer=Choice("retention"),
            mixer_pattern=pattern,
            **kw,
        )
    ).eval()


@pytest.mark.parametrize(
    "pattern, pos",
    [("", "rope"), ("", "none"), ("retention,attention", "rope"), ("attention,retention", "alibi")],
)
def test_cached_decoding_equals_the_full_forward(pattern, pos):
    model = _model(pattern, pos)
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        state = model.start_state(2, 12)
        logits, state = model.step(ids[:, :5], state)
        torch.testing.assert_close(logits, full[:, 4], atol=1e-5, rtol=1e-5)
        for t in range(5, 12):
            logits, state = model.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_state_bytes_are_constant_with_length():
    """layers x batch x heads x head_dim x value_dim x 4 bytes (value_dim = 2 head_dim), at every step."""
    model = _model()
    state = model.start_state(2, 8)
    expected = 3 * 2 * 4 * 8 * 16 * 4
    tok = torch.tensor([[1], [2]])
    with torch.no_grad():
        for _ in range(12):  # past the max_len of 8 given to start_state: it does not matter
            model.step(tok, state)
            assert sum(c.bytes() for c in state.cache) == expected
            assert sum(c.used_bytes() for c in state.cache) == expected
    assert model.constant_state()


def test_a_hybrid_stack_is_configuration():
    cfg = RunConfig()
    apply_override(cfg, "model.layers=5")
    apply_override(cfg, "model.mixer_pattern=retention,retention,attention")
    apply_override(cfg, "model.mixer=retention")
    apply_override(cfg, "model.mixer.value_factor=1")
    assert mixer_kinds(cfg.model) == [
        "retention",
        "retention",
        "attention",
        "retention",
        "retention",
    ]
    model = build_model(cfg.model)
    kinds = [type(b.attn) for b in model.blocks]
    assert kinds == [Retention, Retention, Attention, Retention, Retention]
    assert (
        model.blocks[0].attn.value_dim == model.blocks[0].attn.head_dim
    )  # value_factor 1 reached it
    assert not model.constant_state()  # the attention layer's cache grows


def test_the_parameter_count_of_a_hybrid_stack_is_exact():
    """memory.count_parameters (meta device) counts each layer's own mixer."""
    from tfmr.memory import count_parameters

    cfg = ModelConfig(
        vocab_size=50,
        dim=32,
        layers=5,
        heads=4,
        mixer=Choice("retention"),
        mixer_pattern="attention,retention,retention",
    )
    assert count_parameters(cfg) == sum(p.numel() for p in build_model(cfg).parameters())


def test_left_padding_adds_nothing_to_the_state():
    """With padding keys masked, a left-padded row gives the unpadded row's outputs (no positions)."""
    model = _model("", "none")
    ids = torch.randint(1, 50, (1, 6), generator=torch.Generator().manual_seed(3))
    padded = torch.cat((torch.zeros(1, 3, dtype=torch.long), ids), dim=1)
    keep = torch.tensor([[False] * 3 + [True] * 6])
    with torch.no_grad():
        ref = model(ids).logits
        got = model(padded, padding_mask=keep).logits[:, 3:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_what_retention_cannot_do_is_refused():
    with pytest.raises(ConfigError, match="causal"):
        build_model(ModelConfig(arch="encoder", mixer=Choice("retention")))
    with pytest.raises(ConfigError, match="unknown mixer kind 'mamba'"):
        build_model(ModelConfig(mixer_pattern="retention,mamba"))
    with pytest.raises(ValueError, match="use tfmr.decode"):
        FastDecoder(_model(), 1, 10)
