"""Attention: every kernel equals eager for every mask kind and bias (outputs and gradients);
FlexAttention's mask_mod / score_mod equal eager; the flash ALiBi trick is exact; MHA equals
torch's MultiheadAttention; GQA / MQA equal MHA with shared heads; sliding windows, Longformer and
BigBird patterns mean what they say; rolling and static caches decode exactly like the full forward."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tfmr import Choice, ModelConfig, build_model
from tfmr.cache import KVCache, RollingKVCache, kv_bytes_per_token
from tfmr.kernels import (
    KERNELS,
    Eager,
    alibi_as_extra_dims,
    block_mask_key,
    flex_attention_call,
    flex_block_mask,
)
from tfmr.masks import LinearBias, Mask, Rule
from tfmr.mixers import Attention
from tfmr.patterns import PATTERNS, BigBirdRule, LongformerRule, WindowRule, random_blocks
from tfmr.positions import POSITIONS, alibi_slopes

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

B, H, D = 2, 4, 8


def _pad(Tk):  # second row has two padding keys at the end
    return torch.arange(Tk)[None, :] < torch.tensor([[Tk], [Tk - 2]])


# name -> (Tq, Tk, mask factory)
MASKS = {
    "none": (9, 9, lambda: Mask()),
    "causal": (9, 9, lambda: Mask(causal=True)),
    "causal-offset": (3, 9, lambda: Mask(causal=True, q_start=6)),
    "padding": (9, 9, lambda: Mask(key_padding=_pad(9))),
    "causal+padding": (9, 9, lambda: Mask(causal=True, key_padding=_pad(9))),
    "window": (9, 9, lambda: Mask(causal=True, rule=WindowRule(3))),
    "window-bidirectional": (9, 9, lambda: Mask(rule=WindowRule(2))),
    "window+padding": (9, 9, lambda: Mask(causal=True, rule=WindowRule(4), key_padding=_pad(9))),
    "window-rolling": (2, 5, lambda: Mask(causal=True, rule=WindowRule(3), q_start=10, k_start=7)),
    "longformer": (9, 9, lambda: Mask(causal=True, rule=LongformerRule(2, global_tokens=2))),
    "longformer-bidirectional": (9, 9, lambda: Mask(rule=LongformerRule(2, global_tokens=1))),
    "bigbird": (
        12,
        12,
        lambda: Mask(causal=True, rule=BigBirdRule(2, 1, random_blocks=1, block=3, seed=4)),
    ),
    "bigbird-bidirectional": (
        12,
        12,
        lambda: Mask(rule=BigBirdRule(2, global_tokens=1, random_blocks=2, block=3)),
    ),
}
BIASES = {
    "none": lambda Tq, Tk: None,
    "tensor": lambda Tq, Tk: torch.randn(
        H, Tq, Tk, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    ),
    "alibi": lambda Tq, Tk: LinearBias(alibi_slopes(H)),
}


def _qkv(Tq, Tk, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, H, T, D, generator=g, dtype=dtype, requires_grad=True) for T in (Tq, Tk, Tk)
    ]


@pytest.mark.parametrize("kind", sorted(KERNELS))
@pytest.mark.parametrize("mask_kind", sorted(MASKS))
@pytest.mark.parametrize("bias_kind", sorted(BIASES))
def test_every_kernel_equals_eager_on_every_mask_and_bias(kind, mask_kind, bias_kind):
    Tq, Tk, make = MASKS[mask_kind]
    q, k, v = _qkv(Tq, Tk)
    bias = BIASES[bias_kind](Tq, Tk)
    ref, _ = Eager()(q, k, v, make(), bias)
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    out, _ = KERNELS[kind]()(q, k, v, make(), bias)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("mask_kind", sorted(MASKS))
@pytest.mark.parametrize("bias_kind", sorted(BIASES))
def test_flex_mask_mod_and_score_mod_equal_eager(mask_kind, bias_kind):
    """FlexAttention itself (PyTorch's unfused reference on CPU, forward only): the block mask and
    score_mod built from a Mask and a bias give eager's result."""
    Tq, Tk, make = MASKS[mask_kind]
    q, k, v = (t.detach() for t in _qkv(Tq, Tk))
    bias = BIASES[bias_kind](Tq, Tk)
    ref, _ = Eager()(q, k, v, make(), bias)
    out = flex_attention_call(q, k, v, make(), bias, compiled=False)
    torch.testing.assert_close(out, ref)


def _changed(value):
    """A different value of a Mask field's type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, Rule):
        return WindowRule(3) if value != WindowRule(3) else WindowRule(4)
    if value is None:  # key padding
        return _pad(9)
    raise AssertionError(
        f"no other value for {value!r}: teach this test the type of the new Mask field"
    )


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Mask)])
def test_block_mask_key_changes_with_every_mask_field(name):
    """The key FlexAttention block masks are shared under is read from the Mask's fields: changing
    any one of them (a field added later too) changes the key, so no mask reuses another's."""
    base = Mask(
        causal=True, q_start=2, k_start=1, rule=BigBirdRule(2, 1, random_blocks=1, block=3, seed=4)
    )
    other = dataclasses.replace(base, **{name: _changed(getattr(base, name))})
    assert block_mask_key(other, 9, 9, "cpu") != block_mask_key(base, 9, 9, "cpu")
    assert block_mask_key(dataclasses.replace(base), 9, 9, "cpu") == block_mask_key(
        base, 9, 9, "cpu"
    )


@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_block_mask_key_changes_with_every_field_of_each_patterns_rule(kind):
    rule = PATTERNS[kind]().rule()
    key = block_mask_key(Mask(causal=True, rule=rule), 9, 9, "cpu")
    assert key == block_mask_key(PATTERNS[kind]().mask(True), 9, 9, "cpu")  # equal rules share
    for f in dataclasses.fields(rule):
        other = dataclasses.replace(rule, **{f.name: getattr(rule, f.name) + 1})
        assert block_mask_key(Mask(causal=True, rule=other), 9, 9, "cpu") != key, f.name


@dataclasses.dataclass
class _StrideMask(Mask):
    """A mask subclass with a field of its own: keys at a multiple of `stride` from the query."""

    stride: int = 2

    def allowed(self, q_pos, k_pos, table=None):
        return (q_pos - k_pos) % self.stride == 0


def test_a_shared_block_mask_is_never_another_masks():
    """Two masks that differ only in a field of a subclass: each gets its own block mask, whose
    mask_mod gives its own dense mask (the key is not a hand-kept list that misses the field)."""
    q_idx, kv_idx = torch.arange(9)[:, None], torch.arange(9)[None, :]
    for stride in (2, 3):
        mask = _StrideMask(causal=True, stride=stride)
        block = flex_block_mask(mask, 9, 9, "cpu", compile_mask=False)
        assert torch.equal(block.mask_mod(0, 0, q_idx, kv_idx), mask.dense(9, 9, "cpu")[0, 0])


def test_flex_falls_back_on_cpu_and_for_short_inputs():
    q, k, v = _qkv(9, 9)
    flex = KERNELS["flex"]()
    assert not flex._sdpa_is_fast(q, Mask(causal=True, rule=WindowRule(3)), None, 9)
    assert flex._sdpa_is_fast(q, Mask(causal=True), LinearBias(alibi_slopes(H)), 9)
    out, weights = flex(
        q, k, v, Mask(causal=True, rule=WindowRule(3))
    )  # CPU: SDPA with a dense mask
    assert weights is None
    torch.testing.assert_close(out, Eager()(q, k, v, Mask(causal=True, rule=WindowRule(3)))[0])


def test_alibi_extra_dims_are_exact_in_bfloat16_at_long_range():
    """The flash ALiBi trick: q'.k' - q.k equals slope * (key - last query) for every head, from
    bf16 inputs, at positions up to 20,000 (products exact, summed in float64 here as the GPU's
    fp32 accumulator would to ~1e-3)."""
    H_, T = 8, 20_000
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, H_, 1, 64, generator=g).to(torch.bfloat16)
    k = torch.randn(1, H_, T, 64, generator=g).to(torch.bfloat16)
    slopes = alibi_slopes(H_) * 1.37  # not powers of two: exercises c_hi + c_lo
    q2, k2, v2, scale = alibi_as_extra_dims(q, k, k, slopes, q_start=T - 1, k_start=0)
    assert q2.shape[-1] % 8 == 0 and scale == 64**-0.5 and torch.all(v2[..., 64:] == 0)
    extra = (
        q2[..., 64:].double() @ k2[..., 64:].double().transpose(-1, -2)
    ) * scale  # (1, H, 1, T)
    expected = slopes.double()[:, None] * (torch.arange(T, dtype=torch.float64) - (T - 1))[None, :]
    torch.testing.assert_close(extra[0, :, 0], expected, atol=2e-3, rtol=1e-5)


def test_eager_causal_weights_are_lower_triangular_and_sum_to_one():
    q, k, v = _qkv(5, 5)
    _, w = Eager()(q, k, v, Mask(causal=True))
    assert torch.all(w[..., torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, 5, dtype=torch.float64))


def test_dense_causal_mask_at_an_offset_matches_definition():
    m = Mask(causal=True, q_start=2).dense(2, 4, "cpu")
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m[0, 0], expected)


@contextlib.contextmanager
def sdpa_calls():
    """The keyword arguments of every torch SDPA call made inside the block."""
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        calls.append(kw)
        return original(*args, **kw)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        yield calls
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def test_sdpa_alibi_takes_the_causal_fast_path():
    q, k, v = _qkv(9, 9)
    with sdpa_calls() as calls:
        KERNELS["sdpa"]()(q, k, v, Mask(causal=True), LinearBias(alibi_slopes(H)))
    assert calls and calls[0].get("is_causal") and "attn_mask" not in calls[0]


@pytest.mark.parametrize(
    "batch, q_len, k_len, math",
    [(500, 1, 12, True), (500, 10, 10, True), (1, 1, 12, False), (64, 4, 128, False)],
)
def test_sdpa_on_cpu_takes_the_math_path_for_many_short_rows_only(batch, q_len, k_len, math):
    """Decoding many short rows (batched G2P) goes through the eager maths, measured faster there
    (kernels._math_is_faster); a single row or long keys stay on the fused kernel. Either way the
    output is the fused kernel's to float rounding, padding included."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, 4, q_len, 8, generator=g)  # 4 heads, as the G2P models have
    k, v = torch.randn(2, batch, 4, k_len, 8, generator=g)
    padding = torch.arange(k_len)[None, :] < torch.randint(1, k_len + 1, (batch, 1), generator=g)
    mask = Mask(causal=False, key_padding=padding)
    with sdpa_calls() as calls, torch.no_grad():
        out, _ = KERNELS["sdpa"]()(q, k, v, mask)
    assert bool(calls) != math
    with torch.no_grad():
        fused = F.scaled_dot_product_attention(q, k, v, attn_mask=padding[:, None, None, :])
    torch.testing.assert_close(out, fused, rtol=1e-5, atol=1e-6)
    if math:
        assert torch.equal(out, Eager()(q, k, v, mask)[0])


# ------------------------------------------------------------------ masks mean what they say
def test_sliding_window_mask_definition():
    keep = Mask(causal=True, rule=WindowRule(3)).dense(6, 6, "cpu")[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ]
    )
    assert torch.equal(keep, expected)
    both = Mask(rule=WindowRule(2)).dense(4, 4, "cpu")[0, 0].int()
    assert torch.equal(both, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]]))


def test_longformer_global_tokens_see_and_are_seen_by_all():
    keep = Mask(rule=LongformerRule(1, global_tokens=2)).dense(8, 8, "cpu")[0, 0]
    assert keep[:2].all() and keep[:, :2].all()  # global rows and columns
    local = keep[2:, 2:]
    assert torch.equal(local, torch.eye(6, dtype=torch.bool))  # window 1: only itself
    causal = Mask(causal=True, rule=LongformerRule(1, global_tokens=2)).dense(8, 8, "cpu")[0, 0]
    assert torch.equal(causal, keep & torch.ones(8, 8, dtype=torch.bool).tril())


def test_bigbird_random_blocks_are_fixed_by_seed_and_block_index():
    a = random_blocks(10, 10, 2, causal=True, seed=3)
    assert torch.equal(a, random_blocks(10, 10, 2, causal=True, seed=3))
    assert torch.equal(
        a[:6, :6], random_blocks(6, 6, 2, causal=True, seed=3)
    )  # independent of the length
    assert not torch.equal(a, random_blocks(10, 10, 2, causal=True, seed=4))
    assert a.sum(1).tolist() == [0, 1] + [2] * 8  # earlier blocks only, at most `count`
    assert not a.triu().any()
    bi = random_blocks(5, 5, 2, causal=False, seed=0)
    assert bi.sum(1).tolist() == [2] * 5


# ------------------------------------------------------------------ heads: MHA, GQA, MQA
def test_mha_equals_torch_multihead_attention():
    torch.manual_seed(0)
    dim = 32
    attn = Attention(dim, 4, 4, True, Eager())
    ref = torch.nn.MultiheadAttention(dim, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        ref.out_proj.weight.copy_(attn.out_proj.weight)
        ref.out_proj.bias.copy_(attn.out_proj.bias)
    x = torch.randn(2, 7, dim)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)  # torch: True = masked
    expected, w = ref(x, x, x, attn_mask=causal, average_attn_weights=False)
    out, weights = attn(x, POSITIONS["none"](), Mask(causal=True))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_mha_with_key_value_heads_shared(kv_heads):
    """GQA (MQA at kv_heads=1) computes exactly MHA whose k/v heads are copies within each group."""
    torch.manual_seed(0)
    dim, heads = 32, 4
    gqa = Attention(dim, heads, kv_heads, True, Eager())
    mha = Attention(dim, heads, heads, True, Eager())
    group, hd = heads // kv_heads, dim // heads
    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            src = getattr(gqa, name)
            w = (
                src.weight.view(kv_heads, hd, dim)
                .repeat_interleave(group, 0)
                .reshape(heads * hd, dim)
            )
            b = src.bias.view(kv_heads, hd).repeat_interleave(group, 0).reshape(-1)
            getattr(mha, name).weight.copy_(w)
            getattr(mha, name).bias.copy_(b)
    x = torch.randn(2, 6, dim)
    pos = POSITIONS["rope"](hd, 16)
    torch.testing.assert_close(gqa(x, pos, Mask(causal=True))[0], mha(x, pos, Mask(causal=True))[0])
    assert gqa.k_proj.weight.shape[0] == kv_heads * hd


def test_kv_heads_equal_heads_is_the_default_mha():
    torch.manual_seed(0)
    a = build_model(ModelConfig(vocab_size=30, dim=32, layers=1, heads=4, kv_heads=None))
    torch.manual_seed(0)
    b = build_model(ModelConfig(vocab_size=30, dim=32, layers=1, heads=4, kv_heads=4))
    ids = torch.randint(0, 30, (1, 8))
    torch.testing.assert_close(a(ids).logits, b(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_kv_cache_bytes_per_token(kv_heads):
    model = build_model(ModelConfig(vocab_size=30, dim=64, layers=3, heads=4, kv_heads=kv_heads))
    caches = model.new_cache(1, 100)
    measured = sum(c.bytes() for c in caches) / 100
    assert (
        measured == kv_bytes_per_token(3, kv_heads, 16, torch.float32) == 2 * 3 * kv_heads * 16 * 4
    )


# ------------------------------------------------------------------ caches
def test_rolling_cache_returns_the_window_oldest_first():
    cache = RollingKVCache(1, 1, 4, 1, torch.float32, "cpu")
    seq = torch.arange(20, dtype=torch.float32).view(1, 1, 20, 1)
    k, _ = cache.update(seq[:, :, :6], seq[:, :, :6], 0)  # prefill longer than the window
    assert k.flatten().tolist() == list(range(6)) and cache.key_start == 0
    for t in range(6, 11):
        k, _ = cache.update(seq[:, :, t : t + 1], seq[:, :, t : t + 1], t)
        assert k.flatten().tolist() == list(range(t - 4, t + 1)) and cache.key_start == t - 4
    assert cache.bytes() == 2 * 4 * 4  # four positions of k and v, whatever the length
    with pytest.raises(ValueError, match="continues at position 11"):
        cache.update(seq[:, :, :1], seq[:, :, :1], 5)


def _decode_matches_full(model, ids, max_len, prefill):
    full = model(ids).logits
    state = model.start_state(ids.shape[0], max_len)
    logits, state = model.step(ids[:, :prefill], state)
    torch.testing.assert_close(logits, full[:, prefill - 1], atol=1e-5, rtol=1e-5)
    for t in range(prefill, ids.shape[1]):
        logits, state = model.step(ids[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
    return state


PATTERN_OPTS = {
    "dense": {},
    "sliding": {"window": 4},
    "longformer": {"window": 3, "global_tokens": 2},
    "bigbird": {"window": 3, "global_tokens": 1, "random_blocks": 1, "block": 4},
    # sinks place positions inside the cache once it is full (tests/test_sinks.py); here it never is
    "sinks": {"sinks": 2, "window": 14},
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("pos", ["rope", "alibi"])
def test_cached_decoding_equals_full_forward_for_every_pattern(pattern, kernel, pos):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=40,
        dim=32,
        layers=2,
        heads=4,
        kv_heads=2,
        context=32,
        pos=Choice(pos),
        kernel=Choice(kernel),
        attention_pattern=Choice(pattern, **PATTERN_OPTS[pattern]),
    )
    model = build_model(cfg).eval()
    state = _decode_matches_full(model, torch.randint(0, 40, (2, 16)), 32, prefill=6)
    rolling = pattern == "sliding"
    assert all(isinstance(c, RollingKVCache) == rolling for c in state.cache)
    if rolling:
        assert state.cache[0].k.shape[2] == 4  # memory bounded by the window


def test_sliding_window_model_differs_from_dense_only_past_the_window():
    torch.manual_seed(0)
    dense = build_model(
        ModelConfig(vocab_size=40, dim=32, layers=1, heads=4, context=32, pos=Choice("rope"))
    )
    sliding = build_model(
        ModelConfig(
            vocab_size=40,
            dim=32,
            layers=1,
            heads=4,
            context=32,
            pos=Choice("rope"),
            attention_pattern=Choice("sliding", window=5),
        )
    )
    sliding.load_state_dict(dense.state_dict())
    ids = torch.randint(0, 40, (1, 12))
    a, b = dense(ids).logits, sliding(ids).logits
    torch.testing.assert_close(a[:, :5], b[:, :5])  # the first 5 queries see the same keys
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_bad_patterns_name_the_valid_choices():
    from tfmr import ConfigError

    with pytest.raises(ConfigError, match="valid kinds: dense, sliding, longformer, bigbird"):
        build_model(ModelConfig(attention_pattern=Choice("strided")))
    with pytest.raises(ConfigError, match="valid options: window"):
        build_model(ModelConfig(attention_pattern=Choice("sliding", size=3)))
    with pytest.raises(ConfigError, match="window must be at least 1"):
        build_model(ModelConfig(attention_pattern=Choice("sliding", window=0)))


def test_static_cache_refuses_to_overflow():
    cache = KVCache(1, 1, 3, 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="holds 3 positions"):
        cache.update(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2), 0)


@pytest.mark.parametrize("rows", [[2, 0, 0], [1, 1, 0, 0, 2, 2]])  # beam reorder; expand to 6
def test_a_cache_reorders_the_slots_written_as_a_fresh_copy_would(rows):
    """reorder copies only the written slots (in place when the batch keeps its size): what
    `update` hands attention afterwards equals the cache of the reordered rows written anew."""
    torch.manual_seed(0)
    k, v = torch.randn(3, 2, 3, 4), torch.randn(3, 2, 3, 4)  # (B, H, T, D)
    index = torch.tensor(rows)
    for cache in (
        KVCache(3, 2, 8, 4, torch.float32, "cpu"),
        RollingKVCache(3, 2, 2, 4, torch.float32, "cpu"),
    ):
        cache.update(k[:, :, :2], v[:, :, :2], 0)
        cache.reorder(index)
        fresh = type(cache)(len(rows), 2, cache.max_len, 4, torch.float32, "cpu")
        fresh.update(k[index][:, :, :2], v[index][:, :, :2], 0)
        got, want = (
            cache.update(k[index][:, :, 2:], v[index][:, :, 2:], 2),
            fresh.update(k[index][:, :, 2:], v[index][:, :, 2:], 2),
        )
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_beams_of_one_source_keep_the_source_side_of_the_state_uncopied():
    """DecodeState.reorder(same_sources=True), beam search's: the self-attention caches follow the
    rows, the memory and cross-attention keys (the same for every beam of a source) stay put."""
    from tfmr.cache import DecodeState

    cache = KVCache(4, 1, 3, 2, torch.float32, "cpu")
    cache.update(
        torch.arange(4.0)[:, None, None, None].expand(4, 1, 1, 2), torch.zeros(4, 1, 1, 2), 0
    )
    memory = torch.randn(4, 5, 2)
    state = DecodeState([cache], memory=memory)
    state.cross = [(memory[:, None], memory[:, None])]
    state.reorder(torch.tensor([1, 1, 3, 2]), same_sources=True)  # sources: rows 0-1 and 2-3
    assert cache.k[:, 0, 0, 0].tolist() == [1.0, 1.0, 3.0, 2.0]
    assert state.memory is memory and state.cross[0][0].data_ptr() == memory.data_ptr()
    state.reorder(torch.tensor([3, 0, 0, 1]))  # any rows: everything follows
    assert torch.equal(state.memory, memory[[3, 0, 0, 1]])


# ------------------------------------------------------------------ pictures
def test_viz_attention_writes_one_heatmap_per_layer_from_a_checkpoint(tmp_path):
    """`tfmr viz attention`: the eager weights of each layer as a PNG; the kernel is restored."""
    from tfmr import checkpoint
    from tfmr.cli import main
    from tfmr.config import RunConfig, to_dict
    from tfmr.tokenizers.char import CharTokenizer
    from tfmr.viz import attention_weights

    tok = CharTokenizer.train("to be or not to be")
    cfg = RunConfig(
        model=ModelConfig(
            vocab_size=tok.vocab_size,
            dim=16,
            layers=2,
            heads=2,
            context=16,
            pos=Choice("alibi"),
            kernel=Choice("sdpa"),
        )
    )
    model = build_model(cfg.model)
    checkpoint.save(tmp_path / "ckpt", model, to_dict(cfg), tok)
    assert (
        main(
            [
                "viz",
                "attention",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--text",
                "not to be",
                "--out",
                str(tmp_path / "maps"),
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert pngs == ["layer_0.png", "layer_1.png"]
    assert all((tmp_path / "maps" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    weights = attention_weights(model, torch.tensor([tok.encode("not to be")]))
    assert weights[0].shape == (1, 2, 9, 9)
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(1, 2, 9))
    assert type(model.blocks[0].attn.kernel).__name__ == "SDPA"
