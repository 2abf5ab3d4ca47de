"""Masks and biases: which keys each query may see, and what is added to the attention scores,
described rather than materialised so that a kernel can take a fast path (SDPA's `is_causal`, a
FlexAttention block mask) and build a dense tensor only when it has to.

    Mask        causal or not, where queries and keys sit (q_start, k_start), key padding, and
                the attention pattern's `Rule` (which keys beyond that); `dense()` builds the
                bool matrix once per forward, shared by every layer
    Rule        the seam of the attention patterns: `allowed(q_pos, k_pos, causal, table)`; the
                base lets a query see every key (dense attention); each pattern of patterns.py
                owns a subclass (sliding window, Longformer, BigBird, sinks)
    Bias        an additive bias as a function of query and key positions (what a position
                scheme's `bias` hook returns); `LinearBias` is ALiBi's
    dense_bias  any bias (None, a tensor, a `Bias`) as a tensor at a mask's positions

A mask with per-row positions (`by_row`, fastdecode.py's left-padded batches) goes the dense way.
The kernels that read these live in kernels.py and alignment.py; the patterns in patterns.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


# ----------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """Which keys an attention pattern lets a query see, causality and padding aside. This base
    lets it see every key (dense attention); each pattern in patterns.py owns a subclass.

    A rule is a frozen dataclass whose fields describe it fully: equal rules mean equal masks,
    so kernels may share what they build from one (FlexAttention's block masks)."""

    sparse = False  # True when the rule hides some keys (then no dense fast path applies)

    def allowed(
        self, q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool, table: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Visibility of keys at `k_pos` for queries at `q_pos` (broadcasting tensors of absolute
        positions); None when every key is visible. `table` is `random_table`'s. Tensor
        operations only, so FlexAttention can trace it as a mask_mod."""
        return None

    def random_table(self, q_end: int, k_end: int, causal: bool) -> torch.Tensor | None:
        """Randomly drawn visibility covering query positions < q_end and key positions < k_end
        (BigBird's key blocks), on the CPU; None for rules that draw nothing."""
        return None


EVERY_KEY = Rule()  # dense attention's rule, what a Mask holds unless a pattern gives it another


# ----------------------------------------------------------------------------- masks
@dataclass
class Mask:
    """Which keys each query may attend to. Query i sits at absolute position q_start + i,
    key j at k_start + j; a key is visible when every rule below allows it.

    causal:        key position <= query position
    key_padding:   (B, Tk) bool, True for real tokens, False for padding; None when there is none
    rule:          the attention pattern's rule (patterns.py): sliding window, global tokens,
                   random blocks, sinks; the base `Rule` hides nothing
    """

    causal: bool = False
    q_start: int = 0
    key_padding: torch.Tensor | None = None
    k_start: int = 0
    rule: Rule | None = None  # None: `EVERY_KEY` (a default of None keeps Mask(...) compilable)
    # True for masks whose query and key positions differ per row (fastdecode.py's left-padded
    # batches): `positions` then gives (B, Tq, 1) and (B, 1, Tk), and only dense paths apply.
    by_row = False

    def __post_init__(self):
        if self.rule is None:
            self.rule = EVERY_KEY
        self._memo: dict = {}  # dense masks and block masks, built once per forward, shared by every layer

    # ------------------------------------------------------------------ description
    @property
    def sparse(self) -> bool:
        """True when the pattern's rule hides some keys (a window, random blocks)."""
        return self.rule.sparse

    def keys_from(self, k_start: int) -> Mask:
        """The same mask for keys starting at absolute position `k_start` (a rolling cache)."""
        if k_start == self.k_start:
            return self
        other = dataclasses.replace(self, k_start=k_start)
        other._memo = self._memo  # keys of the memo include k_start
        return other

    def placed(self, q_start: int, k_start: int) -> Mask:
        """The same rules for queries from `q_start` and keys from `k_start` (positions inside a
        cache: attention sinks, Transformer-XL memory)."""
        if (q_start, k_start) == (self.q_start, self.k_start):
            return self
        other = dataclasses.replace(self, q_start=q_start, k_start=k_start)
        other._memo = self._memo  # keys of the memo include both starts
        return other

    def is_plain_causal(self, q_len: int, k_len: int) -> bool:
        """True when SDPA's built-in causal mask means exactly this mask."""
        return (
            self.causal
            and self.key_padding is None
            and not self.sparse
            and self.q_start == self.k_start
            and q_len == k_len
        )

    def is_empty(self, q_len: int, k_len: int) -> bool:
        """True when every query may see every key."""
        if self.key_padding is not None or self.sparse:
            return False
        return (
            not self.causal or self.q_start >= self.k_start + k_len - 1
        )  # the first query sees all keys

    # ------------------------------------------------------------------ evaluation
    def allowed(self, q_pos: torch.Tensor, k_pos: torch.Tensor, table: torch.Tensor | None = None):
        """Visibility of keys at `k_pos` for queries at `q_pos` (broadcasting tensors of absolute
        positions), key padding aside; None when everything is visible. Tensor operations only, so
        FlexAttention can trace it as a mask_mod."""
        ok = self.rule.allowed(q_pos, k_pos, self.causal, table)
        if self.causal:
            ok = k_pos <= q_pos if ok is None else ok & (k_pos <= q_pos)
        return ok

    def random_table(self, q_len: int, k_len: int, device) -> torch.Tensor | None:
        """The rule's random visibility (BigBird's key blocks) for this mask's queries and keys, or None."""
        key = ("random", self.q_start + q_len, self.k_start + k_len, str(device))
        if key not in self._memo:
            table = self.rule.random_table(self.q_start + q_len, self.k_start + k_len, self.causal)
            self._memo[key] = None if table is None else table.to(device)
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


# ----------------------------------------------------------------------------- biases
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
        return -self.slopes.to(dist.device, torch.float32)[:, None, None] * dist.unsqueeze(
            -3
        )  # (..., H, Tq, Tk)


def dense_bias(bias, mask: Mask, q: torch.Tensor, k_len: int) -> torch.Tensor | None:
    """Any bias as an additive tensor broadcastable to (B, H, Tq, Tk), or None."""
    if isinstance(bias, Bias):
        return bias.dense(mask, q.shape[2], k_len, q.device, q.dtype)
    return bias
