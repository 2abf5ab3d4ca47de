"""Sequence mixers: what a block runs where a Transformer runs self-attention (`model.mixer`).

    Mixer       the seam: the forward signature and the declarations every mixer answers
    attention   multi-head softmax attention (`Attention`): GQA / MQA, kernels, patterns, KV cache;
                also the decoder's cross-attention
    retention   RetNet's multi-scale retention (Sun et al. 2023, https://arxiv.org/abs/2307.08621):
                a decayed linear attention with a parallel form for training and a recurrent form
                with a fixed-size state for decoding

Every mixer subclasses `Mixer`: `mixer(x, pos, mask, cache, start) -> (y, weights or None)` and
the declarations `fast_decoding`, `causal_only`, `new_cache`, `new_memory`, `constant_state`,
`activation_floats`, `residual_projections`, `decays`, so `Block`, the decoders, the memory
estimate and `tfmr explore` take any of them. A hybrid stack is configuration:
`model.mixer_pattern=retention,retention,attention` repeats that list of kinds over the layers
(options from `model.mixer` for layers of its kind).

Attention, in order (positions act as an explicit step; a cache only stores):

    q_proj, k_proj, v_proj -> pos.rotate (absolute positions) -> cache.store
                           -> kernel(mask, pos.score: pos.bias, or a term of q and k) -> out_proj
    a cache with positions inside it (sinks, segment memory): cache.store -> rotate_inside

Retention, one head (h), positions n, m; gamma_h = 1 - 2^(-5 - h):

    parallel    O = (Q K^T * D) V,   D[n, m] = gamma^(n - m) if n >= m else 0
    recurrent   S_n = gamma S_{n-1} + k_n^T v_n,   o_n = q_n S_n          (S: D_k x D_v per head)
    chunkwise   a chunk of T tokens after state S: O = (Q K^T * D) V + (gamma^(i+1) q_i) S,
                S' = gamma^T S + sum_m gamma^(T-1-m) k_m^T v_m  (prefill and decoding steps)

then per-head group norm, a swish gate and the output projection:
Y = (swish(X W_G) * GroupNorm_h(O)) W_O. RetNet's rotation of q and k (its "xPos-like" Theta) is
the model's own position seam: `model.pos=rope` (or xpos) rotates them, `model.pos=none` leaves
them. The paper's score normalisations (`rows`: the decay rows over sqrt(sum), the score rows over
max(|sum|, 1)) are off by default: the group norm undoes any per-row scale up to its epsilon;
`rows=paper` / `rows=torchscale` and `norm=group` / `norm=rms` give the published variants
exactly (`RowScale`, `head_norm`).
Not here: the chunkwise-recurrent training form for long sequences, bidirectional retention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KeyStore, LayerCache, RetentionState, SegmentMemory, rotate_inside
from .masks import Mask
from .positions import Start
from .variant import BuildContext, Variant


def retention_decays(heads: int) -> torch.Tensor:
    """log gamma_h for gamma_h = 1 - 2^(-5 - h), h = 0 .. heads - 1 (RetNet, section 2.2). (H,) float32."""
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(heads, dtype=torch.float32))))


def decay_mask(log_gamma: torch.Tensor, T: int) -> torch.Tensor:
    """D (H, T, T): gamma_h^(n - m) where n >= m, else 0 (float32)."""
    n = torch.arange(T, device=log_gamma.device)
    diff = (n[:, None] - n[None, :]).to(torch.float32)  # (T, T)
    D = torch.exp(diff.clamp(min=0) * log_gamma.float()[:, None, None])  # (H, T, T)
    return D.masked_fill(diff < 0, 0.0)


def retention_parallel(q, k, v, log_gamma):
    """The parallel form: q, k (B, H, T, Dk), v (B, H, T, Dv) -> (B, H, T, Dv)."""
    D = decay_mask(log_gamma, q.shape[2]).to(q.dtype)  # (H, T, T)
    return ((q @ k.transpose(-2, -1)) * D) @ v


def retention_recurrent(q, k, v, log_gamma, state=None):
    """The recurrent form, one token at a time: S_n = gamma S_{n-1} + k_n^T v_n, o_n = q_n S_n.
    -> (out (B, H, T, Dv), final state (B, H, Dk, Dv))."""
    B, H, T, Dk = q.shape
    gamma = torch.exp(log_gamma.float()).to(q.dtype)[None, :, None, None]  # (1, H, 1, 1)
    S = q.new_zeros(B, H, Dk, v.shape[-1]) if state is None else state
    outs = []
    for n in range(T):
        S = gamma * S + k[:, :, n, :, None] * v[:, :, n, None, :]  # (B, H, Dk, Dv)
        outs.append((q[:, :, n, None, :] @ S).squeeze(2))  # (B, H, Dv)
    return torch.stack(outs, dim=2), S


def retention_chunk(q, k, v, log_gamma, state):
    """The chunkwise form: T tokens after `state` (B, H, Dk, Dv) -> (out (B, H, T, Dv), new state).
    T = 1 is the recurrent step; a zero state is the parallel form."""
    T = q.shape[2]
    lg = log_gamma.float()[:, None]  # (H, 1)
    i = torch.arange(T, device=q.device, dtype=torch.float32)[None, :]  # (1, T)
    into = torch.exp((i + 1) * lg).to(q.dtype)[None, :, :, None]  # (1, H, T, 1): gamma^(i+1)
    out = retention_parallel(q, k, v, log_gamma) + (q * into) @ state  # (B, H, T, Dv)
    carry = torch.exp((T - 1 - i) * lg).to(q.dtype)[None, :, :, None]  # (1, H, T, 1): gamma^(T-1-m)
    new = (
        torch.exp(T * lg).to(q.dtype)[None, :, :, None] * state + (k * carry).transpose(-2, -1) @ v
    )
    return out, new  # (B, H, T, Dv), (B, H, Dk, Dv)


# ----------------------------------------------------------------------------- retention's normalisations
class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's `channels // heads` values (torchscale's RMSNorm(head_dim, eps,
    elementwise_affine=False) on every head), computed in float32; `affine` adds a learned scale
    per channel. x (N, channels) -> (N, channels)."""

    def __init__(self, heads: int, channels: int, eps: float, affine: bool = False):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float().view(x.shape[0], self.heads, -1)  # (N, H, Dv)
        y = (
            (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))
            .view(x.shape)
            .to(x.dtype)
        )
        return y if self.weight is None else y * self.weight

    def extra_repr(self) -> str:
        return f"heads={self.heads}, eps={self.eps}, affine={self.weight is not None}"


HEAD_NORMS = ("group", "rms", "none")  # the kinds `head_norm` makes


def head_norm(kind: str, heads: int, channels: int, eps: float, affine: bool) -> nn.Module:
    """The norm on each head's output (`norm` of retention): group (GroupNorm, one group per head:
    the paper; torchscale 2023 is this with affine=false), rms (per-head RMSNorm: torchscale today,
    affine=false), none."""
    if kind == "group":
        return nn.GroupNorm(heads, channels, eps=eps, affine=affine)
    if kind == "rms":
        return HeadRMSNorm(heads, channels, eps, affine)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown retention norm {kind!r}; valid: {', '.join(HEAD_NORMS)}")


def decay_row_sums(log_gamma: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """sum_{m=0}^{n} gamma^m for each head and each n: (H,) and (...,) -> (H, ...) float32."""
    lg = log_gamma.float().view(-1, *([1] * n.dim()))  # (H, 1, ...)
    return torch.expm1((n.float() + 1) * lg) / torch.expm1(lg)


class RowScale:
    """Retention's score row normalisations, as a number s (B or 1, H, T, 1) that divides each
    head's output row: O / s. `rows=none` (this class) divides by nothing; the subclasses follow
    RetNet's normalisations (the paper's section 2.2 and microsoft/torchscale), whose three forms
    divide by different numbers, so, as in torchscale, they agree only through the norm (up to its
    epsilon). Every s is computed without gradient, as torchscale's detached scales.

        parallel    sqrt(r_n) * c_n        r_n = sum_{m <= n} gamma^(n-m), c_n from R~ = QK^T * D / sqrt(r)
        recurrent   sqrt(r_n)              one token after a state: n its position
        chunkwise   sqrt(r~_i) * max(clamp(sum_j |R~_ij|, 1), kv)   a chunk of T after a state; r~ the
                    row sums inside the chunk, kv = clamp(max_v sum_k |S| / w, 1) of the state before
    """

    def parallel(self, q, k, log_gamma) -> torch.Tensor | None:
        return None

    def recurrent(self, log_gamma, position: int) -> torch.Tensor | None:
        return None

    def chunk(self, q, k, log_gamma, state) -> torch.Tensor | None:
        return None


class PaperRows(RowScale):
    """The paper's normalisations (Sun et al. 2023, section 2.2, "retention score normalization";
    torchscale July - September 2023, commit d1fefe9): c_n = max(|sum_m R~_nm|, 1); the chunk's
    state scale divides by sqrt(r~_{T-1})."""

    def parallel(self, q, k, log_gamma):
        with torch.no_grad():
            r, scores = self._rows(q, k, log_gamma)  # (H, T), (B, H, T, T)
            return r.sqrt()[None, :, :, None] * self.clamp_rows(scores)  # (B, H, T, 1)

    def clamp_rows(self, scores):
        return scores.sum(-1, keepdim=True).abs().clamp(min=1)

    def state_weight(self, r_last):
        return r_last.sqrt()

    def _rows(self, q, k, log_gamma):
        T = q.shape[2]
        D = decay_mask(log_gamma, T)  # (H, T, T)
        r = D.sum(-1)  # (H, T)
        return r, (q.float() @ k.float().transpose(-2, -1)) * (
            D / r.sqrt()[..., None]
        )  # R~ (B, H, T, T)

    def recurrent(self, log_gamma, position):
        r = decay_row_sums(log_gamma, torch.tensor(position, device=log_gamma.device))  # (H,)
        return r.sqrt()[None, :, None, None]  # (1, H, 1, 1)

    def chunk(self, q, k, log_gamma, state):
        with torch.no_grad():
            r, scores = self._rows(q, k, log_gamma)  # inside the chunk
            inner = scores.abs().sum(-1, keepdim=True).clamp(min=1)  # (B, H, T, 1)
            kv = (
                state.float().abs().sum(-2, keepdim=True).amax(-1, keepdim=True)
                / self.state_weight(r[:, -1])[None, :, None, None]
            ).clamp(min=1)  # (B, H, 1, 1)
            return r.sqrt()[None, :, :, None] * torch.maximum(inner, kv)


class TorchscaleRows(PaperRows):
    """torchscale's normalisations today (commit fdd8838, November 2023 on): c_n = sum_m |R~_nm|
    clamped to [1, 5e4]; the chunk's state scale divides by r~_{T-1}."""

    def clamp_rows(self, scores):
        return scores.abs().sum(-1, keepdim=True).clamp(min=1, max=5e4)

    def state_weight(self, r_last):
        return r_last


ROW_SCALES = {"none": RowScale, "paper": PaperRows, "torchscale": TorchscaleRows}


class Mixer(nn.Module, Variant):
    """Base of the sequence mixers: what a block runs in its attention seat.

    forward(x (B, T, dim), pos, mask, cache=None, start=0, kv=None, state=None)
        -> (y (B, T, dim), weights (B, H, T, Tk) or None); `kv` and `state`: cross-attention only
    fast_decoding     FastDecoder's static per-row cache can run it
    causal_only       decoders only (the builder refuses it in encoders)
    new_cache(pattern, batch, max_len, dtype, device) -> LayerCache   its decoding state, one layer
    new_memory(length) -> LayerCache                  its Transformer-XL segment memory
    constant_state(pattern)     whether that state stays one size however long the text
    activation_floats(T)        floats per token autograd keeps in training (memory.py)
    residual_projections()      the projections that write into the residual stream (init)
    decays()                    log decay per head (H,) of a decayed mixer (retention), else None:
                                what `tfmr explore` draws for a layer that gives no weights"""

    fast_decoding: bool = False
    causal_only: bool = False

    def new_cache(self, pattern, batch: int, max_len: int, dtype, device) -> LayerCache:
        raise NotImplementedError

    def new_memory(self, length: int) -> LayerCache:
        raise NotImplementedError

    def constant_state(self, pattern) -> bool:
        raise NotImplementedError

    def activation_floats(self, T: int) -> int:
        raise NotImplementedError

    def residual_projections(self) -> list[nn.Linear]:
        return [self.out_proj]

    def decays(self) -> torch.Tensor | None:
        return None


class Attention(Mixer):
    """Multi-head attention with separate q/k/v projections; GQA / MQA through `kv_heads`
    (Vaswani et al. 2017, https://arxiv.org/abs/1706.03762; GQA: https://arxiv.org/abs/2305.13245).
    The `attention` kind of `model.mixer`, and the decoder's cross-attention (`kv` given)."""

    fast_decoding = True
    causal_only = False  # retention is causal only; attention runs in encoders too
    receives = (
        "dim",
        "heads",
        "kv_heads",
        "bias",
        "kernel",
        "pos_part",
    )  # all of it: attention has no options

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        bias: bool,
        kernel: nn.Module,
        pos_part: nn.Module | None = None,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if heads % kv_heads:
            raise ValueError(f"heads {heads} is not a multiple of kv_heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(heads * self.head_dim, dim, bias=bias)
        self.kernel = kernel
        self.pos_part = pos_part  # what the position scheme keeps in this layer (Transformer-XL's W_{k,R}), or None

    @classmethod
    def from_config(cls, ctx: BuildContext, **options) -> Attention:
        """Self-attention on a fresh `model.kernel` (ctx.new_kernel), with its own part of the
        position scheme (ctx.new_pos_part, when the context makes one)."""
        part = None if ctx.new_pos_part is None else ctx.new_pos_part()
        return cls(ctx.dim, ctx.heads, ctx.kv_heads, ctx.bias, ctx.new_kernel(), part, **options)

    # ------------------------------------------------------------ declarations (see Mixer)
    def new_cache(self, pattern, batch: int, max_len: int, dtype, device) -> KeyStore:
        return pattern.new_cache(batch, self.kv_heads, max_len, self.head_dim, dtype, device)

    def new_memory(self, length: int) -> SegmentMemory:
        return SegmentMemory(length)

    def constant_state(self, pattern) -> bool:
        return pattern.constant_state

    def activation_floats(self, T: int) -> int:
        dim, kv_dim = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 4 * dim + 2 * kv_dim + (2 * self.heads * T if self.kernel.gives_weights else 0)

    # ------------------------------------------------------------ forward
    def project_kv(self, src: torch.Tensor):
        """Keys and values of `src` (B, S, dim) -> two (B, Hkv, S, D)."""
        B, S, _ = src.shape
        k = (
            self.k_proj(src).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        )  # (B, Hkv, S, D)
        v = (
            self.v_proj(src).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        )  # (B, Hkv, S, D)
        return k, v

    def forward(
        self,
        x,
        pos,
        mask: Mask,
        cache: KeyStore | None = None,
        start: Start = 0,
        kv=None,
        state=None,
    ):
        """Self-attention over `x`, or cross-attention when `kv` (keys, values of a memory) is given.
        `state`: a stateful (alignment) kernel's state between decoding steps (alignment.AlignmentState),
        handed to the kernel as its sixth argument; None in training and for every other kernel."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if kv is None:  # self-attention: positions act on q and k, the cache stores
            q, k, v, mask = self.self_keys(x, q, pos, mask, cache, start)  # k, v: (B, Hkv, Tk, D)
        else:  # cross-attention: keys and values come from the encoder memory, no positions
            k, v = kv
        if self.kv_heads != self.heads:  # share each key/value head among heads // kv_heads queries
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)  # (B, H, Tk, D)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        # a Bias the kernel evaluates at the mask's positions (ALiBi, Transformer-XL's terms), or None
        bias = pos.score(q, k, start, self.pos_part) if kv is None else None
        if state is None:
            out, weights = self.kernel(q, k, v, mask, bias)  # (B, H, T, D)
        else:  # decoding with an alignment kernel: it starts from the previous step's alignment
            out, weights = self.kernel(q, k, v, mask, bias, state)
        out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*D)
        return self.out_proj(out), weights

    def self_keys(self, x, q, pos, mask: Mask, cache: KeyStore | None, start: Start):
        """Keys and values of `x` with q and k rotated -> (q, k, v, mask). Rotation is this step's,
        not the cache's: at absolute positions before the cache stores the keys, or, for a cache
        that places positions inside itself, after it returns every held key (at 0 .. Tk - 1)."""
        k, v = self.project_kv(x)  # (B, Hkv, T, D)
        inside = cache is not None and cache.positions_inside
        if not inside:
            q, k = pos.rotate(q, k, start)
        if cache is not None:
            k, v, mask = cache.store(
                self, x, k, v, start, mask
            )  # (B, Hkv, Tk, D): every held key, oldest first
        if inside:
            q, k = rotate_inside(pos, q, k)
        return q, k, v, mask

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}"


class Retention(Mixer):
    """Multi-scale retention (RetNet, https://arxiv.org/abs/2307.08621), causal only.

    q_proj, k_proj: dim -> dim; v_proj, g_proj: dim -> value_factor * dim (the paper's 2);
    out_proj back to dim. One decay gamma_h per head; keys scaled by 1/sqrt(head_dim).
    Decoding keeps a (B, H, head_dim, value_dim) state per layer (`cache.RetentionState`),
    whatever the length. Attention patterns and bias schemes (ALiBi) do not act here: the decay
    is retention's window. Padding keys (the mask's key_padding) add nothing to the state.

    Options of the published variants (`tfmr.interop.torchscale` loads torchscale's weights):
      norm     the norm on each head's output: group (default; GroupNorm, the paper), rms
               (per-head RMSNorm, torchscale today), none; `affine` (default true) gives it a
               learned per-channel scale (and shift, group); torchscale's norms have none
      rows     the score row normalisations (`RowScale`): none (default; the group norm undoes
               them up to its epsilon), paper (the paper and torchscale 2023), torchscale (today)
      eps      the norm's epsilon (torchscale's layernorm_eps is 1e-6)
    paper 2023 = norm=group affine=false rows=paper; torchscale today = norm=rms affine=false
    rows=torchscale, bias=false."""

    quantizable = (
        False  # new_memory() reads q_proj.weight's dtype: weight-only quantization refuses it
    )

    fast_decoding = False  # FastDecoder's static per-row cache holds keys, not a recurrent state
    causal_only = True  # the builder refuses it in encoders
    receives = ("dim", "heads", "bias")

    def __init__(
        self,
        dim: int,
        heads: int,
        bias: bool = True,
        value_factor: float = 2.0,
        eps: float = 1e-5,
        norm: str = "group",
        affine: bool = True,
        rows: str = "none",
    ):
        super().__init__()
        if rows not in ROW_SCALES:
            raise ValueError(f"unknown retention rows {rows!r}; valid: {', '.join(ROW_SCALES)}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.value_dim = int(value_factor * self.head_dim)
        if self.value_dim < 1:
            raise ValueError(f"value_factor {value_factor} leaves no value dimensions")
        self.value_factor, self.eps, self.norm_kind, self.rows = value_factor, eps, norm, rows
        vdim = heads * self.value_dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, vdim, bias=bias)
        self.g_proj = nn.Linear(dim, vdim, bias=bias)
        self.out_proj = nn.Linear(vdim, dim, bias=bias)
        self.norm = head_norm(norm, heads, vdim, eps, affine)
        self.scale = ROW_SCALES[rows]()
        self.register_buffer("log_gamma", retention_decays(heads), persistent=False)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.log_gamma = self.log_gamma.float()  # the decays stay float32 under model.to(bf16)
        return out

    # ------------------------------------------------------------ declarations (see Mixer)
    def new_cache(self, pattern, batch: int, max_len: int, dtype, device) -> RetentionState:
        return RetentionState(batch, self.heads, self.head_dim, self.value_dim, dtype, device)

    def new_memory(self, length: int) -> RetentionState:
        """Across segments retention carries its state (detached), whatever `length` is."""
        p = self.q_proj.weight
        return RetentionState(
            None, self.heads, self.head_dim, self.value_dim, p.dtype, p.device, detach=True
        )

    def constant_state(self, pattern) -> bool:
        return True

    def activation_floats(self, T: int) -> int:
        dim, vdim = self.heads * self.head_dim, self.heads * self.value_dim
        return (
            3 * dim + 6 * vdim + 2 * self.heads * T
        )  # x, q, k; v, g, swish, o, norm, gated; scores

    def decays(self) -> torch.Tensor:
        """log gamma_h per head (H,) float32: the decay D[n, m] = gamma_h^(n - m) (`decay_mask`)."""
        return self.log_gamma

    # ------------------------------------------------------------ forward
    def forward(
        self, x, pos, mask, cache: RetentionState | None = None, start=0, kv=None, state=None
    ):
        if kv is not None:
            raise ValueError("retention is a self-mixer; cross-attention stays attention")
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dk)
        k = (
            self.k_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
            * self.head_dim**-0.5
        )
        v = self.v_proj(x).view(B, T, self.heads, self.value_dim).transpose(1, 2)  # (B, H, T, Dv)
        q, k = pos.rotate(
            q, k, start if cache is None else cache.seen
        )  # RetNet's Theta (rope / xpos)
        if mask is not None and mask.key_padding is not None:  # padding adds nothing to any state
            k = k * mask.key_padding[:, None, -T:, None].to(k.dtype)
        o = self.retain(q, k, v, cache)  # (B, H, T, Dv)
        o = self.norm(o.transpose(1, 2).reshape(B * T, self.heads * self.value_dim))  # (B*T, H*Dv)
        y = F.silu(self.g_proj(x)) * o.view(B, T, -1)  # (B, T, H*Dv)
        return self.out_proj(y), None

    def retain(self, q, k, v, cache: RetentionState | None) -> torch.Tensor:
        """Retention of q, k (B, H, T, Dk) and v (B, H, T, Dv), each row divided by the form's
        row scale (`rows`): the parallel form without a cache; with one, the recurrent form for
        one token and the chunkwise form for more. -> (B, H, T, Dv)."""
        if cache is None:
            return self._scaled(
                retention_parallel(q, k, v, self.log_gamma),
                self.scale.parallel(q, k, self.log_gamma),
            )
        state = cache.current(q)
        o, S = retention_chunk(q, k, v, self.log_gamma, state)  # (B, H, T, Dv), (B, H, Dk, Dv)
        if q.shape[2] == 1:
            s = self.scale.recurrent(self.log_gamma, cache.seen)
        else:
            s = self.scale.chunk(q, k, self.log_gamma, state)
        cache.keep(S, q.shape[2])
        return self._scaled(o, s)

    @staticmethod
    def _scaled(o: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        return o if s is None else o / s.to(o.dtype)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, head_dim={self.head_dim}, value_dim={self.value_dim}, norm={self.norm_kind}, "
            f"rows={self.rows}"
        )


MIXERS = {"attention": Attention, "retention": Retention}
