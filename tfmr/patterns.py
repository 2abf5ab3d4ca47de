"""Attention patterns (`PATTERNS`, the `model.attention_pattern` axis): which keys each query may
see, and the KV cache that decoding keeps for it.

Each pattern owns its rule: a small frozen dataclass (a `masks.Rule`) that says which keys a
query at one position may see, and that the pattern puts into every `Mask` it makes. The mask
adds causality and padding; kernels evaluate the rule densely or as a FlexAttention mask_mod.

    dense       every key (the past when causal); a static cache
    sliding     the `window` most recent positions (Mistral); a rolling cache bounded by the window
    longformer  window + `global_tokens` leading positions that see and are seen by all
    bigbird     window + global tokens + random key blocks
    sinks       StreamingLLM: attention sinks + window, a constant-size cache with positions inside it
                (`evict=slide|chunk`: how a multi-token chunk makes room, `SINK_CACHES`)

What a pattern declares on its class (the builder, FastDecoder and decode.stream read these):
`positions_in_cache` and `constant_state`, see `Dense`. The masks live in masks.py, the kernels
in kernels.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cache import ChunkSinkCache, KVCache, RollingKVCache, SinkCache
from .masks import Mask, Rule
from .variant import Variant


# ----------------------------------------------------------------------------- the base
class Pattern(nn.Module, Variant):
    """Base of the attention patterns: `mask(causal, q_start, key_padding) -> Mask` (carrying its
    `rule()` on top of causality and padding) and `new_cache(batch, kv_heads, max_len, head_dim,
    dtype, device)`, the key/value store attention decodes with (cache.KeyStore). The build passes
    a pattern nothing; its `__init__` arguments are options.

    positions_in_cache: whether decoding places positions inside the cache (sinks) rather than
    at absolute positions; such patterns need a relative position scheme (the builder checks) and
    decode.py (not FastDecoder's static cache). constant_state: whether the decoding cache stays
    the same size however long the generation (decode.stream then never restarts it)."""

    positions_in_cache = False
    constant_state = False

    def mask(self, causal: bool, q_start: int = 0, key_padding: torch.Tensor | None = None) -> Mask:
        return Mask(causal=causal, q_start=q_start, key_padding=key_padding, rule=self.rule())

    def rule(self) -> Rule:
        """This pattern's rule, put into every mask it makes (the base `Rule`: every key)."""
        return Rule()

    def new_cache(
        self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device
    ) -> KVCache:
        """A preallocated cache for `max_len` positions."""
        return KVCache(batch, kv_heads, max_len, head_dim, dtype, device)


# ----------------------------------------------------------------------------- dense
class Dense(Pattern):
    """Every query sees every key it may (all of them, or the past when causal)."""


# ----------------------------------------------------------------------------- sliding window
@dataclass(frozen=True)
class WindowRule(Rule):
    """query - key < window (|query - key| < window when not causal): the query itself and the
    window - 1 positions before it."""

    window: int
    sparse = True

    def allowed(self, q_pos, k_pos, causal, table):
        dist = q_pos - k_pos if causal else (q_pos - k_pos).abs()
        return dist < self.window


class SlidingWindow(Dense):
    """Each query sees the `window` most recent positions, itself included (Longformer's local
    attention, https://arxiv.org/abs/2004.05150; Mistral 7B, https://arxiv.org/abs/2310.06825).
    Decoding keeps a rolling cache of `window` positions: memory bounded by the window."""

    def __init__(self, window: int = 256):
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window

    def rule(self) -> Rule:
        return WindowRule(self.window)

    def new_cache(self, batch, kv_heads, max_len, head_dim, dtype, device) -> KVCache:
        if self.window >= max_len:
            return KVCache(batch, kv_heads, max_len, head_dim, dtype, device)
        return RollingKVCache(batch, kv_heads, self.window, head_dim, dtype, device)

    def extra_repr(self) -> str:
        return f"window={self.window}"


# ----------------------------------------------------------------------------- Longformer, BigBird
@dataclass(frozen=True)
class LongformerRule(WindowRule):
    """The window, widened by `global_tokens`: the first n positions see every key and are seen by
    every query."""

    global_tokens: int

    def allowed(self, q_pos, k_pos, causal, table):
        ok = super().allowed(q_pos, k_pos, causal, table)
        if self.global_tokens:
            ok = ok | (k_pos < self.global_tokens) | (q_pos < self.global_tokens)
        return ok


class Longformer(Dense):
    """Longformer (https://arxiv.org/abs/2004.05150): a sliding window plus `global_tokens` leading
    positions that attend everywhere and are attended by all (here: the first n positions)."""

    def __init__(self, window: int = 256, global_tokens: int = 1):
        super().__init__()
        if window < 1 or global_tokens < 0:
            raise ValueError(
                f"window must be >= 1 and global_tokens >= 0, got {window}, {global_tokens}"
            )
        self.window, self.global_tokens = window, global_tokens

    def rule(self) -> Rule:
        return LongformerRule(self.window, self.global_tokens)

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}"


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


@dataclass(frozen=True)
class BigBirdRule(LongformerRule):
    """Longformer's rule plus, for each query block of `block` positions, `random_blocks` key
    blocks drawn at random (earlier blocks when causal), fixed by `seed` and the block index."""

    random_blocks: int
    block: int = 64
    seed: int = 0

    def allowed(self, q_pos, k_pos, causal, table):
        ok = super().allowed(q_pos, k_pos, causal, table)
        if self.random_blocks:
            ok = ok | table[q_pos // self.block, k_pos // self.block]
        return ok

    def random_table(self, q_end: int, k_end: int, causal: bool) -> torch.Tensor | None:
        if not self.random_blocks:
            return None
        n_q = (q_end + self.block - 1) // self.block
        n_k = (k_end + self.block - 1) // self.block
        return random_blocks(n_q, n_k, self.random_blocks, causal, self.seed)


class BigBird(Longformer):
    """BigBird (https://arxiv.org/abs/2007.14062): window + global tokens + `random_blocks` random
    key blocks of `block` positions per query block. Token-level window here (the paper slides
    whole blocks); the random blocks are fixed by `seed`."""

    def __init__(
        self,
        window: int = 256,
        global_tokens: int = 1,
        random_blocks: int = 2,
        block: int = 64,
        seed: int = 0,
    ):
        super().__init__(window, global_tokens)
        if random_blocks < 0 or block < 1:
            raise ValueError(
                f"random_blocks must be >= 0 and block >= 1, got {random_blocks}, {block}"
            )
        self.random_blocks, self.block, self.seed = random_blocks, block, seed

    def rule(self) -> Rule:
        return BigBirdRule(
            self.window, self.global_tokens, self.random_blocks, self.block, self.seed
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, random_blocks={self.random_blocks}, block={self.block}, seed={self.seed}"


# ----------------------------------------------------------------------------- sinks
@dataclass(frozen=True)
class SinksRule(WindowRule):
    """The window, widened by `sinks`: the first n positions are seen by every query."""

    sinks: int

    def allowed(self, q_pos, k_pos, causal, table):
        ok = super().allowed(q_pos, k_pos, causal, table)
        if self.sinks:
            ok = ok | (k_pos < self.sinks)
        return ok


# How a sink cache makes room for a chunk of several tokens fed at once (`evict`).
SINK_CACHES = {"slide": SinkCache, "chunk": ChunkSinkCache}


class Sinks(SlidingWindow):
    """Attention sinks + sliding window (StreamingLLM, Xiao et al. 2023,
    https://arxiv.org/abs/2309.17453): each query sees the first `sinks` positions and the `window`
    most recent ones, itself included. Decoding keeps exactly those keys (`cache.SinkCache`),
    so memory is constant however long the generation, and positions are those inside the cache
    (RoPE keys stored unrotated and rotated at their cache slot, ALiBi distances by cache slot).
    The full forward (training, a prompt at position 0) uses the same mask at absolute positions.

        keys:  [0 .. sinks-1]  . . . (evicted) . . .  [t-window+1 .. t]
        cache positions: 0 .. sinks-1, sinks .. sinks+window-1 (query at the last)

    `evict` says what a chunk of several tokens fed at once sees once the cache is full: `slide`
    (default) hands it the window - 1 positions before it and slides each query's window inside
    the chunk, as the full forward does; `chunk` is the reference's `evict_for_space`: the
    window - T most recent positions and the whole chunk, causally (`cache.ChunkSinkCache`,
    tested token for token against it). One token at a time the two are the same.
    """

    positions_in_cache = True
    constant_state = True

    def __init__(self, sinks: int = 4, window: int = 256, evict: str = "slide"):
        super().__init__(window)
        if sinks < 0:
            raise ValueError(f"sinks must be 0 or more, got {sinks}")
        if evict not in SINK_CACHES:
            raise ValueError(f"evict must be one of {', '.join(SINK_CACHES)}; got {evict!r}")
        self.sinks, self.evict = sinks, evict

    def rule(self) -> Rule:
        return SinksRule(self.window, self.sinks)

    def new_cache(self, batch, kv_heads, max_len, head_dim, dtype, device) -> KVCache:
        cache = SINK_CACHES[self.evict]
        return cache(batch, kv_heads, self.sinks, self.window, head_dim, dtype, device)

    def extra_repr(self) -> str:
        return f"sinks={self.sinks}, window={self.window}, evict={self.evict}"


PATTERNS = {
    "dense": Dense,
    "sliding": SlidingWindow,
    "longformer": Longformer,
    "bigbird": BigBird,
    "sinks": Sinks,
}
