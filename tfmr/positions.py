"""Positional information: where each token sits in the sequence.

The seam. A position scheme acts in one of three places, so every class here answers the same
three hooks and implements only the one it needs (the `Position` base passes its input through):

    embed(x, start) -> x                 add vectors to the token embeddings     (sinusoidal, learned)
                                         x (B, T, dim) -> (B, T, dim)
    rotate(q, k, start) -> (q, k)        rotate queries and keys                  (RoPE, xPos)
                                         q (B, H, T, D), k (B, Hkv, T, D) -> same shapes, same dtypes
    bias(q_len, k_len, start) -> Bias | None
                                         describe a bias added to the attention scores (ALiBi)
    score(q, k, start, part) -> Bias | None
                                         a score term computed from this layer's queries and keys
                                         and the relative distances (Transformer-XL); by default
                                         the `bias` hook's answer

`start` says where the T tokens of the chunk sit (`Start = int | Where`), in one of two forms:

    int s                      token t of every row sits at position s + t: a training forward
                               (s = 0) or a step of decode.py with its KV cache (s = tokens so far)
    Where(positions, slots)    per-row positions of a left-padded batch (fastdecode.py):
                               positions (B, T) long, token t of row b sits at positions[b, t] of
                               its own sequence; slots (T,) long, the static-cache slots the chunk
                               is written to (the cache reads them; position schemes do not)

`positions_of(start, T, device)` gives either form as a tensor of positions, (T,) or (B, T); a
scheme that computes from positions handles both forms with it.

A bias is described, never materialised here: the hook returns a `Bias` (masks.py), a function
`bias.at(q_pos, k_pos)` of query and key positions, and the attention kernel evaluates it at the
positions of the `Mask` it is given. The mask knows where queries and keys sit (an offset query,
a rolling cache's first key, the per-row positions of a left-padded batch over cache slots), so
one description holds everywhere and kernels can take fast paths (ALiBi's `LinearBias` runs on
SDPA's flash kernel). The spine (model.py) and fast decoding (fastdecode.py) call the same hooks.

What a scheme declares on its class (the builder, trainers and fast decoding read these; nothing
reads a kind string or a class name):

    max_len(context) -> int | None       classmethod: the most positions a model of `context`
                                         tokens can place; None = any number (`max_positions(cfg)`
                                         in builder.py asks it for a config)
    layer_part(ctx) -> Module | None     classmethod: the parameters the scheme keeps in each
                                         attention layer (Transformer-XL's W_{k,R}); the builder
                                         gives every self-attention layer its own, and attention
                                         hands it back to `score`. None (the default): none
    embedding_weights() -> [Parameter]   its parameters that count as embeddings (Model.num_params)
    float32 = (names, ...)               constants that stay float32 when the model is cast
    receives = (names, ...)              what the builder passes out of dim, heads, head_dim and
                                         context (variant.py); the constructor's other arguments
                                         are the user's options

Kinds (the `POSITIONS` dict at the bottom):

    none         no positions (NoPE)
    sinusoidal   fixed sin/cos table added to the embeddings           (Vaswani et al. 2017)
    learned      a trained table added to the embeddings               (GPT-2)
    rope         rotary: q and k rotated by position-dependent angles  (Su et al. 2021)
                 options: base, rotary_dim (partial rotary), ntk_factor (NTK-aware base rescaling),
                 interpolation (linear position interpolation), scale_base (xPos decay)
    xpos         RoPE with xPos's exponential decay (scale_base=512 by default)
    alibi        linear attention biases -slope_h * |i - j|            (Press et al. 2021)
    xl           Transformer-XL's relative positions: u, v and W_{k,R} R_{i-j} (Dai et al. 2019)
                 options: base, clamp_len

Relative schemes with learned tables (T5) and rotary variants with per-frequency ramps (YaRN,
Llama 3) are left out; they plug in the same way (tests/test_contracts.py defines a new absolute
and a new bias scheme outside the library and runs them through training and every decoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .masks import Bias, LinearBias
from .variant import Variant


@dataclass
class Where:
    """Per-row placement of a chunk of T tokens in a left-padded batch (the tensor form of `start`).

    positions  (B, T) long   token t of row b sits at position positions[b, t] of its own sequence
    slots      (T,) long     the cache slots the chunk is written to, the same for every row
    """

    positions: torch.Tensor
    slots: torch.Tensor


Start = int | Where


def positions_of(start: Start, length: int, device) -> torch.Tensor:
    """The positions of a chunk of `length` tokens placed at `start`: (T,) for an int, (B, T) for
    a `Where`."""
    if isinstance(start, Where):
        return start.positions
    return torch.arange(start, start + length, device=device)


class Position(nn.Module, Variant):
    """Base class of the position seam; every hook here is the identity.

    start: `int | Where`. An int s places token t of every row at position s + t; a `Where`
    places token t of row b at where.positions[b, t] (per-row positions of a left-padded batch;
    its `slots` are for the cache). `positions_of(start, T, device)` -> (T,) or (B, T).

    embed(x (B, T, dim), start) -> (B, T, dim)           absolute schemes add their vectors
    rotate(q (B, H, T, D), k (B, Hkv, T, D), start) -> (q, k), same shapes and dtypes
    bias(q_len, k_len, start) -> Bias | None             a described bias (masks.Bias): the
        kernel evaluates `bias.at(q_pos, k_pos)` at its Mask's query and key positions, which
        covers offsets, rolling caches and per-row positions alike
    score(q (B, H, Tq, D), k (B, H, Tk, D), start, part) -> Bias | None
        the score term of one attention layer, from its queries and keys as the kernel gets them
        (rotated, cached, heads expanded) and its `part`; by default `bias(Tq, Tk, start)`
    max_len(context) -> int | None    classmethod: most positions placeable (None: unlimited)
    layer_part(ctx) -> Module | None  classmethod: what each attention layer keeps for the scheme
    embedding_weights() -> list[Parameter]    parameters counted as embeddings
    receives                          what the build passes (variant.Variant): a subset of dim,
                                      heads, head_dim, context; the rest of `__init__` is options

    Constants named in `float32` (RoPE frequencies, ALiBi slopes) follow the model's device but
    keep float32 when the model is cast (`model.to(torch.bfloat16)`): rounding them would shift
    every angle and bias."""

    float32: tuple[str, ...] = ()
    # absolute: positions enter as vectors added to the input (sinusoidal, learned), so they cannot
    # be re-placed inside a cache (attention sinks) or relative to a segment memory (Transformer-XL)
    absolute: bool = False

    def _apply(self, fn, recurse=True):
        for name in self.float32:
            t = getattr(self, name)
            setattr(self, name, t.to(fn(t).device))  # fn's device, not its dtype
        return super()._apply(fn, recurse)

    @classmethod
    def max_len(cls, context: int) -> int | None:
        """The most positions this scheme can place in a model of `context` tokens (None: any)."""
        return None

    def embedding_weights(self) -> list[nn.Parameter]:
        """Parameters that are embeddings (left out of the non-embedding parameter count)."""
        return []

    def embed(self, x: torch.Tensor, start: Start = 0) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: Start = 0):
        return q, k

    def bias(self, q_len: int, k_len: int, start: Start = 0) -> Bias | None:
        return None

    def score(
        self, q: torch.Tensor, k: torch.Tensor, start: Start = 0, part: nn.Module | None = None
    ) -> Bias | None:
        """The term this scheme adds to one layer's attention scores (`part`: that layer's
        `layer_part`). Schemes whose term depends on positions only answer through `bias`."""
        return self.bias(q.shape[2], k.shape[2], start)

    @classmethod
    def layer_part(cls, ctx) -> nn.Module | None:
        """The module each self-attention layer keeps for this scheme (built from the model's
        BuildContext); None: the scheme keeps nothing in the layers."""
        return None


class NoPosition(Position):
    """No positional information at all (NoPE); causal masking alone leaks some order."""


def sinusoid_at(
    pos: torch.Tensor, dim: int, base: float = 10000.0, halves: bool = False
) -> torch.Tensor:
    """The sinusoids of Vaswani et al. 2017, section 3.5, at positions `pos` of any shape (...,):
    sin on even, cos on odd dimensions; with `halves`, the same columns reordered as all sines
    then all cosines (Marian, tensor2tensor). -> (..., dim) float32."""
    pos = pos.to(torch.float32)[..., None]  # (..., 1)
    freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) * (-math.log(base) / dim)
    )
    table = torch.zeros(*pos.shape[:-1], dim, device=pos.device)
    table[..., 0::2] = torch.sin(pos * freq)
    table[..., 1::2] = torch.cos(pos * freq[: dim // 2])
    if halves:
        table = torch.cat([table[..., 0::2], table[..., 1::2]], dim=-1)
    return table  # (..., dim)


def sinusoid_table(
    length: int, dim: int, base: float = 10000.0, halves: bool = False
) -> torch.Tensor:
    """`sinusoid_at` for positions 0 .. length - 1: (T, dim)."""
    return sinusoid_at(torch.arange(length), dim, base, halves)


class Sinusoidal(Position):
    """Fixed sinusoidal absolute positions (https://arxiv.org/abs/1706.03762), any length."""

    absolute = True
    receives = ("dim", "context")

    def __init__(
        self,
        dim: int,
        context: int,
        base: float = 10000.0,
        scale: bool = False,
        halves: bool = False,
    ):
        super().__init__()
        self.dim, self.base, self.halves = dim, base, halves
        # Marian/fairseq scale token embeddings by sqrt(dim) before adding positions.
        self.scale = math.sqrt(dim) if scale else 1.0
        self.register_buffer("table", sinusoid_table(context, dim, base, halves), persistent=False)

    def embed(self, x: torch.Tensor, start: Start = 0) -> torch.Tensor:
        if isinstance(start, Where):  # per-row positions: computed, so no table bound to check
            return x * self.scale + sinusoid_at(
                start.positions, self.dim, self.base, self.halves
            ).to(x.dtype)
        end = start + x.shape[1]
        if end > self.table.shape[0]:  # longer than ever seen: extend the table (no parameters)
            self.table = sinusoid_table(
                max(end, 2 * self.table.shape[0]), self.dim, self.base, self.halves
            ).to(x.device)
        return x * self.scale + self.table[start:end].to(x.dtype)  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"base={self.base}, scale={self.scale != 1.0}, halves={self.halves}"


class Learned(Position):
    """Learned absolute positions (GPT-2); cannot go past `context`."""

    absolute = True
    receives = ("dim", "context")

    def __init__(self, dim: int, context: int):
        super().__init__()
        self.context = context
        self.wpe = nn.Embedding(context, dim)

    @classmethod
    def max_len(cls, context: int) -> int | None:
        return context

    def embedding_weights(self) -> list[nn.Parameter]:
        return [self.wpe.weight]

    def embed(self, x: torch.Tensor, start: Start = 0) -> torch.Tensor:
        if isinstance(start, int) and start + x.shape[1] > self.context:
            raise ValueError(
                f"learned positions cover {self.context} tokens; asked for position {start + x.shape[1] - 1}. "
                "Use a shorter input, or a scheme that extrapolates (sinusoidal, rope, alibi)."
            )
        return x + self.wpe(
            positions_of(start, x.shape[1], x.device)
        )  # (B, T, dim) + (T or B, T, dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rope(Position):
    """Rotary position embedding, RoFormer (https://arxiv.org/abs/2104.09864).

    Queries and keys are rotated by an angle proportional to their position, so q_m . k_n depends
    on m - n only. Convention: Hugging Face Llama's `rotate_half` (GPT-NeoX): within the first
    `rotary_dim` dimensions of a head, dimension i pairs with dimension i + rotary_dim/2 and turns
    by the angle pos * base^(-2i / rotary_dim). Meta's original Llama code pairs neighbours
    (2i, 2i + 1) instead; Hugging Face permutes the q/k weights when converting, so Hugging Face
    checkpoints load here as they are. Dimensions past `rotary_dim` pass through (partial rotary,
    GPT-NeoX / Phi).

    Length extension, both off by default:
      ntk_factor     NTK-aware scaling: base -> base * factor^(r / (r - 2)), which stretches the
                     low frequencies by about `factor` and leaves the highest one alone
                     (https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/)
      interpolation  linear position interpolation: positions divided by the factor
                     (Chen et al. 2023, https://arxiv.org/abs/2306.15595; HF rope_type "linear")
      scale_base     xPos (Sun et al. 2022, https://arxiv.org/abs/2212.10554): q scaled by
                     zeta^(pos / scale_base), k by its inverse, so scores decay with distance;
                     zeta_i = (2i / r + gamma) / (1 + gamma). Positions are absolute (not centred),
                     so the scale stays in float32 range up to about 36k tokens at scale_base 512.
    """

    float32 = ("inv_freq", "zeta")
    receives = ("head_dim", "context")

    def __init__(
        self,
        head_dim: int,
        context: int,
        base: float = 10000.0,
        rotary_dim: int | None = None,
        ntk_factor: float = 1.0,
        interpolation: float = 1.0,
        scale_base: float | None = None,
        gamma: float = 0.4,
    ):
        super().__init__()
        r = head_dim if rotary_dim in (None, 0) else int(rotary_dim)
        if r % 2 or not 0 < r <= head_dim:
            raise ValueError(
                f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}"
            )
        if ntk_factor < 1.0 or interpolation < 1.0:
            raise ValueError(
                f"ntk_factor and interpolation must be >= 1, got {ntk_factor} and {interpolation}"
            )
        self.head_dim, self.rotary_dim, self.base = head_dim, r, float(base)
        self.ntk_factor, self.interpolation, self.scale_base, self.gamma = (
            ntk_factor,
            interpolation,
            scale_base,
            gamma,
        )
        eff_base = (
            self.base * ntk_factor ** (r / (r - 2)) if ntk_factor != 1.0 and r > 2 else self.base
        )
        # the same float32 arithmetic as Hugging Face, so tables agree bit for bit
        inv_freq = 1.0 / (
            eff_base ** (torch.arange(0, r, 2, dtype=torch.int64).float() / r)
        )  # (r/2,)
        self.inv_freq = (
            inv_freq / interpolation
        )  # float32 on the model's device (see Position._apply)
        self.zeta = (torch.arange(0, r, 2, dtype=torch.float32) / r + gamma) / (1 + gamma)  # (r/2,)
        self.context = context
        self._last: tuple = (
            None,
            None,
        )  # (start, length, device) -> tables: every layer reuses them

    def tables(self, start: int, length: int, device) -> tuple[torch.Tensor, ...]:
        """cos, sin (T, r) for positions [start, start + length), in float32, and the xPos scale
        (T, r) or None. Every layer of a forward asks for the same: the last answer is kept."""
        key = (start, length, str(device))
        if self._last[0] != key:
            pos = torch.arange(start, start + length, device=device, dtype=torch.float32)
            self._last = (key, self.tables_at(pos))
        return self._last[1]

    def tables_at(self, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """cos, sin and xPos scale (or None) at positions `pos` of any shape (..., T) -> (..., T, r)."""
        pos = pos.to(torch.float32)
        freqs = pos[..., None] * self.inv_freq.to(pos.device)  # (..., T, r/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (..., T, r): dims i and i + r/2 share an angle
        scale = None
        if self.scale_base is not None:
            scale = self.zeta.to(pos.device) ** (pos[..., None] / self.scale_base)  # (..., T, r/2)
            scale = torch.cat((scale, scale), dim=-1)  # (..., T, r)
        return angles.cos(), angles.sin(), scale

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: Start = 0):
        """q (B, H, T, D), k (B, Hkv, T, D) -> rotated q, k (same shapes and dtypes), at an int
        start (tables shared by the batch, memoised) or per-row positions (a `Where`)."""
        if isinstance(start, Where):
            cos, sin, scale = (
                None if t is None else t[:, None] for t in self.tables_at(start.positions)
            )  # (B, 1, T, r)
        else:
            cos, sin, scale = self.tables(start, q.shape[2], q.device)  # (T, r)
        if scale is None:
            return self._turn(q, cos, sin), self._turn(k, cos, sin)
        return self._turn(q, cos * scale, sin * scale), self._turn(k, cos / scale, sin / scale)

    def _turn(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        r = self.rotary_dim
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, r) or (B, 1, T, r), broadcast over heads
        if r == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rot, rest = x[..., :r], x[..., r:]  # partial rotary: only the first r dims turn
        return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)

    def extra_repr(self) -> str:
        parts = [f"base={self.base:g}", f"rotary_dim={self.rotary_dim}/{self.head_dim}"]
        if self.ntk_factor != 1.0:
            parts.append(f"ntk_factor={self.ntk_factor:g}")
        if self.interpolation != 1.0:
            parts.append(f"interpolation={self.interpolation:g}")
        if self.scale_base is not None:
            parts.append(f"xpos(scale_base={self.scale_base:g}, gamma={self.gamma:g})")
        return ", ".join(parts)


class XPos(Rope):
    """xPos (https://arxiv.org/abs/2212.10554): RoPE plus an exponential decay with distance,
    zeta^((m - n) / scale_base) on the score of query m and key n. The same class as `rope`
    with its xPos option on by default."""

    def __init__(
        self,
        head_dim: int,
        context: int,
        base: float = 10000.0,
        rotary_dim: int | None = None,
        ntk_factor: float = 1.0,
        interpolation: float = 1.0,
        scale_base: float = 512.0,
        gamma: float = 0.4,
    ):
        super().__init__(
            head_dim, context, base, rotary_dim, ntk_factor, interpolation, scale_base, gamma
        )


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's head slopes (Press et al. 2021, section 3): for n heads, a power of two, the
    geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8); otherwise the slopes of the nearest
    smaller power of two p, then every other slope of 2p heads. (heads,) float32."""
    if heads < 1:
        raise ValueError(f"heads must be at least 1, got {heads}")
    p = 2 ** math.floor(math.log2(heads))
    slopes = [2.0 ** (-8.0 * i / p) for i in range(1, p + 1)]
    slopes += [2.0 ** (-8.0 * i / (2 * p)) for i in range(1, 2 * p + 1, 2)][: heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


class Alibi(Position):
    """Attention with Linear Biases (https://arxiv.org/abs/2108.12409): no position vectors; each
    head adds -slope_h * |i - j| to the score of query i on key j. Causal models see j <= i only,
    where this is the paper's -slope_h * (i - j); bidirectional models get the symmetric form."""

    float32 = ("slopes",)
    receives = ("heads",)

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        self.slopes = alibi_slopes(
            heads
        )  # (H,) float32 on the model's device (see Position._apply)

    def bias(self, q_len: int, k_len: int, start: Start = 0) -> LinearBias:
        """The bias described by its slopes (`LinearBias`); the kernel evaluates it at its mask's
        query and key positions, whatever `start` is."""
        return LinearBias(self.slopes)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


def xl_sinusoids(dist: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's R at distances `dist` (n,): all sines, then all cosines, of
    dist * inv_freq. -> (n, dim) float32."""
    angles = dist.to(torch.float32)[:, None] * inv_freq.to(dist.device)[None, :]  # (n, dim/2)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (n, dim)


class RelativeScores(Bias):
    """Transformer-XL's position terms of one layer's scores, described (Dai et al. 2019, sec. 3.3):

        scale * ( u . k_j  +  (q_i + v) . W_{k,R} R_{i-j} )        (H, Tq, Tk) per batch row

    the content term q_i . k_j being the kernel's own. Evaluated at the query and key positions of
    the kernel's Mask, so one description holds for training, a KV cache offset, a segment memory
    and the per-row positions of fast decoding. The distances are gathered from a table of the
    span they take (0 .. Tk - 1 under a causal mask: the reference's relative shift), so the
    table costs one (B, H, Tq, n) product, n <= Tk (2 Tk - 1 for a bidirectional model)."""

    def __init__(self, q, k, u, v, r_proj: nn.Module, inv_freq: torch.Tensor, clamp_len: int = 0):
        self.q, self.k, self.u, self.v = (
            q,
            k,
            u,
            v,
        )  # q (B, H, Tq, D), k (B, H, Tk, D), u and v (H, D)
        self.r_proj, self.inv_freq, self.clamp_len = r_proj, inv_freq, clamp_len

    def at(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        dist = q_pos - k_pos  # (..., Tq, Tk)
        return self._terms(dist, int(dist.min()), int(dist.max()))

    def dense(self, mask, q_len: int, k_len: int, device, dtype) -> torch.Tensor:
        """The terms at `mask`'s positions, (B, H, Tq, Tk). The span of distances comes from the
        mask's description (no data-dependent shape, so fast decoding compiles it): a causal mask
        hides every negative distance, and sees none past Tk - 1."""
        q_pos, k_pos = mask.positions(q_len, k_len, device)
        if mask.by_row:
            lo, hi = (0 if mask.causal else 1 - k_len), k_len - 1
        else:
            lo = mask.q_start - mask.k_start - (k_len - 1)
            hi = mask.q_start + q_len - 1 - mask.k_start
            lo = max(lo, 0) if mask.causal else lo
        return self._terms(q_pos - k_pos, lo, max(lo, hi)).to(dtype)

    def _terms(self, dist: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        B, H, Tq, D = self.q.shape
        span = torch.arange(lo, hi + 1, device=self.q.device)  # (n,) the distances of the table
        if self.clamp_len > 0:
            span = span.clamp(-self.clamp_len, self.clamp_len)
        R = xl_sinusoids(span, self.inv_freq).to(self.q.dtype)  # (n, dim)
        r = self.r_proj(R).view(-1, H, D)  # (n, H, D): W_{k,R} R_d, per head
        table = torch.einsum(
            "bhid,nhd->bhin", self.q + self.v[:, None].to(self.q.dtype), r
        )  # (B, H, Tq, n)
        index = (dist - lo).clamp(0, span.shape[0] - 1)  # (Tq, Tk) or (B, Tq, Tk)
        index = (index[None, None] if index.dim() == 2 else index[:, None]).expand(
            B, H, Tq, -1
        )  # (B, H, Tq, Tk)
        position = table.gather(-1, index)  # (B, H, Tq, Tk): (q_i + v) . W_{k,R} R_{i-j}
        content = torch.einsum("hd,bhjd->bhj", self.u.to(self.k.dtype), self.k)[
            :, :, None
        ]  # (B, H, 1, Tk): u . k_j
        return (position + content).float() * D**-0.5


class TransformerXL(Position):
    """Transformer-XL's relative positional encoding (Dai et al. 2019,
    https://arxiv.org/abs/1901.02860, section 3.3): the score of query i on key j is

        q_i.k_j  +  u.k_j  +  q_i.W_{k,R} R_{i-j}  +  v.W_{k,R} R_{i-j}        (then / sqrt(D))

    R_d the fixed sinusoids of the distance d over `dim` (all sines, then all cosines, as the
    reference code's PositionalEmbedding), W_{k,R} a projection dim -> heads x head_dim in each
    attention layer (`layer_part`: the reference's r_net), u and v one vector per head shared by
    every layer (the reference's r_w_bias and r_r_bias). Nothing is added to the input and q, k
    are not rotated: the terms reach the kernel as a described bias (`RelativeScores`), so a
    segment memory, a KV cache and fast decoding place them by the mask's positions. The term
    depends on q, so no kernel runs it on a flash path (SDPA gets a float mask).

    clamp_len > 0 clamps distances at that value (the reference's clamp_len)."""

    float32 = ("inv_freq",)
    receives = ("dim", "heads", "head_dim")

    def __init__(
        self, dim: int, heads: int, head_dim: int, base: float = 10000.0, clamp_len: int = 0
    ):
        super().__init__()
        if dim % 2:
            raise ValueError(f"Transformer-XL's sinusoids need an even dim, got {dim}")
        if clamp_len < 0:
            raise ValueError(f"clamp_len must be 0 (off) or more, got {clamp_len}")
        self.dim, self.base, self.clamp_len = dim, float(base), int(clamp_len)
        self.u = nn.Parameter(torch.zeros(heads, head_dim))  # (H, D): the global content bias
        self.v = nn.Parameter(torch.zeros(heads, head_dim))  # (H, D): the global position bias
        self.inv_freq = 1.0 / self.base ** (
            torch.arange(0, dim, 2, dtype=torch.float32) / dim
        )  # (dim/2,)

    @classmethod
    def layer_part(cls, ctx) -> nn.Linear:
        """W_{k,R}: each attention layer's projection of R to its heads (no bias)."""
        return nn.Linear(ctx.dim, ctx.heads * ctx.head_dim, bias=False)

    def score(
        self, q: torch.Tensor, k: torch.Tensor, start: Start = 0, part: nn.Module | None = None
    ) -> RelativeScores:
        if part is None:
            raise ValueError(
                "model.pos=xl scores with each attention layer's own W_{k,R}; this attention has none "
                "(build the model with tfmr.build_model)"
            )
        return RelativeScores(q, k, self.u, self.v, part, self.inv_freq, self.clamp_len)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}, clamp_len={self.clamp_len}"


POSITIONS = {
    "none": NoPosition,
    "sinusoidal": Sinusoidal,
    "learned": Learned,
    "rope": Rope,
    "xpos": XPos,
    "alibi": Alibi,
    "xl": TransformerXL,
}
