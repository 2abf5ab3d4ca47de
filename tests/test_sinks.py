"""Attention sinks + rolling window (StreamingLLM, Xiao et al. 2023): the `sinks` pattern and
`cache.SinkCache`.

Positions-inside-cache semantics, as the test's reference defines them: at decoding step t (the
token at absolute position t, one token per step) the query sees the keys of
    sinks   positions 0 .. min(t + 1, S) - 1
    window  positions max(S, t - W + 1) .. t
in that order; they sit at cache positions c = 0 .. n - 1, the query at n - 1. RoPE turns each
key by its cache position and the query by n - 1 (keys stored unrotated); ALiBi adds
-slope_h * (n - 1 - c). While t < S + W this is the absolute position, so the full forward of the
pattern (the same mask at absolute positions) equals step-by-step decoding there.
"""

from __future__ import annotations

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.cache import SinkCache
from tfmr.config import ConfigError
from tfmr.decode import greedy
from tfmr.fastdecode import FastDecoder
from tfmr.kernels import KERNELS
from tfmr.masks import Mask
from tfmr.mixers import Attention
from tfmr.patterns import Sinks, SinksRule
from tfmr.positions import Alibi, Rope, alibi_slopes


def visible(t: int, S: int, W: int) -> list[int]:
    """Absolute positions of the keys query t sees, in cache order (sinks, then the window)."""
    return list(range(min(t + 1, S))) + list(range(max(S, t - W + 1), t + 1))


def rope_at(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE written out (rotate-half pairing): x (..., T, D) turned by angle p * base^(-2i/D)."""
    D = x.shape[-1]
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # (D/2,)
    ang = positions.float()[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@pytest.mark.parametrize("kernel", ["eager", "sdpa", "flex"])
def test_the_sinks_mask_is_sinks_or_window_under_causality(kernel):
    S, W, T = 2, 3, 9
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, T, 8, generator=g) for _ in range(3))
    out, _ = KERNELS[kernel]()(q, k, v, Sinks(S, W).mask(True))
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    keep = (j <= i) & ((j < S) | (i - j < W))  # (T, T)
    scores = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(out, torch.softmax(scores, -1) @ v, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("scheme", ["rope", "alibi"])
def test_decoding_steps_follow_positions_inside_the_cache(scheme):
    """One attention layer fed one token at a time through a SinkCache equals the reference of
    the module docstring at every step, long after the window has filled."""
    S, W, T, H, D = 2, 3, 12, 2, 8
    torch.manual_seed(0)
    attn = Attention(H * D, H, H, True, KERNELS["eager"]()).eval()
    pos = Rope(D, 64) if scheme == "rope" else Alibi(H)
    x = torch.randn(1, T, H * D)
    with torch.no_grad():
        q_all = attn.q_proj(x).view(1, T, H, D).transpose(1, 2)  # (1, H, T, D) unrotated
        k_all, v_all = attn.project_kv(x)
        cache = SinkCache(1, H, S, W, D, torch.float32, "cpu")
        mask = Sinks(S, W).mask(True)
        for t in range(T):
            got, _ = attn(x[:, t : t + 1], pos, mask.placed(t, 0), cache, t)
            keys = torch.tensor(visible(t, S, W))
            n = len(keys)
            c = torch.arange(n)  # cache positions
            q, k, v = q_all[:, :, t : t + 1], k_all[:, :, keys], v_all[:, :, keys]
            if scheme == "rope":
                q, k = rope_at(q, torch.tensor([n - 1])), rope_at(k, c)
            scores = q @ k.transpose(-2, -1) / D**0.5  # (1, H, 1, n)
            if scheme == "alibi":
                scores = scores - alibi_slopes(H)[:, None, None] * (n - 1 - c).float()
            ref = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(1, 1, H * D)
            torch.testing.assert_close(got, attn.out_proj(ref), atol=1e-5, rtol=1e-5)


def _model(pos="rope", S=2, W=4, **kw):
    torch.manual_seed(0)
    return build_model(
        ModelConfig(
            vocab_size=50,
            dim=32,
            layers=2,
            heads=4,
            context=16,
            pos=Choice(pos),
            kernel=Choice("eager"),
            attention_pattern=Choice("sinks", sinks=S, window=W),
            **kw,
        )
    ).eval()


@pytest.mark.parametrize("pos", ["rope", "alibi", "none"])
def test_step_by_step_equals_the_full_forward_where_positions_agree(pos):
    """Prefill 3 tokens, then one at a time: equal to the full forward while t < S + W (cache
    positions are absolute there); with no positions at all, equal at every length."""
    S, W, T = 2, 4, 14
    model = _model(pos, S, W)
    ids = torch.randint(0, 50, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        state = model.start_state(2, T)
        logits, state = model.step(ids[:, :3], state)
        torch.testing.assert_close(logits, full[:, 2], atol=1e-5, rtol=1e-5)
        for t in range(3, T):
            logits, state = model.step(ids[:, t : t + 1], state)
            if t < S + W or pos == "none":
                torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
            elif pos == "rope" and t >= S + W + 1:
                assert not torch.allclose(logits, full[:, t], atol=1e-4)  # the sinks moved closer


def test_a_long_prefill_at_position_0_equals_the_full_forward():
    model = _model("rope", 2, 3)
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, _ = model.step(ids, model.start_state(1, 12))
        torch.testing.assert_close(logits, model(ids).logits[:, -1], atol=1e-5, rtol=1e-5)


def test_decoding_state_bytes_do_not_grow_with_length():
    """(S + W) positions of keys and values per layer, allocated and held, at every length;
    a dense model's held cache grows by one position a step."""
    S, W = 2, 4
    model, dense = (
        _model("rope", S, W),
        build_model(
            ModelConfig(vocab_size=50, dim=32, layers=2, heads=4, context=16, pos=Choice("rope"))
        ).eval(),
    )
    per_position = 2 * 2 * 4 * 8 * 4  # layers x (k, v) x heads x head_dim x fp32 bytes
    state, dstate = model.start_state(1, 20), dense.start_state(1, 20)
    tok = torch.tensor([[3]])
    with torch.no_grad():
        for t in range(20):
            model.step(tok, state)
            dense.step(tok, dstate)
            assert sum(c.bytes() for c in state.cache) == (S + W) * per_position
            assert sum(c.used_bytes() for c in state.cache) == min(t + 1, S + W) * per_position
            assert sum(c.used_bytes() for c in dstate.cache) == (t + 1) * per_position


def test_generation_runs_past_the_context_without_restarting():
    """decode.greedy on a constant-state model runs the cache on (no refill at model.context):
    its tokens equal a plain step loop 8 tokens past the 16-token context."""
    model = _model("rope", 2, 4)
    assert model.constant_state()
    prompt = torch.tensor([[1, 2, 3]])
    out = greedy(model, prompt, 21)
    with torch.no_grad():
        state = model.start_state(1, 24)
        logits, state = model.step(prompt, state)
        ids = []
        for _ in range(21):
            ids.append(int(logits.argmax(-1)))
            logits, state = model.step(torch.tensor([[ids[-1]]]), state)
    assert out[0, 3:].tolist() == ids


def test_mask_placed_moves_queries_and_keys():
    m = Mask(causal=True, rule=SinksRule(2, sinks=1)).placed(5, 2)
    keep = m.dense(1, 4, "cpu")[0, 0, 0]  # query at 5, keys at 2, 3, 4, 5
    assert keep.tolist() == [False, False, True, True]


def test_absolute_positions_and_fast_decoding_are_refused():
    with pytest.raises(ConfigError, match="places positions inside its cache"):
        _model("learned")
    with pytest.raises(ValueError, match="use tfmr.decode"):
        FastDecoder(_model("rope"), 1, 20)
