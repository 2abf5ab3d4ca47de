"""Positions: RoPE against Hugging Face, relative-offset property, NTK / interpolation identities,
xPos decay, ALiBi slopes from the paper, and a contract every registered scheme must meet."""

from __future__ import annotations

import math

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.builder import _position
from tfmr.masks import LinearBias, Mask
from tfmr.positions import (
    POSITIONS,
    Alibi,
    Rope,
    Where,
    XPos,
    alibi_slopes,
    rotate_half,
    sinusoid_table,
)


def _qk(B=2, H=3, T=10, D=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, D, generator=g, dtype=dtype), torch.randn(
        B, H, T, D, generator=g, dtype=dtype
    )


def _score_at(rope, q_vec, k_vec, m, n):
    """q . k after rotating q to position m and k to position n (single head, single vector)."""
    q = q_vec.expand(1, 1, 1, -1)
    k = k_vec.expand(1, 1, 1, -1)
    qm, _ = rope.rotate(q, q, m)
    _, kn = rope.rotate(k, k, n)
    return (qm * kn).sum().item()


# ------------------------------------------------------------------ RoPE
@pytest.mark.parametrize(
    "rope",
    [Rope(16, 64), Rope(16, 64, rotary_dim=8), XPos(16, 64, scale_base=64.0)],
    ids=["rope", "partial", "xpos"],
)
def test_rope_scores_depend_only_on_the_relative_offset(rope):
    g = torch.Generator().manual_seed(3)
    q, k = (
        torch.randn(16, generator=g, dtype=torch.float64),
        torch.randn(16, generator=g, dtype=torch.float64),
    )
    for m, n in [(5, 2), (7, 7), (40, 1)]:
        base = _score_at(rope, q, k, m, n)
        for shift in (1, 13, 300):
            assert math.isclose(
                _score_at(rope, q, k, m + shift, n + shift), base, rel_tol=1e-4, abs_tol=1e-4
            )  # float32 angle tables
    assert not math.isclose(_score_at(rope, q, k, 5, 2), _score_at(rope, q, k, 6, 2), rel_tol=1e-3)


def test_rope_matches_hugging_face_llama_rotate_half():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        rope_parameters={"rope_theta": 500.0, "rope_type": "default"},
    )
    hf = LlamaRotaryEmbedding(cfg)
    q, k = _qk(T=12, D=16, dtype=torch.float32)
    start = 7
    cos, sin = hf(q, torch.arange(start, start + 12)[None])
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours_q, ours_k = Rope(16, 64, base=500.0).rotate(q, k, start)
    torch.testing.assert_close(ours_q, ref_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_k, ref_k, atol=1e-6, rtol=1e-6)


def test_linear_interpolation_matches_hugging_face_linear_rope():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    )
    q, k = _qk(T=9, D=16, dtype=torch.float32)
    cos, sin = LlamaRotaryEmbedding(cfg)(q, torch.arange(3, 12)[None])
    ref_q, ref_k = apply_rotary_pos_emb(q, k, cos, sin)
    ours_q, ours_k = Rope(16, 64, interpolation=4.0).rotate(q, k, 3)
    torch.testing.assert_close(ours_q, ref_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_k, ref_k, atol=1e-6, rtol=1e-6)


def test_partial_rotary_matches_hugging_face_phi():
    transformers = pytest.importorskip("transformers")
    from transformers.models.phi.modeling_phi import PhiRotaryEmbedding, apply_rotary_pos_emb

    cfg = transformers.PhiConfig(hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.5)
    q, k = _qk(T=8, D=16, dtype=torch.float32)
    cos, sin = PhiRotaryEmbedding(cfg)(q, torch.arange(8)[None])
    rq, rk = apply_rotary_pos_emb(q[..., :8], k[..., :8], cos, sin)
    ours_q, ours_k = Rope(16, 64, rotary_dim=8).rotate(q, k, 0)
    torch.testing.assert_close(ours_q, torch.cat((rq, q[..., 8:]), -1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_k, torch.cat((rk, k[..., 8:]), -1), atol=1e-6, rtol=1e-6)
    assert torch.equal(ours_q[..., 8:], q[..., 8:])  # the pass-through half is untouched


def test_rope_rotation_is_the_rotate_half_formula_and_keeps_norms():
    q, k = _qk(T=6, D=8)
    rope = Rope(8, 16, base=100.0)
    rq, _ = rope.rotate(q, k, 2)
    pos = torch.arange(2, 8, dtype=torch.float64)[:, None]
    inv = 100.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    ang = torch.cat((pos * inv, pos * inv), -1)  # (T, 8): dim i pairs with i + 4
    torch.testing.assert_close(rq, q * ang.cos() + rotate_half(q) * ang.sin(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))


def test_ntk_factor_1_equals_plain_rope_and_factor_s_rescales_the_base():
    q, k = _qk()
    plain = Rope(16, 64).rotate(q, k, 5)
    one = Rope(16, 64, ntk_factor=1.0).rotate(q, k, 5)
    assert all(torch.equal(a, b) for a, b in zip(plain, one))
    s = 8.0
    ntk = Rope(16, 64, ntk_factor=s).rotate(q, k, 5)
    rebased = Rope(16, 64, base=10000.0 * s ** (16 / 14)).rotate(q, k, 5)
    for a, b in zip(ntk, rebased):
        torch.testing.assert_close(a, b)
    # the highest frequency is untouched, the lowest is slowed by exactly s
    r_ntk, r_plain = Rope(16, 64, ntk_factor=s), Rope(16, 64)
    assert r_ntk.inv_freq[0] == r_plain.inv_freq[0]
    torch.testing.assert_close(
        r_plain.inv_freq[-1] / r_ntk.inv_freq[-1], torch.tensor(s), rtol=1e-5, atol=0
    )


def test_interpolation_maps_position_s_times_m_to_m():
    q, k = _qk(T=1)
    a = Rope(16, 64, interpolation=4.0).rotate(q, k, 40)
    b = Rope(16, 64).rotate(q, k, 10)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_xpos_score_is_rope_score_times_the_decay():
    """For one rotary pair (head dim 2), xPos multiplies the RoPE score by zeta^((m - n) / scale_base)."""
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(2, generator=g, dtype=torch.float64),
        torch.randn(2, generator=g, dtype=torch.float64),
    )
    rope, xpos = Rope(2, 8), XPos(2, 8, scale_base=32.0)
    zeta = (0.0 + 0.4) / 1.4
    for m, n in [(10, 3), (50, 0), (4, 4)]:
        expected = _score_at(rope, q, k, m, n) * zeta ** ((m - n) / 32.0)
        assert math.isclose(_score_at(xpos, q, k, m, n), expected, rel_tol=1e-6)


def test_bad_rope_options_are_refused_with_the_rule():
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        Rope(16, 64, rotary_dim=5)
    with pytest.raises(ValueError, match="ntk_factor and interpolation must be >= 1"):
        Rope(16, 64, ntk_factor=0.5)


# ------------------------------------------------------------------ ALiBi
def test_alibi_slopes_for_8_heads_are_half_to_1_over_256():
    assert alibi_slopes(8).tolist() == [1 / 2**i for i in range(1, 9)]


def test_alibi_slopes_for_non_powers_of_two_follow_the_paper():
    # 6 heads: the 4-head slopes 2^-2 .. 2^-8, then every other 8-head slope: 2^-1, 2^-3
    assert alibi_slopes(6).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    pytest.importorskip("transformers")
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    for n in range(1, 33):
        torch.testing.assert_close(alibi_slopes(n), _get_alibi_slopes(n, "cpu"), rtol=1e-6, atol=0)


def test_alibi_bias_is_minus_slope_times_distance_at_any_offset():
    bias = Alibi(4).bias(2, 6, 4)
    assert isinstance(bias, LinearBias)
    dense = bias.dense(Mask(causal=True, q_start=4), 2, 6, "cpu", torch.float32)  # queries at 4, 5
    slopes = alibi_slopes(4)
    expected = torch.tensor([[4, 3, 2, 1, 0, 1], [5, 4, 3, 2, 1, 0]], dtype=torch.float32)
    torch.testing.assert_close(dense, -slopes[:, None, None] * expected)
    # keys that start later (a rolling cache) shift the distances
    shifted = bias.dense(Mask(causal=True, q_start=4, k_start=2), 2, 4, "cpu", torch.float32)
    torch.testing.assert_close(shifted, dense[:, :, 2:])


# ------------------------------------------------------------------ sinusoidal
def test_sinusoid_table_is_the_papers_formula():
    t = sinusoid_table(5, 8)
    for pos in range(5):
        for i in range(4):
            assert math.isclose(
                t[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 8)), abs_tol=1e-6
            )
            assert math.isclose(
                t[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 8)), abs_tol=1e-6
            )


# ------------------------------------------------------------------ contract for every registered kind
def _cfg(kind, **opts):
    return ModelConfig(
        vocab_size=40, dim=32, layers=2, heads=4, context=32, pos=Choice(kind, **opts)
    )


@pytest.mark.parametrize("kind", sorted(POSITIONS))
def test_every_position_kind_works_at_any_offset(kind):
    """Each hook applied to a slice at offset `start` equals the full-sequence result, sliced."""
    pos = _position(_cfg(kind))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 32, generator=g)
    q, k = _qk(T=12, D=8, H=4, dtype=torch.float32)
    s = 5
    torch.testing.assert_close(pos.embed(x[:, s:], s), pos.embed(x, 0)[:, s:])
    rq, rk = pos.rotate(q, k, 0)
    sq, sk = pos.rotate(q[:, :, s:], k[:, :, s:], s)
    torch.testing.assert_close(sq, rq[:, :, s:])
    torch.testing.assert_close(sk, rk[:, :, s:])
    full, part = pos.bias(12, 12, 0), pos.bias(7, 12, s)
    if full is not None:
        dense_full = full.dense(Mask(causal=True), 12, 12, "cpu", torch.float32)
        dense_part = part.dense(Mask(causal=True, q_start=s), 7, 12, "cpu", torch.float32)
        torch.testing.assert_close(dense_part, dense_full[:, s:])
    assert isinstance(pos.extra_repr(), str)


@pytest.mark.parametrize("kind", sorted(POSITIONS))
def test_every_position_kind_answers_per_row_positions_like_an_int_start(kind):
    """The seam's tensor form: a `Where` placing row b at its own offset gives, row by row, what
    the int start gives; a bias evaluated at a by-row mask's positions equals the one at an
    offset Mask (queries at s_b, keys from c_b)."""
    from tfmr.fastdecode import StaticMask

    pos = _position(_cfg(kind))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 32, generator=g)
    q, k = _qk(B=2, T=5, D=8, H=4, dtype=torch.float32)
    starts, key_starts = [3, 9], [0, 6]
    where = Where(torch.stack([torch.arange(s, s + 5) for s in starts]), slots=torch.arange(5))
    embedded, (rq, rk) = pos.embed(x, where), pos.rotate(q, k, where)
    for b, s in enumerate(starts):
        torch.testing.assert_close(embedded[b], pos.embed(x[b : b + 1], s)[0])
        q1, k1 = pos.rotate(q[b : b + 1], k[b : b + 1], s)
        torch.testing.assert_close(rq[b], q1[0])
        torch.testing.assert_close(rk[b], k1[0])
    bias = pos.bias(5, 12, where)
    if bias is not None:
        k_pos = torch.stack([torch.arange(c, c + 12) for c in key_starts])
        by_row = bias.dense(
            StaticMask(torch.ones(2, 1, 5, 12, dtype=torch.bool), where.positions, k_pos),
            5,
            12,
            "cpu",
            torch.float32,
        )  # (B, H, 5, 12)
        for b, (s, c) in enumerate(zip(starts, key_starts)):
            one = pos.bias(5, 12, s).dense(
                Mask(causal=False, q_start=s, k_start=c), 5, 12, "cpu", torch.float32
            )
            torch.testing.assert_close(by_row[b], one)


@pytest.mark.parametrize("kind", sorted(POSITIONS))
def test_every_position_kind_trains_and_distinguishes_order(kind):
    """A model with each scheme gives gradients everywhere, and (except none) reacts to a swap
    of two tokens in a bidirectional encoder, which sees order only through positions."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            arch="encoder",
            vocab_size=40,
            dim=32,
            layers=2,
            heads=4,
            context=32,
            pos=Choice(kind),
            init_std=0.3,
        )
    )
    ids = torch.randint(0, 40, (2, 10))
    assert model.to(torch.float64)(ids).logits.dtype == torch.float64  # moves like any module
    assert all(
        getattr(model.pos, name).dtype == torch.float32 for name in model.pos.float32
    )  # not rounded
    model.float()
    model(ids, ids).loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad
    )
    swapped = ids.clone()
    swapped[:, [2, 7]] = ids[:, [7, 2]]
    with torch.no_grad():
        a, b = model(ids).logits[:, 0], model(swapped).logits[:, 0]  # token 0 did not move
    if kind == "none":
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # a set, not a sequence
    else:
        assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    "kind, opts",
    [
        ("rope", {"base": 500.0, "rotary_dim": 4, "ntk_factor": 2.0}),
        ("rope", {"interpolation": 2.0}),
        ("xpos", {"scale_base": 64.0}),
    ],
)
def test_rope_options_build_through_the_config(kind, opts):
    model = build_model(_cfg(kind, **opts))
    for name, value in opts.items():
        assert getattr(model.pos, name) == value
    assert "rotary_dim=" in repr(model.pos)


def test_viz_positions_writes_three_pictures(tmp_path):
    from tfmr.cli import main

    assert main(["viz", "positions", "--out", str(tmp_path)]) == 0
    for name in ("sinusoidal.png", "rope.png", "alibi.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_length_extrapolation_experiment_runs_and_reports_every_scheme(text_file, tmp_path):
    """A seconds-long run of `tfmr experiment length-extrapolation`: a row per scheme (plus RoPE's
    NTK and interpolation rows), n/a for learned positions past L, a table and a plot."""
    import json

    from tfmr.cli import main

    out = tmp_path / "lenx"
    code = main(
        [
            "experiment",
            "length-extrapolation",
            "--data",
            str(text_file),
            "--out",
            str(out),
            "--set",
            "model.context=8",
            "--factors",
            "1,2",
            "--schemes",
            "learned,rope,alibi",
            "--set",
            "train.steps=3",
            "--set",
            "model.dim=16",
            "--set",
            "model.heads=2",
            "--eval-windows",
            "2",
            "--set",
            "train.batch_size=4",
        ]
    )
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    ppl = res["perplexity"]
    assert list(ppl) == ["learned", "rope", "rope+ntk", "rope+pi", "alibi"]
    assert ppl["learned"][1] is None and ppl["learned"][0] > 1
    assert ppl["rope+ntk"][0] == ppl["rope"][0] == ppl["rope+pi"][0]  # factor 1: the same model
    assert ppl["rope+ntk"][1] != ppl["rope"][1] != ppl["rope+pi"][1]  # factor 2: other angles
    assert "| alibi |" in (out / "table.md").read_text()
    assert (out / "perplexity.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("kind", ["rope", "xpos", "alibi"])
def test_relative_schemes_run_in_fast_decoding_with_left_padding(kind):
    """fastdecode.py calls rotate with per-row positions (a `Where`) and the kernel evaluates
    the described bias at the mask's per-row positions: each left-padded row gets its own
    logits, and greedy decoding equals decode.greedy row by row."""
    from tfmr.decode import greedy
    from tfmr.fastdecode import FastDecoder

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            vocab_size=50, dim=32, layers=2, heads=4, kv_heads=2, context=40, pos=Choice(kind)
        )
    ).eval()
    prompts = [[5, 9, 12, 3, 3], [7], [20, 21, 22, 23, 24, 25, 26, 27]]
    P = max(map(len, prompts))
    ids = torch.zeros(3, P, dtype=torch.long)
    mask = torch.zeros(3, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :], mask[i, P - len(p) :] = torch.tensor(p), True
    logits = FastDecoder(model, 3, 40).prefill(ids, mask)
    out = FastDecoder(model, 3, 40).generate(ids, 12, attention_mask=mask)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            torch.testing.assert_close(
                logits[i], model(torch.tensor([p])).logits[0, -1], atol=1e-5, rtol=1e-5
            )
        assert out[i, P:].tolist() == greedy(model, torch.tensor([p]), 12)[0, len(p) :].tolist()
