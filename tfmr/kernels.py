"""Attention kernels: softmax(q k^T / sqrt(d) + bias, masked) v, computed different ways.

Every kernel is `kernel(q, k, v, mask, bias) -> (out, weights_or_None)` with
q: (B, H, Tq, D), k and v: (B, H, Tk, D) (key/value heads already expanded for GQA),
`mask` a `masks.Mask` (which keys each query may see) and `bias` None, an additive (H, Tq, Tk) or
(B, H, Tq, Tk) tensor, or a described `masks.Bias` (a function of query and key positions, what
position schemes hand over; `LinearBias` is ALiBi's) that the kernel evaluates at the mask's
positions. Every kernel subclasses `Kernel` and declares `gives_weights` (whether it hands back
the weights: guided attention, copy heads and heatmaps need them); `eager_attention(model)` runs
a model on the eager kernel for a while.

    eager   the reference: plain matmuls, returns the attention weights
    sdpa    torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient on GPU);
            causal ALiBi runs on the flash path too (see `alibi_as_extra_dims`)
    flex    FlexAttention (compiled, GPU) for what SDPA cannot run fast: sliding windows, sparse
            patterns, other biases; it hands the easy cases to SDPA and falls back to SDPA with a
            dense mask on CPU, for short inputs and with dropout

Masks and biases are described, not materialised (masks.py), so a kernel can take a fast path
(SDPA's `is_causal`, a FlexAttention block mask) and build the dense matrix only when it has to.
A mask with per-row positions (`by_row`, left-padded batches in fastdecode.py) goes the dense way.
Not here: the masks and biases (masks.py), the attention patterns that make the masks
(patterns.py), the stateful alignment kernels of cross-attention (alignment.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .masks import LinearBias, Mask, dense_bias
from .variant import Variant


# ----------------------------------------------------------------------------- helpers
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
    # monotonic attention, alignment.py). Such kernels are cross-attention only (`model.cross_kernel`)
    # and take one more argument, `kernel(q, k, v, mask, bias, state)`; the builder reads this flag.
    stateful: bool = False

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout

    def start_state(self, batch: int, src_len: int, device):
        """The decoding state this kernel keeps between steps (an alignment kernel's
        `alignment.AlignmentState`; None: it keeps none)."""
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
    c = slopes.to(q.device, torch.float64) * D**0.5  # (H,)
    c_hi = c.to(q.dtype)
    c_lo = (c - c_hi.double()).to(q.dtype)
    last = q_start + q.shape[2] - 1
    a = (last - torch.arange(k_start, k_start + Tk, device=q.device)).clamp(
        min=0
    )  # (Tk,) distance to the last query
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
    return torch.cat((q, qx), -1), torch.cat((k, kx), -1), torch.cat((v, vx), -1), D**-0.5


def _alibi_fast_ok(mask: Mask, q: torch.Tensor, k_len: int) -> bool:
    """Causal ALiBi with nothing else masked, at a precision where the trick is exact enough."""
    plain = mask.is_plain_causal(q.shape[2], k_len) or (
        mask.causal and mask.is_empty(q.shape[2], k_len)
    )
    precise = q.is_cuda or q.dtype in (
        torch.float32,
        torch.float64,
    )  # CPU bf16 matmuls round the sums
    return plain and precise and mask.q_start + q.shape[2] - mask.k_start < 65536


SHORT_KEYS, MANY_ROWS = 64, 1024  # where the math path beats the fused CPU kernel (_math_is_faster)


def _math_is_faster(q: torch.Tensor, k_len: int) -> bool:
    """Where, on CPU, plain matmuls beat PyTorch's fused kernel (torch 2.13, 2-core AMD EPYC, fp32):
    - training at bf16 / fp16: flash's backward is far slower (7x at T=64, head dim 32);
    - decoding or scoring many short rows (no gradients, keys <= 64, batch x heads x queries >=
      1,024): 1.5x faster at 500 x 4 heads x 1 query over 40 keys (a G2P decoder step), 2.6-3.7x
      over 10 padded keys (its encoder), 1.6x at 64 x 4 x 32 over 32; at batch 1 or long keys
      the fused kernel is the faster one (2.4x at 1 x 4 x 1 over 128 keys)."""
    if q.device.type != "cpu":
        return False
    if torch.is_grad_enabled():
        return q.dtype in (torch.bfloat16, torch.float16)
    return k_len <= SHORT_KEYS and q.shape[0] * q.shape[1] * q.shape[2] >= MANY_ROWS


class SDPA(Kernel):
    """PyTorch's fused scaled_dot_product_attention; flash or memory-efficient kernels on GPU.

    Fast paths: plain causal -> `is_causal`; causal ALiBi -> extra head dims (alibi_as_extra_dims)
    on the same causal path. Everything else gets one dense additive mask.
    On CPU it takes the eager math path where that is measured faster (`_math_is_faster`): bf16 /
    fp16 training, and many short rows without gradients (batched G2P decoding); the weights it
    computes there are not handed back (gives_weights stays False).
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__(dropout)
        self.math = Eager(dropout)

    def forward(self, q, k, v, mask: Mask, bias=None):
        if _math_is_faster(q, k.shape[2]):
            return self.math(q, k, v, mask, bias)[0], None
        q_len, k_len = q.shape[2], k.shape[2]
        p = self.dropout if self.training else 0.0
        if bias is None and mask.is_plain_causal(q_len, k_len):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
        if isinstance(bias, LinearBias) and _alibi_fast_ok(mask, q, k_len):
            D = q.shape[-1]
            q2, k2, v2, scale = alibi_as_extra_dims(
                q, k, v, bias.slopes, mask.q_start, mask.k_start
            )
            causal = mask.is_plain_causal(q_len, k_len)
            out = F.scaled_dot_product_attention(
                q2, k2, v2, dropout_p=p, is_causal=causal, scale=scale
            )
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


def block_mask_key(
    mask: Mask, q_len: int, k_len: int, device, compile_mask: bool = True
) -> tuple | None:
    """What a FlexAttention block mask is shared across forwards under: the mask's class and every
    field of it (read from the dataclass, so a field added to `Mask`, to a subclass or to a
    pattern's `Rule` is in the key by itself), the shape and the device. None for a mask that
    holds a tensor (key padding): its block mask is kept with the mask only."""
    described = tuple((f.name, getattr(mask, f.name)) for f in dataclasses.fields(mask))
    if any(isinstance(value, torch.Tensor) for _, value in described):
        return None
    return (type(mask), described, q_len, k_len, str(device), compile_mask)


def flex_block_mask(mask: Mask, q_len: int, k_len: int, device, compile_mask: bool = True):
    """FlexAttention's BlockMask for `mask` (None when nothing is masked). Memoised on the mask,
    and across forwards for masks without padding (a training run builds it once per shape)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if mask.is_empty(q_len, k_len):
        return None
    key = ("block", q_len, k_len, mask.q_start, mask.k_start, str(device))
    shared = block_mask_key(mask, q_len, k_len, device, compile_mask)
    if shared is not None and shared in _BLOCK_MASKS:
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
        mask._memo[key] = create_block_mask(
            mask_mod, B, None, q_len, k_len, device=device, _compile=compile_mask
        )
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
        use_flex = (
            q.is_cuda
            and q.shape[2] >= self.min_len
            and not (self.training and self.dropout > 0)
            and not mask.by_row
            and not self._sdpa_is_fast(q, mask, bias, k.shape[2])
        )
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


def weight_giving(registry: dict) -> list[str]:
    """The kinds of a kernel registry whose class gives attention weights (`gives_weights`), for
    the messages of what needs them (copy heads, guided attention)."""
    return [kind for kind, cls in registry.items() if cls.gives_weights]
