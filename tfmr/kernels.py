"""Attention kernels: softmax(q k^T / sqrt(d) + bias, masked) v, computed different ways, and the
attention patterns (which keys each query may see).

Every kernel is `kernel(q, k, v, mask, bias) -> (out, weights_or_None)` with
q: (B, H, Tq, D), k and v: (B, H, Tk, D) (key/value heads already expanded for GQA),
`mask` a `Mask` (which keys each query may see) and `bias` None, an additive (H, Tq, Tk) or
(B, H, Tq, Tk) tensor, or a described `Bias` (a function of query and key positions, what position
schemes hand over; `LinearBias` is ALiBi's) that the kernel evaluates at the mask's positions.
Every kernel subclasses `Kernel` and declares `gives_weights` (whether it hands back the weights:
guided attention, copy heads and heatmaps need them); `eager_attention(model)` runs a model on
the eager kernel for a while.

    eager   the reference: plain matmuls, returns the attention weights
    sdpa    torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient on GPU);
            causal ALiBi runs on the flash path too (see `alibi_as_extra_dims`)
    flex    FlexAttention (compiled, GPU) for what SDPA cannot run fast: sliding windows, sparse
            patterns, other biases; it hands the easy cases to SDPA and falls back to SDPA with a
            dense mask on CPU, for short inputs and with dropout

Masks and biases are described, not materialised, so a kernel can take a fast path (SDPA's
`is_causal`, a FlexAttention block mask) and build the dense matrix only when it has to. A mask
with per-row positions (`by_row`, left-padded batches in fastdecode.py) goes the dense way.

Attention patterns (`PATTERNS`, the `model.attention_pattern` axis) turn a model's causal flag
and positions into a `Mask` and choose the KV cache: `dense`, `sliding` (Mistral; rolling cache
bounded by the window), `longformer` (window + global tokens), `bigbird` (window + global +
random key blocks), `sinks` (StreamingLLM: attention sinks + window, constant-size cache with
positions inside it).

Alignment kernels (`CROSS_KERNELS`, the `model.cross_kernel` axis, cross-attention only) are
stateful: each target step reads the previous step's alignment. `location` (Chorowski et al.
2015) adds a convolution of the previous alignment to the scores; `monotonic` (Raffel et al.
2017) moves left to right over the source, soft in training and hard at decoding; `mocha`
(Chiu & Raffel 2018) adds a softmax over a chunk ending where monotonic attention stops. They take a
sixth argument, `kernel(q, k, v, mask, bias, state)`, see `AlignmentKernel`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache, RollingKVCache, SinkCache
from .variant import Variant


# ----------------------------------------------------------------------------- masks
@dataclass
class Mask:
    """Which keys each query may attend to. Query i sits at absolute position q_start + i,
    key j at k_start + j; a key is visible when every rule below allows it.

    causal:        key position <= query position
    key_padding:   (B, Tk) bool, True for real tokens, False for padding; None when there is none
    window:        sliding window: query - key < window (|query - key| < window when not causal)
    global_tokens: the first n positions see every key and are seen by every query (Longformer);
                   with a window they widen it, without one they add nothing
    random_blocks: BigBird: each query block of `block` positions also sees this many key blocks
                   drawn at random (earlier blocks when causal), fixed by `seed` and the block index
    sinks:         attention sinks (StreamingLLM): the first n positions are seen by every query
                   (they widen a window; without one they add nothing)
    """

    causal: bool = False
    q_start: int = 0
    key_padding: torch.Tensor | None = None
    window: int | None = None
    global_tokens: int = 0
    random_blocks: int = 0
    block: int = 64
    seed: int = 0
    k_start: int = 0
    sinks: int = 0
    # True for masks whose query and key positions differ per row (fastdecode.py's left-padded
    # batches): `positions` then gives (B, Tq, 1) and (B, 1, Tk), and only dense paths apply.
    by_row = False

    def __post_init__(self):
        self._memo: dict = {}  # dense masks and block masks, built once per forward, shared by every layer

    # ------------------------------------------------------------------ description
    @property
    def sparse(self) -> bool:
        """True when a window, global tokens or random blocks restrict the keys."""
        return self.window is not None or self.random_blocks > 0

    def keys_from(self, k_start: int) -> "Mask":
        """The same mask for keys starting at absolute position `k_start` (a rolling cache)."""
        if k_start == self.k_start:
            return self
        other = dataclasses.replace(self, k_start=k_start)
        other._memo = self._memo  # keys of the memo include k_start
        return other

    def placed(self, q_start: int, k_start: int) -> "Mask":
        """The same rules for queries from `q_start` and keys from `k_start` (positions inside a
        cache: attention sinks, Transformer-XL memory)."""
        if (q_start, k_start) == (self.q_start, self.k_start):
            return self
        other = dataclasses.replace(self, q_start=q_start, k_start=k_start)
        other._memo = self._memo  # keys of the memo include both starts
        return other

    def is_plain_causal(self, q_len: int, k_len: int) -> bool:
        """True when SDPA's built-in causal mask means exactly this mask."""
        return (self.causal and self.key_padding is None and not self.sparse and self.q_start == self.k_start
                and q_len == k_len)

    def is_empty(self, q_len: int, k_len: int) -> bool:
        """True when every query may see every key."""
        if self.key_padding is not None or self.sparse:
            return False
        return not self.causal or self.q_start >= self.k_start + k_len - 1  # the first query sees all keys

    # ------------------------------------------------------------------ evaluation
    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor, table: torch.Tensor | None = None):
        """Visibility of keys at `k_pos` for queries at `q_pos` (broadcasting tensors of absolute
        positions), key padding aside; None when everything is visible. Tensor operations only, so
        FlexAttention can trace it as a mask_mod."""
        ok = None
        if self.window is not None:
            dist = q_pos - k_pos if self.causal else (q_pos - k_pos).abs()
            ok = dist < self.window
            if self.global_tokens:
                ok = ok | (k_pos < self.global_tokens) | (q_pos < self.global_tokens)
            if self.sinks:
                ok = ok | (k_pos < self.sinks)
        if self.random_blocks:
            rand = table[q_pos // self.block, k_pos // self.block]
            ok = rand if ok is None else ok | rand
        if self.causal:
            ok = k_pos <= q_pos if ok is None else ok & (k_pos <= q_pos)
        return ok

    def random_table(self, q_len: int, k_len: int, device) -> torch.Tensor | None:
        """(query blocks, key blocks) bool: BigBird's random key blocks, or None."""
        if not self.random_blocks:
            return None
        key = ("random", self.q_start + q_len, self.k_start + k_len, str(device))
        if key not in self._memo:
            n_q = (self.q_start + q_len + self.block - 1) // self.block
            n_k = (self.k_start + k_len + self.block - 1) // self.block
            self._memo[key] = random_blocks(n_q, n_k, self.random_blocks, self.causal, self.seed).to(device)
        return self._memo[key]

    def positions(self, q_len: int, k_len: int, device):
        """Absolute positions of the queries (Tq, 1) and keys (1, Tk)."""
        q_pos = torch.arange(self.q_start, self.q_start + q_len, device=device)[:, None]  # (Tq, 1)
        k_pos = torch.arange(self.k_start, self.k_start + k_len, device=device)[None, :]  # (1, Tk)
        return q_pos, k_pos

    def dense(self, q_len: int, k_len: int, device) -> torch.Tensor | None:
        """The mask as bool (B or 1, 1, Tq, Tk), True = may attend; None when nothing is masked."""
        if self.is_empty(q_len, k_len):
            return None
        key = ("dense", q_len, k_len, self.q_start, self.k_start, str(device))
        if key not in self._memo:
            self._memo[key] = self._build(q_len, k_len, device)
        return self._memo[key]

    def _build(self, q_len: int, k_len: int, device) -> torch.Tensor:
        q_pos, k_pos = self.positions(q_len, k_len, device)
        ok = self.allowed(q_pos, k_pos, self.random_table(q_len, k_len, device))
        keep = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
        if ok is not None:
            keep = keep & ok
        if self.key_padding is not None:
            keep = keep & self.key_padding[:, None, None, :k_len].to(torch.bool)  # (B, 1, 1, Tk)
        return keep


def random_blocks(n_q: int, n_k: int, count: int, causal: bool, seed: int) -> torch.Tensor:
    """(n_q, n_k) bool with `count` random key blocks per query block (BigBird, Zaheer et al. 2020,
    https://arxiv.org/abs/2007.14062). Causal: drawn among earlier blocks. Each row is drawn from
    its own generator seeded by (seed, row), so a row does not depend on the sequence length and
    cached decoding sees the same pattern as the full forward."""
    table = torch.zeros(n_q, n_k, dtype=torch.bool)
    for qb in range(n_q):
        pool = qb if causal else n_k
        if pool <= 0:
            continue
        gen = torch.Generator().manual_seed(seed * 1_000_003 + qb)
        table[qb, torch.randperm(pool, generator=gen)[:count]] = True
    return table


class Bias:
    """An additive attention bias described as a function of positions (what a position scheme's
    `bias` hook returns). Kernels evaluate it where their `Mask` says queries and keys sit.

    at(q_pos, k_pos): q_pos (..., Tq, 1) and k_pos (..., 1, Tk) long absolute positions, the
    leading dims () or (B,) (per-row positions); returns float32 (..., H, Tq, Tk)."""

    def at(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dense(self, mask: Mask, q_len: int, k_len: int, device, dtype) -> torch.Tensor:
        """The bias at `mask`'s positions: (H, Tq, Tk), or (B, H, Tq, Tk) for a mask `by_row`."""
        q_pos, k_pos = mask.positions(q_len, k_len, device)
        return self.at(q_pos, k_pos).to(dtype)


@dataclass
class LinearBias(Bias):
    """ALiBi's additive bias, described: -slopes[h] * |query position - key position|.
    Kernels evaluate it at the positions of the `Mask` they are given (SDPA and flex have fast
    paths for it)."""

    slopes: torch.Tensor  # (H,)

    def at(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        dist = (q_pos - k_pos).abs().to(torch.float32)  # (..., Tq, Tk)
        return -self.slopes.to(dist.device, torch.float32)[:, None, None] * dist.unsqueeze(-3)  # (..., H, Tq, Tk)


def dense_bias(bias, mask: Mask, q: torch.Tensor, k_len: int) -> torch.Tensor | None:
    """Any bias as an additive tensor broadcastable to (B, H, Tq, Tk), or None."""
    if isinstance(bias, Bias):
        return bias.dense(mask, q.shape[2], k_len, q.device, q.dtype)
    return bias


def _float_mask(mask: Mask, bias, q: torch.Tensor, k_len: int):
    """Combine mask and bias into one additive float tensor (or None)."""
    keep = mask.dense(q.shape[2], k_len, q.device)
    bias = dense_bias(bias, mask, q, k_len)
    if keep is None:
        return None if bias is None else bias.to(q.dtype)
    add = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))
    return add if bias is None else add + bias.to(q.dtype)


# ----------------------------------------------------------------------------- kernels
class Kernel(nn.Module, Variant):
    """Base of the attention kernels: `kernel(q, k, v, mask, bias) -> (out, weights or None)`.

    gives_weights: whether it hands back the attention weights (B, H, Tq, Tk); variants that read
    them (guided attention, copy heads, heatmaps) check this on the built kernel.
    receives: what the build passes (the dropout; alignment kernels also the heads)."""

    gives_weights: bool = False
    receives = ("dropout",)
    # stateful: whether the kernel reads the previous target step's alignment (location-aware and
    # monotonic attention, below). Such kernels are cross-attention only (`model.cross_kernel`) and
    # take one more argument, `kernel(q, k, v, mask, bias, state)`; the builder reads this flag.
    stateful: bool = False

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout

    def start_state(self, batch: int, src_len: int, device) -> "AlignmentState | None":
        """The decoding state this kernel keeps between steps (None: it keeps none)."""
        return None


class Eager(Kernel):
    """The reference kernel: explicit scores, softmax and weighted sum. Returns the weights."""

    gives_weights = True

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q, k, v, mask: Mask, bias=None):
        scale = q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
        bias = dense_bias(bias, mask, q, k.shape[2])
        if bias is not None:
            scores = scores + bias
        keep = mask.dense(q.shape[2], k.shape[2], q.device)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        upcast = scores.dtype in (torch.float16, torch.bfloat16)  # softmax in fp32 at low precision
        weights = torch.softmax(scores.float() if upcast else scores, dim=-1).to(q.dtype)
        if keep is not None and mask.key_padding is not None:
            weights = torch.nan_to_num(weights)  # rows with every key masked (padding queries) -> 0
        return self.drop(weights) @ v, weights  # (B, H, Tq, D), (B, H, Tq, Tk)


def alibi_as_extra_dims(q, k, v, slopes: torch.Tensor, q_start: int, k_start: int):
    """Causal ALiBi folded into the dot product, so SDPA's flash kernel runs it.

    Under a causal mask, -m (i - j) = m j - m i, and softmax ignores the per-row constant -m i, so
    the bias is m * (key position) + const. Append to each query the numbers c = m * sqrt(D)
    (undoing SDPA's 1/sqrt(D) scale) and to each key its position p: q'.k' = q.k + c p.
    In bf16 both are split so every product is exact: c = c_hi + c_lo, p = p_hi + p_lo with p_hi a
    multiple of 256, giving four extra dimensions [c_hi, c_lo, c_hi, c_lo] . [p_hi, p_hi, p_lo, p_lo];
    fp32 accumulation then sums them without loss. Positions are taken relative to the last query
    (p <= 0) to keep the numbers small. Head dims are padded to a multiple of 8; v is zero-padded
    and the output sliced back. Returns (q', k', v', scale) for SDPA.
    """
    D, Tk = q.shape[-1], k.shape[2]
    extra = 8 - (D + 4) % 8 + 4 if (D + 4) % 8 else 4
    B, H = q.shape[0], q.shape[1]
    c = slopes.to(q.device, torch.float64) * D ** 0.5  # (H,)
    c_hi = c.to(q.dtype)
    c_lo = (c - c_hi.double()).to(q.dtype)
    last = q_start + q.shape[2] - 1
    a = (last - torch.arange(k_start, k_start + Tk, device=q.device)).clamp(min=0)  # (Tk,) distance to the last query
    a_hi = (a // 256) * 256
    a_lo = a - a_hi
    qx = torch.zeros(B, H, q.shape[2], extra, dtype=q.dtype, device=q.device)  # (B, H, Tq, extra)
    qx[..., 0] = c_hi[None, :, None]
    qx[..., 1] = c_lo[None, :, None]
    qx[..., 2] = c_hi[None, :, None]
    qx[..., 3] = c_lo[None, :, None]
    kx = torch.zeros(B, H, Tk, extra, dtype=k.dtype, device=k.device)  # (B, H, Tk, extra)
    kx[..., 0] = kx[..., 1] = -a_hi.to(k.dtype)
    kx[..., 2] = kx[..., 3] = -a_lo.to(k.dtype)
    vx = torch.zeros(B, H, Tk, extra, dtype=v.dtype, device=v.device)
    return torch.cat((q, qx), -1), torch.cat((k, kx), -1), torch.cat((v, vx), -1), D ** -0.5


def _alibi_fast_ok(mask: Mask, q: torch.Tensor, k_len: int) -> bool:
    """Causal ALiBi with nothing else masked, at a precision where the trick is exact enough."""
    plain = mask.is_plain_causal(q.shape[2], k_len) or (mask.causal and mask.is_empty(q.shape[2], k_len))
    precise = q.is_cuda or q.dtype in (torch.float32, torch.float64)  # CPU bf16 matmuls round the sums
    return plain and precise and mask.q_start + q.shape[2] - mask.k_start < 65536


class SDPA(Kernel):
    """PyTorch's fused scaled_dot_product_attention; flash or memory-efficient kernels on GPU.

    Fast paths: plain causal -> `is_causal`; causal ALiBi -> extra head dims (alibi_as_extra_dims)
    on the same causal path. Everything else gets one dense additive mask.
    On CPU at bf16/fp16 with gradients, PyTorch's flash backward is far slower than plain matmuls
    (measured: 7x at T=64, head dim 32), so there this kernel takes the eager math path.
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self.math = Eager(dropout)

    def forward(self, q, k, v, mask: Mask, bias=None):
        if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled():
            return self.math(q, k, v, mask, bias)[0], None
        q_len, k_len = q.shape[2], k.shape[2]
        p = self.dropout if self.training else 0.0
        if bias is None and mask.is_plain_causal(q_len, k_len):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
        if isinstance(bias, LinearBias) and _alibi_fast_ok(mask, q, k_len):
            D = q.shape[-1]
            q2, k2, v2, scale = alibi_as_extra_dims(q, k, v, bias.slopes, mask.q_start, mask.k_start)
            causal = mask.is_plain_causal(q_len, k_len)
            out = F.scaled_dot_product_attention(q2, k2, v2, dropout_p=p, is_causal=causal, scale=scale)
            return out[..., :D], None
        attn_mask = _float_mask(mask, bias, q, k_len)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        if mask.key_padding is not None:  # queries that see no key at all come out as NaN
            out = torch.nan_to_num(out)
        return out, None


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


_BLOCK_MASKS: dict = {}  # masks without padding: description -> BlockMask, kept across forwards


def flex_block_mask(mask: Mask, q_len: int, k_len: int, device, compile_mask: bool = True):
    """FlexAttention's BlockMask for `mask` (None when nothing is masked). Memoised on the mask,
    and across forwards for masks without padding (a training run builds it once per shape)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if mask.is_empty(q_len, k_len):
        return None
    key = ("block", q_len, k_len, mask.q_start, mask.k_start, str(device))
    shared = None
    if mask.key_padding is None:
        shared = (mask.causal, mask.q_start, mask.k_start, mask.window, mask.global_tokens, mask.sinks,
                  mask.random_blocks, mask.block, mask.seed, q_len, k_len, str(device), compile_mask)
        if shared in _BLOCK_MASKS:
            return _BLOCK_MASKS[shared]
    if key not in mask._memo:
        table = mask.random_table(q_len, k_len, device)
        pad = mask.key_padding
        qs, ks = mask.q_start, mask.k_start

        def mask_mod(b, h, q_idx, kv_idx):
            ok = mask.allowed(q_idx + qs, kv_idx + ks, table)
            ok = (q_idx >= 0) if ok is None else ok
            return ok if pad is None else ok & pad[b, kv_idx]

        B = None if pad is None else pad.shape[0]
        mask._memo[key] = create_block_mask(mask_mod, B, None, q_len, k_len, device=device, _compile=compile_mask)
    if shared is not None:
        if len(_BLOCK_MASKS) >= 16:
            _BLOCK_MASKS.pop(next(iter(_BLOCK_MASKS)))  # oldest first
        _BLOCK_MASKS[shared] = mask._memo[key]
    return mask._memo[key]


def flex_score_mod(bias, mask: Mask):
    """FlexAttention's score_mod for a bias: ALiBi from its slopes, a tensor by indexing."""
    if bias is None:
        return None
    if isinstance(bias, LinearBias):
        slopes, qs, ks = bias.slopes, mask.q_start, mask.k_start

        def alibi(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * ((q_idx + qs) - (kv_idx + ks)).abs()
        return alibi
    if bias.dim() == 3:  # a tensor (other described biases arrive here evaluated)
        return lambda score, b, h, q_idx, kv_idx: score + bias[h, q_idx, kv_idx]
    return lambda score, b, h, q_idx, kv_idx: score + bias[b, h, q_idx, kv_idx]


def flex_attention_call(q, k, v, mask: Mask, bias=None, compiled: bool = True):
    """One FlexAttention call for any mask and bias. `compiled=False` runs PyTorch's unfused
    reference (forward only on CPU); tests use it to check the mask_mod and score_mod here."""
    from torch.nn.attention.flex_attention import flex_attention

    if isinstance(bias, LinearBias):
        bias = LinearBias(bias.slopes.to(q.device))
    elif bias is not None:
        bias = dense_bias(bias, mask, q, k.shape[2]).to(q.dtype)
    block_mask = flex_block_mask(mask, q.shape[2], k.shape[2], q.device, compile_mask=compiled)
    fn = _compiled_flex() if compiled else flex_attention
    return fn(q, k, v, score_mod=flex_score_mod(bias, mask), block_mask=block_mask)


class Flex(Kernel):
    """FlexAttention (https://pytorch.org/blog/flexattention/): compiled kernels generated from a
    mask_mod and score_mod, skipping fully masked blocks (sliding windows, sparse patterns).

    Runs on CUDA for inputs of at least `min_len` queries. The cases SDPA runs on its flash path
    (dense causal, causal ALiBi, nothing masked) go to SDPA; so do CPU tensors, short inputs
    (decoding steps; a new block mask per step would cost more than it saves) and dropout (flex
    has none) and masks with per-row positions (`by_row`): SDPA with a dense mask is the
    fallback, equal to eager.
    """

    def __init__(self, dropout: float = 0.0, min_len: int = 128):
        super().__init__(dropout)
        self.min_len = min_len
        self.fallback = SDPA(dropout)

    def _sdpa_is_fast(self, q, mask: Mask, bias, k_len: int) -> bool:
        if bias is None:
            return mask.is_plain_causal(q.shape[2], k_len) or mask.is_empty(q.shape[2], k_len)
        return isinstance(bias, LinearBias) and _alibi_fast_ok(mask, q, k_len)

    def forward(self, q, k, v, mask: Mask, bias=None):
        use_flex = (q.is_cuda and q.shape[2] >= self.min_len and not (self.training and self.dropout > 0)
                    and not mask.by_row and not self._sdpa_is_fast(q, mask, bias, k.shape[2]))
        if not use_flex:
            return self.fallback(q, k, v, mask, bias)
        out = flex_attention_call(q, k, v, mask, bias)
        return out, None

    def extra_repr(self) -> str:
        return f"min_len={self.min_len}"


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run every kernel of `model` that gives no weights on the eager kernel (the same function,
    and it returns the weights) until the block ends, then put the model's own kernels back:
    heatmaps and attention analyses of a model trained with SDPA or flex."""
    swapped = []

    def visit(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, Kernel):  # a kernel's own parts (SDPA's fallback) stay as they are
                if not child.gives_weights:
                    swapped.append((parent, name, child))
                    setattr(parent, name, Eager(child.dropout))
            else:
                visit(child)

    visit(model)
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


KERNELS = {"eager": Eager, "sdpa": SDPA, "flex": Flex}


# ----------------------------------------------------------------------------- alignment kernels
# Stateful cross-attention kernels: the alignment of target step i depends on the alignment of
# step i - 1. The seam:
#
#     kernel(q, k, v, mask, bias, state=None) -> (out, weights)      weights (B, H, Tq, S)
#     kernel.start_state(batch, src_len, device) -> AlignmentState   kept in DecodeState.align
#
# Without a state (teacher-forced training, a full forward) the kernel starts from alpha_0 (all
# mass on the first source position) and runs the Tq target steps one after another over the
# whole batch. With a state (decoding) it starts from `state.prev`, runs the Tq (usually 1) new
# steps and leaves the last alignment in `state.prev`; beam search reorders it with the caches.
# The same loop serves both, so step-by-step decoding equals the full forward.
class AlignmentState:
    """The previous target step's alignment, (B, H, S) float32, per cross-attention layer."""

    def __init__(self, prev: torch.Tensor):
        self.prev = prev

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search)."""
        self.prev = self.prev.index_select(0, index)


def first_position(batch: int, heads: int, src_len: int, device) -> torch.Tensor:
    """alpha_0: every head's alignment on source position 0, (B, H, S) float32."""
    alpha = torch.zeros(batch, heads, src_len, device=device)
    alpha[..., 0] = 1.0
    return alpha


class AlignmentKernel(Kernel):
    """Base of the stateful kernels: the loop over target steps, the state, the padding mask.
    A subclass says what one target step does: `step(prev, scores_i, keep) -> alpha_i`, with
    scores (B, H, S) float32 (q.k / sqrt(d), padding not yet masked) and keep (B or 1, 1, S) bool
    or None; and, when the weights applied to v are not the carried alignment itself (MoChA),
    `readout(alpha_i, scores_i, keep) -> weights_i`."""

    gives_weights = True
    stateful = True
    receives = ("heads", "dropout")

    def __init__(self, heads: int, dropout: float = 0.0):
        super().__init__(dropout)
        self.heads = heads

    def start_state(self, batch: int, src_len: int, device) -> AlignmentState:
        return AlignmentState(first_position(batch, self.heads, src_len, device))

    def forward(self, q, k, v, mask: Mask, bias=None, state: AlignmentState | None = None):
        if bias is not None:
            raise ValueError(f"{type(self).__name__} is a cross-attention kernel and takes no position bias")
        B, H, Tq, _ = q.shape
        S = k.shape[2]
        scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Tq, S)
        keep = mask.dense(Tq, S, q.device)  # (B or 1, 1, Tq, S) or None
        keep = None if keep is None else keep[:, :, 0]  # (B or 1, 1, S): cross-attention masks keys only
        prev = first_position(B, H, S, q.device) if state is None else state.prev  # (B, H, S)
        rows = []
        for i in range(Tq):  # sequential over target steps: step i reads step i - 1
            prev = self.step(prev, scores[:, :, i], keep)  # (B, H, S)
            rows.append(self.readout(prev, scores[:, :, i], keep))
        if state is not None:
            state.prev = prev
        weights = torch.stack(rows, dim=2)  # (B, H, Tq, S)
        return self.attend(weights, v), weights.to(q.dtype)

    def readout(self, alpha, scores, keep):
        """The weights applied to v at this step; by default the alignment itself."""
        return alpha

    def attend(self, weights, v):
        """The context: the alignment applied to the values, (B, H, Tq, D)."""
        return weights.to(v.dtype) @ v

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


class LocationAware(AlignmentKernel):
    """Location-aware attention (Chorowski et al. 2015, https://arxiv.org/abs/1506.07503), adapted
    to dot-product multi-head attention:

        f_i   = F * alpha_{i-1}                       a 1-D convolution over source positions,
                                                      `channels` filters of `kernel_size` per head
        e_ij  = q_i . k_j / sqrt(d) + w_h . tanh(f_ij)  per head h; masked, then softmax over j
        alpha_i = softmax(e_i),  context_i = alpha_i v

    The paper scores additively, e_ij = w . tanh(W s_i + V h_j + U f_ij + b); here the content
    term is the Transformer's scaled dot product and only the location features pass through
    tanh and a learned per-head vector w (our adaptation). A zero convolution leaves exactly the
    content-only (eager) scores. Training is sequential over target positions (T steps of this
    kernel over the whole batch, each a small conv): fine for short targets such as G2P.
    """

    def __init__(self, heads: int, dropout: float = 0.0, channels: int = 8, kernel_size: int = 7):
        super().__init__(heads, dropout)
        if channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"channels must be >= 1 and kernel_size odd and >= 1, got {channels}, {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = nn.Conv1d(heads, heads * channels, kernel_size, padding=kernel_size // 2, groups=heads,
                              bias=False)  # each head convolves its own alignment
        self.w = nn.Parameter(torch.randn(heads, channels) * channels ** -0.5)  # (H, C)
        self.drop = nn.Dropout(dropout)

    def location(self, prev: torch.Tensor) -> torch.Tensor:
        """w_h . tanh(F * alpha_{i-1}): (B, H, S) -> (B, H, S)."""
        B, H, S = prev.shape
        f = self.conv(prev.to(self.conv.weight.dtype)).view(B, H, self.channels, S).float()  # (B, H, C, S)
        return torch.einsum("hc,bhcs->bhs", self.w.float(), torch.tanh(f))

    def step(self, prev, scores, keep):
        scores = scores + self.location(prev)  # (B, H, S)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.nan_to_num(torch.softmax(scores, dim=-1))  # rows with no real key -> 0

    def attend(self, weights, v):
        return self.drop(weights.to(v.dtype)) @ v  # the state keeps the alignment before dropout

    def extra_repr(self) -> str:
        return f"heads={self.heads}, channels={self.channels}, kernel_size={self.kernel_size}"


def expected_alignment(prev: torch.Tensor, p: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Monotonic attention's expected alignment for one target step (Raffel et al. 2017, eq. 9-10):

        q_ij = (1 - p_i,j-1) q_i,j-1 + alpha_i-1,j ,  alpha_ij = p_ij q_ij

    in closed form, parallel over source positions j:
        alpha_i = p_i * cumprod_excl(1 - p_i) * cumsum(alpha_i-1 / cumprod_excl(1 - p_i)).
    The ratio cumprod_excl_j / cumprod_excl_k (k <= j) is taken in log space as exp(L_j - L_k),
    L = exclusive cumsum of log(clamp(1 - p, eps)), so nothing is divided by a vanishing product
    (the paper clamps that denominator); this costs an (S, S) matrix per head, small for G2P.
    prev, p: (..., S) -> alpha_i (..., S); each row sums to at most the mass of `prev`."""
    log_keep = torch.log(torch.clamp(1.0 - p, min=eps))  # (..., S)
    L = torch.cumsum(log_keep, dim=-1) - log_keep  # (..., S) exclusive: sum over l < j
    S = p.shape[-1]
    upper = torch.ones(S, S, dtype=torch.bool, device=p.device).triu()  # [k, j]: k <= j
    diff = (L.unsqueeze(-2) - L.unsqueeze(-1)).masked_fill(~upper, float("-inf"))  # (..., k, j) = L_j - L_k
    q = (prev.unsqueeze(-2) @ torch.exp(diff)).squeeze(-2)  # (..., S): sum_k alpha_i-1,k prod_{k<=l<j}(1 - p_l)
    return p * q


def hard_alignment(prev: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Hard monotonic attention for one target step (Raffel et al. 2017, section 2.2): start at the
    position the previous step attended and move right until p >= 0.5; attend there (one-hot).
    Running off the end attends nowhere (all zeros, a zero context), and so does every later step,
    since there is no position left to start from. prev, p: (..., S) -> (..., S)."""
    S = p.shape[-1]
    j = torch.arange(S, device=p.device)
    start = prev.argmax(dim=-1, keepdim=True)  # (..., 1) where the previous step attended
    alive = prev.sum(dim=-1, keepdim=True) > 0  # (..., 1) False once a step ran off the end
    stop = (p >= 0.5) & (j >= start) & alive  # (..., S)
    first = stop.float().argmax(dim=-1, keepdim=True)  # (..., 1) the first position that stops
    return torch.zeros_like(p).scatter(-1, first, 1.0) * stop.any(dim=-1, keepdim=True)


class Monotonic(AlignmentKernel):
    """Monotonic attention (Raffel et al. 2017, https://arxiv.org/abs/1704.00784) with dot-product
    energies: p_ij = sigmoid(q_i . k_j / sqrt(d) + r_h), r a learned bias per head initialised at
    `r_init` (negative: the alignment starts by moving on), Gaussian noise of std `noise` added to
    the energies in training (the paper uses it to push p towards 0 or 1). Padding keys get p = 0.

    Training (and eval with hard=False): the expected alignment (`expected_alignment`), soft,
    differentiable; rows sum to at most 1 (mass that runs off the end attends nowhere).
    Eval with hard=True (decoding): hard monotonic attention (`hard_alignment`), online and
    linear-time in the source. The full forward in eval runs the same hard steps, so cached
    step-by-step decoding equals it. The context is the alignment applied to v (no softmax).
    The paper's energy is additive with a weight-normalised scale g; ours is the scaled dot
    product plus r (an adaptation). MoChA (a softmax over the chunk that ends where this
    attention stops) is the subclass `MoChA` below.
    """

    def __init__(self, heads: int, dropout: float = 0.0, r_init: float = -4.0, noise: float = 0.0,
                 hard: bool = True):
        super().__init__(heads, dropout)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise, self.hard = float(noise), bool(hard)
        self.r = nn.Parameter(torch.full((heads,), float(r_init)))  # (H,)

    def selection(self, scores, keep):
        """p_ij = sigmoid(energy + r), 0 on padding keys: (B, H, S)."""
        energy = scores + self.r.float()[:, None]
        if self.training and self.noise > 0:
            energy = energy + self.noise * torch.randn_like(energy)
        p = torch.sigmoid(energy)
        return p if keep is None else p.masked_fill(~keep, 0.0)

    def step(self, prev, scores, keep):
        p = self.selection(scores, keep)
        if self.hard and not self.training:
            return hard_alignment(prev, p)
        return expected_alignment(prev, p)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, noise={self.noise}, hard={self.hard}"


def chunk_readout(alpha: torch.Tensor, u: torch.Tensor, width: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """MoChA's chunkwise softmax (Chiu & Raffel 2018, eq. 18-20) for one target step:

        beta_k = sum_{j = k}^{k + w - 1} alpha_j exp(u_k) / sum_{l = j - w + 1}^{j} exp(u_l)

    the expected attention when monotonic attention stops at j (probability alpha_j) and a softmax
    runs over the chunk of `width` positions ending there. With a one-hot alpha (hard attention)
    it is exactly that softmax. alpha, u: (..., S); keep: broadcastable bool or None -> (..., S)."""
    if keep is not None:
        u = u.masked_fill(~keep, float("-inf"))
    u = u - u.amax(dim=-1, keepdim=True).clamp(min=-1e30)  # stable exp; a fully masked row stays -inf
    e = torch.exp(u)  # (..., S), 0 on padding
    window_sum = F.pad(e, (width - 1, 0)).unfold(-1, width, 1).sum(-1)  # (..., S): sum over [j - w + 1, j]
    ratio = alpha / window_sum.clamp(min=1e-30)  # (..., S)
    forward_sum = F.pad(ratio, (0, width - 1)).unfold(-1, width, 1).sum(-1)  # (..., S): sum over [k, k + w - 1]
    return e * forward_sum


class MoChA(Monotonic):
    """Monotonic chunkwise attention (Chiu & Raffel 2018, https://arxiv.org/abs/1712.05382):
    monotonic attention chooses where to stop (`Monotonic`, the carried state), then a softmax over
    the `chunk` positions ending there gives the weights applied to v (`chunk_readout`); expected
    in training, hard at decoding. Adaptation: the chunk energies are the same scaled dot products
    q.k / sqrt(d) (the paper learns a second energy function); the selection adds r. chunk=1 is
    monotonic attention."""

    def __init__(self, heads: int, dropout: float = 0.0, r_init: float = -4.0, noise: float = 0.0,
                 hard: bool = True, chunk: int = 3):
        super().__init__(heads, dropout, r_init, noise, hard)
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.chunk = chunk

    def readout(self, alpha, scores, keep):
        return chunk_readout(alpha, scores, self.chunk, keep)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk={self.chunk}"


# Cross-attention kernels (`model.cross_kernel`): every kernel, plus the stateful alignment ones,
# which only cross-attention may use (the builder refuses them for self-attention).
ALIGNMENT_KERNELS = {"location": LocationAware, "monotonic": Monotonic, "mocha": MoChA}
CROSS_KERNELS = {**KERNELS, **ALIGNMENT_KERNELS}


def weight_giving(registry: dict) -> list[str]:
    """The kinds of a kernel registry whose class gives attention weights (`gives_weights`), for
    the messages of what needs them (copy heads, guided attention)."""
    return [kind for kind, cls in registry.items() if cls.gives_weights]


# ----------------------------------------------------------------------------- patterns
class Pattern(nn.Module, Variant):
    """Base of the attention patterns: `mask(causal, q_start, key_padding) -> Mask` (its `rules()`
    on top of causality and padding) and `new_cache(batch, kv_heads, max_len, head_dim, dtype,
    device)`, the key/value store attention decodes with (cache.KeyStore). The build passes a
    pattern nothing; its `__init__` arguments are options.

    positions_in_cache: whether decoding places positions inside the cache (sinks) rather than
    at absolute positions; such patterns need a relative position scheme (the builder checks) and
    decode.py (not FastDecoder's static cache). constant_state: whether the decoding cache stays
    the same size however long the generation (decode.stream then never restarts it)."""

    positions_in_cache = False
    constant_state = False

    def mask(self, causal: bool, q_start: int = 0, key_padding: torch.Tensor | None = None) -> Mask:
        return Mask(causal=causal, q_start=q_start, key_padding=key_padding, **self.rules())

    def rules(self) -> dict:
        return {}

    def new_cache(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device) -> KVCache:
        """A preallocated cache for `max_len` positions."""
        return KVCache(batch, kv_heads, max_len, head_dim, dtype, device)


class Dense(Pattern):
    """Every query sees every key it may (all of them, or the past when causal)."""


class SlidingWindow(Dense):
    """Each query sees the `window` most recent positions, itself included (Longformer's local
    attention, https://arxiv.org/abs/2004.05150; Mistral 7B, https://arxiv.org/abs/2310.06825).
    Decoding keeps a rolling cache of `window` positions: memory bounded by the window."""

    def __init__(self, window: int = 256):
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window

    def rules(self) -> dict:
        return {"window": self.window}

    def new_cache(self, batch, kv_heads, max_len, head_dim, dtype, device) -> KVCache:
        if self.window >= max_len:
            return KVCache(batch, kv_heads, max_len, head_dim, dtype, device)
        return RollingKVCache(batch, kv_heads, self.window, head_dim, dtype, device)

    def extra_repr(self) -> str:
        return f"window={self.window}"


class Longformer(Dense):
    """Longformer (https://arxiv.org/abs/2004.05150): a sliding window plus `global_tokens` leading
    positions that attend everywhere and are attended by all (here: the first n positions)."""

    def __init__(self, window: int = 256, global_tokens: int = 1):
        super().__init__()
        if window < 1 or global_tokens < 0:
            raise ValueError(f"window must be >= 1 and global_tokens >= 0, got {window}, {global_tokens}")
        self.window, self.global_tokens = window, global_tokens

    def rules(self) -> dict:
        return {"window": self.window, "global_tokens": self.global_tokens}

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}"


class BigBird(Longformer):
    """BigBird (https://arxiv.org/abs/2007.14062): window + global tokens + `random_blocks` random
    key blocks of `block` positions per query block. Token-level window here (the paper slides
    whole blocks); the random blocks are fixed by `seed`."""

    def __init__(self, window: int = 256, global_tokens: int = 1, random_blocks: int = 2, block: int = 64,
                 seed: int = 0):
        super().__init__(window, global_tokens)
        if random_blocks < 0 or block < 1:
            raise ValueError(f"random_blocks must be >= 0 and block >= 1, got {random_blocks}, {block}")
        self.random_blocks, self.block, self.seed = random_blocks, block, seed

    def rules(self) -> dict:
        return {**super().rules(), "random_blocks": self.random_blocks, "block": self.block, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, random_blocks={self.random_blocks}, block={self.block}, seed={self.seed}"


class Sinks(SlidingWindow):
    """Attention sinks + sliding window (StreamingLLM, Xiao et al. 2023,
    https://arxiv.org/abs/2309.17453): each query sees the first `sinks` positions and the `window`
    most recent ones, itself included. Decoding keeps exactly those keys (`cache.SinkCache`),
    so memory is constant however long the generation, and positions are those inside the cache
    (RoPE keys stored unrotated and rotated at their cache slot, ALiBi distances by cache slot).
    The full forward (training, a prompt at position 0) uses the same mask at absolute positions.

        keys:  [0 .. sinks-1]  . . . (evicted) . . .  [t-window+1 .. t]
        cache positions: 0 .. sinks-1, sinks .. sinks+window-1 (query at the last)
    """

    positions_in_cache = True
    constant_state = True

    def __init__(self, sinks: int = 4, window: int = 256):
        super().__init__(window)
        if sinks < 0:
            raise ValueError(f"sinks must be 0 or more, got {sinks}")
        self.sinks = sinks

    def rules(self) -> dict:
        return {"window": self.window, "sinks": self.sinks}

    def new_cache(self, batch, kv_heads, max_len, head_dim, dtype, device) -> KVCache:
        return SinkCache(batch, kv_heads, self.sinks, self.window, head_dim, dtype, device)

    def extra_repr(self) -> str:
        return f"sinks={self.sinks}, window={self.window}"


PATTERNS = {"dense": Dense, "sliding": SlidingWindow, "longformer": Longformer, "bigbird": BigBird, "sinks": Sinks}
