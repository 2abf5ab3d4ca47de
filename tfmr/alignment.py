"""Alignment kernels (`CROSS_KERNELS`, the `model.cross_kernel` axis, cross-attention only): stateful
attention kernels, where each target step reads the previous step's alignment.

    location   location-aware attention (Chorowski et al. 2015): a convolution of the previous
               alignment added to the scores
    monotonic  monotonic attention (Raffel et al. 2017): moves left to right over the source,
               soft (expected alignment) in training and hard at decoding
    mocha      monotonic chunkwise attention (Chiu & Raffel 2018): a softmax over a chunk ending
               where monotonic attention stops

They subclass `kernels.Kernel` (so `gives_weights`, `stateful` and `start_state` are declared the
same way) and take a sixth argument, `kernel(q, k, v, mask, bias, state)`, see `AlignmentKernel`.
`CROSS_KERNELS` offers every plain kernel of kernels.py beside them. Each paper's own score is an
option beside tfmr's dot-product adaptation: `location` takes `score=dot|additive` (additive:
ESPnet's AttLoc), `start=first|uniform|zeros` and `scaling`; `monotonic` and `mocha` take
`energy=dot|additive` (additive: the paper's weight-normalised energy). The small classes behind
those options are in `LOCATION_SCORES`, `ENERGIES` and `STARTS`. Left out: MoChA's second energy
function (its chunk energies are the selection energies without r).
"""

from __future__ import annotations

from collections import ChainMap

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import KERNELS, Kernel
from .masks import Mask


# ----------------------------------------------------------------------------- alignment kernels
# Stateful cross-attention kernels: the alignment of target step i depends on the alignment of
# step i - 1. The seam:
#
#     kernel(q, k, v, mask, bias, state=None) -> (out, weights)      weights (B, H, Tq, S)
#     kernel.start_state(batch, src_len, device) -> AlignmentState   kept in DecodeState.align
#
# Without a state (teacher-forced training, a full forward) the kernel starts from its alpha_0
# (`start`: by default all mass on the first source position) and runs the Tq target steps one
# after another over the whole batch. With a state (decoding) it starts from `state.prev` (alpha_0
# at the first call), runs the Tq (usually 1) new steps and leaves the last alignment in
# `state.prev`; beam search reorders it with the caches. The same loop serves both, so
# step-by-step decoding equals the full forward.
class AlignmentState:
    """The previous target step's alignment, (B, H, S) float32, per cross-attention layer; None
    before the first step, whose kernel then makes alpha_0 from the source padding it is given."""

    def __init__(self, prev: torch.Tensor | None = None):
        self.prev = prev

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search)."""
        if self.prev is not None:
            self.prev = self.prev.index_select(0, index)


def first_position(batch: int, heads: int, src_len: int, device) -> torch.Tensor:
    """alpha_0: every head's alignment on source position 0, (B, H, S) float32."""
    alpha = torch.zeros(batch, heads, src_len, device=device)
    alpha[..., 0] = 1.0
    return alpha


# alpha_0, the alignment before the first target step: start(batch, heads, src_len, keep, device)
# -> (B, H, S) float32, keep (B or 1, 1, S) bool (True: a real source position) or None.
def start_first(batch: int, heads: int, src_len: int, keep, device) -> torch.Tensor:
    """All mass on source position 0 (monotonic attention's alpha_0; tfmr's location default)."""
    return first_position(batch, heads, src_len, device)


def start_uniform(batch: int, heads: int, src_len: int, keep, device) -> torch.Tensor:
    """1 / length on each real source position, 0 on padding (ESPnet's AttLoc)."""
    real = torch.ones(1, 1, src_len, device=device) if keep is None else keep.float()
    alpha = real / real.sum(-1, keepdim=True).clamp(min=1.0)  # (B or 1, 1, S)
    return alpha.expand(batch, heads, src_len).contiguous()  # (B, H, S)


def start_zeros(batch: int, heads: int, src_len: int, keep, device) -> torch.Tensor:
    """No mass anywhere (Tacotron 2's previous attention weights before the first step)."""
    return torch.zeros(batch, heads, src_len, device=device)


STARTS = {"first": start_first, "uniform": start_uniform, "zeros": start_zeros}


def scaled_dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q . k / sqrt(d) in float32: (B, H, Tq, D), (B, H, S, D) -> (B, H, Tq, S)."""
    return (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5


def additive_hidden(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """q_i + k_j + b_h for every pair, float32, the inside of an additive (Bahdanau) score:
    (B, H, Tq, D), (B, H, S, D), (H, D) -> (B, H, Tq, S, D)."""
    return q.float()[:, :, :, None, :] + k.float()[:, :, None, :, :] + b.float()[:, None, None, :]


def choose(table: dict, name: str, option: str):
    """table[name], or a ValueError that lists the valid names of `option`."""
    if name not in table:
        raise ValueError(f"{option} must be one of {', '.join(table)}; got {name!r}")
    return table[name]


class AlignmentKernel(Kernel):
    """Base of the stateful kernels: the loop over target steps, the state, the padding mask.
    A subclass says what one target step does: `step(prev, scores_i, keep) -> alpha_i`, with
    scores_i what `energies(q, k)` gives for step i (by default (B, H, S) float32, q.k / sqrt(d),
    padding not yet masked) and keep (B or 1, 1, S) bool or None; where it starts, `start`
    (alpha_0: all mass on the first position); and, when the weights applied to v are not the
    carried alignment itself (MoChA), `readout(alpha_i, scores_i, keep) -> weights_i`."""

    gives_weights = True
    stateful = True
    receives = ("heads", "dropout")

    def __init__(self, heads: int, dropout: float = 0.0):
        super().__init__(dropout)
        self.heads = heads

    def start_state(self, batch: int, src_len: int, device) -> AlignmentState:
        return AlignmentState()  # alpha_0 is made at the first step, from the source padding

    def start(self, batch: int, src_len: int, keep, device) -> torch.Tensor:
        """alpha_0, (B, H, S) float32: all mass on source position 0."""
        return first_position(batch, self.heads, src_len, device)

    def energies(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """What each target step reads, target steps on dim 2: by default the scaled dot products
        (B, H, Tq, S)."""
        return scaled_dot(q, k)

    def forward(self, q, k, v, mask: Mask, bias=None, state: AlignmentState | None = None):
        if bias is not None:
            raise ValueError(
                f"{type(self).__name__} is a cross-attention kernel and takes no position bias"
            )
        B, _, Tq, _ = q.shape
        S = k.shape[2]
        scores = self.energies(q, k)  # (B, H, Tq, S, ...)
        keep = mask.dense(Tq, S, q.device)  # (B or 1, 1, Tq, S) or None
        keep = (
            None if keep is None else keep[:, :, 0]
        )  # (B or 1, 1, S): cross-attention masks keys only
        prev = state.prev if state is not None else None
        prev = self.start(B, S, keep, q.device) if prev is None else prev  # (B, H, S)
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


# ----------------------------------------------------------------------------- location-aware
# A location score: content(q, k) for every target step at once (target steps on dim 2), and
# score(content_i, f) -> e_i (B, H, S), with f = F * alpha_{i-1} the location features
# (B, H, C, S). Built as cls(heads, head_dim, channels).
class DotLocationScore(nn.Module):
    """tfmr's adaptation: e_ij = q_i . k_j / sqrt(d) + w_h . tanh(f_ij), w (H, C). A zero
    convolution leaves exactly the content-only (eager) scores."""

    def __init__(self, heads: int, head_dim: int | None, channels: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(heads, channels) * channels**-0.5)  # (H, C)

    def content(self, q, k):
        return scaled_dot(q, k)  # (B, H, Tq, S)

    def forward(self, content, f):
        return content + torch.einsum("hc,bhcs->bhs", self.w.float(), torch.tanh(f))


class AdditiveLocationScore(nn.Module):
    """The paper's score, e_ij = g_h . tanh(q_i + k_j + U_h f_ij + b_h) (Chorowski et al. 2015,
    eq. 8-9; ESPnet's AttLoc: mlp_dec(s) = q, mlp_enc(h) = k + b, mlp_att = U, gvec = g),
    per head, in the head's dimension D. U (H, D, C), g (H, D), b (H, D)."""

    def __init__(self, heads: int, head_dim: int | None, channels: int):
        super().__init__()
        if head_dim is None:
            raise ValueError("score=additive needs head_dim (the build passes it)")
        self.U = nn.Parameter(torch.randn(heads, head_dim, channels) * channels**-0.5)
        self.g = nn.Parameter(torch.randn(heads, head_dim) * head_dim**-0.5)
        self.b = nn.Parameter(torch.zeros(heads, head_dim))

    def content(self, q, k):
        return additive_hidden(q, k, self.b)  # (B, H, Tq, S, D)

    def forward(self, content, f):
        loc = torch.einsum("hdc,bhcs->bhsd", self.U.float(), f)  # (B, H, S, D)
        return torch.einsum("hd,bhsd->bhs", self.g.float(), torch.tanh(content + loc))


LOCATION_SCORES = {"dot": DotLocationScore, "additive": AdditiveLocationScore}


class LocationAware(AlignmentKernel):
    """Location-aware attention (Chorowski et al. 2015, https://arxiv.org/abs/1506.07503) for
    multi-head attention, per head h:

        f_i     = F * alpha_{i-1}       a 1-D convolution over source positions, `channels`
                                        filters of `kernel_size` per head, no bias
        e_ij    = score(q_i, k_j, f_ij) `score=dot` (default): q_i . k_j / sqrt(d) + w_h . tanh(f_ij)
                                        `score=additive`: g_h . tanh(q_i + k_j + U_h f_ij + b_h)
        alpha_i = softmax_j(scaling * e_ij over real positions),  context_i = alpha_i v

    alpha_0 is `start`: `first` (default: all mass on position 0), `uniform` (1 / length on the
    real positions) or `zeros` (Tacotron 2). score=additive, start=uniform, scaling=2 is ESPnet's
    AttLoc (its `scaling=2.0`), tested equal. Training is sequential over target positions (T
    steps of this kernel over the whole batch, each a small conv): fine for short targets (G2P).
    """

    receives = ("heads", "dropout", "head_dim")

    def __init__(
        self,
        heads: int,
        dropout: float = 0.0,
        channels: int = 8,
        kernel_size: int = 7,
        start: str = "first",
        score: str = "dot",
        scaling: float = 1.0,
        head_dim: int | None = None,
    ):
        super().__init__(heads, dropout)
        if channels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"channels must be >= 1 and kernel_size odd and >= 1, got {channels}, {kernel_size}"
            )
        self.alpha0 = choose(STARTS, start, "start")
        self.channels, self.kernel_size = channels, kernel_size
        self.start_kind, self.score_kind, self.scaling = start, score, float(scaling)
        self.conv = nn.Conv1d(
            heads, heads * channels, kernel_size, padding=kernel_size // 2, groups=heads, bias=False
        )  # each head convolves its own alignment
        self.score = choose(LOCATION_SCORES, score, "score")(heads, head_dim, channels)
        self.drop = nn.Dropout(dropout)

    def start(self, batch, src_len, keep, device):
        return self.alpha0(batch, self.heads, src_len, keep, device)

    def energies(self, q, k):
        return self.score.content(q, k)

    def location(self, prev: torch.Tensor) -> torch.Tensor:
        """f = F * alpha_{i-1}: (B, H, S) -> (B, H, C, S) float32."""
        B, H, S = prev.shape
        f = self.conv(prev.to(self.conv.weight.dtype))  # (B, H * C, S)
        return f.view(B, H, self.channels, S).float()  # (B, H, C, S)

    def step(self, prev, scores, keep):
        scores = self.scaling * self.score(scores, self.location(prev))  # (B, H, S)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.nan_to_num(torch.softmax(scores, dim=-1))  # rows with no real key -> 0

    def attend(self, weights, v):
        return self.drop(weights.to(v.dtype)) @ v  # the state keeps the alignment before dropout

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "w"  # saved before `score` existed: the dot score's w sat on the kernel
        if old in state_dict and self.score_kind == "dot":
            state_dict[prefix + "score.w"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, channels={self.channels}, kernel_size={self.kernel_size}, "
            f"start={self.start_kind}, score={self.score_kind}, scaling={self.scaling}"
        )


# ----------------------------------------------------------------------------- monotonic
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
    diff = (L.unsqueeze(-2) - L.unsqueeze(-1)).masked_fill(
        ~upper, float("-inf")
    )  # (..., k, j) = L_j - L_k
    q = (prev.unsqueeze(-2) @ torch.exp(diff)).squeeze(
        -2
    )  # (..., S): sum_k alpha_i-1,k prod_{k<=l<j}(1 - p_l)
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


# A monotonic energy: energy(q, k) -> (B, H, Tq, S) float32, before r and the noise. Built as
# cls(heads, head_dim).
class DotEnergy(nn.Module):
    """tfmr's adaptation: q_i . k_j / sqrt(d), the Transformer's score; no parameters."""

    def __init__(self, heads: int, head_dim: int | None):
        super().__init__()

    def forward(self, q, k):
        return scaled_dot(q, k)


class AdditiveEnergy(nn.Module):
    """The paper's energy (Raffel et al. 2017, section 2.3), per head h:
    g_h v_h^T / ||v_h|| tanh(q_i + k_j + b_h), with g_h a learned scalar starting at 1 / sqrt(D)
    and b_h at 0 (as the reference's TensorFlow `BahdanauMonotonicAttention(normalize=True)`);
    q and k are the head's projections (the paper's W s_{i-1} and V h_j)."""

    def __init__(self, heads: int, head_dim: int | None):
        super().__init__()
        if head_dim is None:
            raise ValueError("energy=additive needs head_dim (the build passes it)")
        self.v = nn.Parameter(torch.randn(heads, head_dim) * head_dim**-0.5)  # (H, D)
        self.g = nn.Parameter(torch.full((heads,), head_dim**-0.5))  # (H,)
        self.b = nn.Parameter(torch.zeros(heads, head_dim))  # (H, D)

    def forward(self, q, k):
        v = self.v.float()
        normed = self.g.float()[:, None] * v / v.norm(dim=-1, keepdim=True)  # (H, D)
        hidden = torch.tanh(additive_hidden(q, k, self.b))  # (B, H, Tq, S, D)
        return torch.einsum("bhtsd,hd->bhts", hidden, normed)


ENERGIES = {"dot": DotEnergy, "additive": AdditiveEnergy}


class Monotonic(AlignmentKernel):
    """Monotonic attention (Raffel et al. 2017, https://arxiv.org/abs/1704.00784):
    p_ij = sigmoid(energy(q_i, k_j) + r_h + noise), 0 on padding keys.

    energy: `dot` (default) q_i . k_j / sqrt(d), or `additive`, the paper's weight-normalised
    g v^T / ||v|| tanh(q_i + k_j + b) (`AdditiveEnergy`). r: a learned bias per head starting at
    `r_init`. noise: N(0, noise^2) added before the sigmoid in training only (the paper's N(0, 1)
    pushes p towards 0 or 1, so the soft alignment of training nears the hard one of decoding).
    The defaults, dot energy, noise=1 and r_init=-1, are what the G2P alignment experiment found
    to work on words (`tfmr experiment g2p-alignment`; docs/objectives.md): the paper's r_init=-4,
    made for long speech inputs, lets most of the mass run off the end of a word and its test WER
    stayed at 100%.

    Training (and eval with hard=False): the expected alignment (`expected_alignment`), soft,
    differentiable; rows sum to at most 1 (mass that runs off the end attends nowhere).
    Eval with hard=True (decoding): hard monotonic attention (`hard_alignment`), online and
    linear-time in the source. The full forward in eval runs the same hard steps, so cached
    step-by-step decoding equals it. The context is the alignment applied to v (no softmax).
    MoChA (a softmax over the chunk that ends where this attention stops) is the subclass `MoChA`.
    """

    receives = ("heads", "dropout", "head_dim")

    def __init__(
        self,
        heads: int,
        dropout: float = 0.0,
        r_init: float = -1.0,
        noise: float = 1.0,
        hard: bool = True,
        energy: str = "dot",
        head_dim: int | None = None,
    ):
        super().__init__(heads, dropout)
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.noise, self.hard, self.energy_kind = float(noise), bool(hard), energy
        self.energy = choose(ENERGIES, energy, "energy")(heads, head_dim)
        self.r = nn.Parameter(torch.full((heads,), float(r_init)))  # (H,)

    def energies(self, q, k):
        return self.energy(q, k)  # (B, H, Tq, S)

    def selection(self, scores, keep):
        """p_ij = sigmoid(energy + r (+ noise in training)), 0 on padding keys: (B, H, S)."""
        energy = scores + self.r.float()[:, None]
        if self.training and self.noise > 0:  # drawn in (B, H, S) order whatever energy's layout
            noise = torch.randn(energy.shape, dtype=energy.dtype, device=energy.device)
            energy = energy + self.noise * noise
        p = torch.sigmoid(energy)
        return p if keep is None else p.masked_fill(~keep, 0.0)

    def step(self, prev, scores, keep):
        p = self.selection(scores, keep)
        if self.hard and not self.training:
            return hard_alignment(prev, p)
        return expected_alignment(prev, p)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, energy={self.energy_kind}, noise={self.noise}, hard={self.hard}"
        )


def chunk_readout(
    alpha: torch.Tensor, u: torch.Tensor, width: int, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """MoChA's chunkwise softmax (Chiu & Raffel 2018, eq. 18-20) for one target step:

        beta_k = sum_{j = k}^{k + w - 1} alpha_j exp(u_k) / sum_{l = j - w + 1}^{j} exp(u_l)

    the expected attention when monotonic attention stops at j (probability alpha_j) and a softmax
    runs over the chunk of `width` positions ending there. With a one-hot alpha (hard attention)
    it is exactly that softmax. alpha, u: (..., S); keep: broadcastable bool or None -> (..., S)."""
    if keep is not None:
        u = u.masked_fill(~keep, float("-inf"))
    u = u - u.amax(dim=-1, keepdim=True).clamp(
        min=-1e30
    )  # stable exp; a fully masked row stays -inf
    e = torch.exp(u)  # (..., S), 0 on padding
    window_sum = (
        F.pad(e, (width - 1, 0)).unfold(-1, width, 1).sum(-1)
    )  # (..., S): sum over [j - w + 1, j]
    ratio = alpha / window_sum.clamp(min=1e-30)  # (..., S)
    forward_sum = (
        F.pad(ratio, (0, width - 1)).unfold(-1, width, 1).sum(-1)
    )  # (..., S): sum over [k, k + w - 1]
    return e * forward_sum


class MoChA(Monotonic):
    """Monotonic chunkwise attention (Chiu & Raffel 2018, https://arxiv.org/abs/1712.05382):
    monotonic attention chooses where to stop (`Monotonic`, the carried state, with its options
    and defaults), then a softmax over the `chunk` positions ending there gives the weights
    applied to v (`chunk_readout`); expected in training, hard at decoding. Adaptation: the chunk
    energies are the selection energies without r (the paper learns a second energy function).
    chunk=1 is monotonic attention."""

    def __init__(
        self,
        heads: int,
        dropout: float = 0.0,
        r_init: float = -1.0,
        noise: float = 1.0,
        hard: bool = True,
        chunk: int = 3,
        energy: str = "dot",
        head_dim: int | None = None,
    ):
        super().__init__(heads, dropout, r_init, noise, hard, energy, head_dim)
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.chunk = chunk

    def readout(self, alpha, scores, keep):
        return chunk_readout(alpha, scores, self.chunk, keep)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk={self.chunk}"


# Cross-attention kernels (`model.cross_kernel`): every kernel, plus the stateful alignment ones,
# which only cross-attention may use (the builder refuses them for self-attention).
# CROSS_KERNELS is a live view of both registries: a kernel added to either is a cross kernel.
ALIGNMENT_KERNELS = {"location": LocationAware, "monotonic": Monotonic, "mocha": MoChA}
CROSS_KERNELS = ChainMap(ALIGNMENT_KERNELS, KERNELS)  # iterates KERNELS' kinds first
