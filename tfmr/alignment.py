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
`CROSS_KERNELS` offers every plain kernel of kernels.py beside them. Left out: the additive
(Bahdanau) energies of the papers; the energies here are scaled dot products (see each class).
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
            raise ValueError(
                f"{type(self).__name__} is a cross-attention kernel and takes no position bias"
            )
        B, H, Tq, _ = q.shape
        S = k.shape[2]
        scores = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Tq, S)
        keep = mask.dense(Tq, S, q.device)  # (B or 1, 1, Tq, S) or None
        keep = (
            None if keep is None else keep[:, :, 0]
        )  # (B or 1, 1, S): cross-attention masks keys only
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
            raise ValueError(
                f"channels must be >= 1 and kernel_size odd and >= 1, got {channels}, {kernel_size}"
            )
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = nn.Conv1d(
            heads, heads * channels, kernel_size, padding=kernel_size // 2, groups=heads, bias=False
        )  # each head convolves its own alignment
        self.w = nn.Parameter(torch.randn(heads, channels) * channels**-0.5)  # (H, C)
        self.drop = nn.Dropout(dropout)

    def location(self, prev: torch.Tensor) -> torch.Tensor:
        """w_h . tanh(F * alpha_{i-1}): (B, H, S) -> (B, H, S)."""
        B, H, S = prev.shape
        f = (
            self.conv(prev.to(self.conv.weight.dtype)).view(B, H, self.channels, S).float()
        )  # (B, H, C, S)
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

    def __init__(
        self,
        heads: int,
        dropout: float = 0.0,
        r_init: float = -4.0,
        noise: float = 0.0,
        hard: bool = True,
    ):
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
    monotonic attention chooses where to stop (`Monotonic`, the carried state), then a softmax over
    the `chunk` positions ending there gives the weights applied to v (`chunk_readout`); expected
    in training, hard at decoding. Adaptation: the chunk energies are the same scaled dot products
    q.k / sqrt(d) (the paper learns a second energy function); the selection adds r. chunk=1 is
    monotonic attention."""

    def __init__(
        self,
        heads: int,
        dropout: float = 0.0,
        r_init: float = -4.0,
        noise: float = 0.0,
        hard: bool = True,
        chunk: int = 3,
    ):
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
# CROSS_KERNELS is a live view of both registries: a kernel added to either is a cross kernel.
ALIGNMENT_KERNELS = {"location": LocationAware, "monotonic": Monotonic, "mocha": MoChA}
CROSS_KERNELS = ChainMap(ALIGNMENT_KERNELS, KERNELS)  # iterates KERNELS' kinds first
