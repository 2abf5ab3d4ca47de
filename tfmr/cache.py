"""Key/value caches for incremental decoding: preallocated once, filled in place.

    KVCache          static: one slot of shape (B, H_kv, max_len, D) per attention layer; `update`
                     writes positions [start, start + T) and returns the filled prefix [0, start + T)
    RollingKVCache   a ring of `window` positions for sliding-window attention: memory bounded by
                     the window however long the sequence; `update` returns the held keys, oldest
                     first, followed by the new ones
    SinkCache        attention sinks + a rolling window (StreamingLLM): the first `sinks` positions
                     and a ring of `window`, keys stored unrotated, positions inside the cache; a
                     chunk's queries slide over the window (`ChunkSinkCache`: the reference's
                     eviction, room for the whole chunk first)
    SegmentMemory    Transformer-XL: the previous segment's hidden states (detached) for one layer
    RetentionState   a retention layer's recurrent state (B, H, D_k, D_v), the same size at every
                     length (mixers.py)
    DecodeState      the per-sequence state between decoding steps (caches, position, memory, and
                     the alignment kernels' previous alignments, `align`)

The seams, written down: every per-layer decoding state is a `LayerCache` (beam search reorders
it, memory.py counts its bytes); what attention hands its keys to is a `KeyStore`, which only
stores. Rotation is attention's own step (mixers.Attention): keys arrive rotated at absolute
positions and are stored as they come, or, for a store that declares `positions_inside` (sinks,
segment memory), arrive unrotated and are rotated by attention after `store`, at the positions
they hold inside the store (`rotate_inside`). `store` also moves the mask to where the returned
keys sit (`Mask.keys_from` after a rolling cache, `Mask.placed` inside). Preallocation keeps
memory flat and makes the decode step free of reallocations. `kv_bytes_per_token` gives the
cache cost of a model shape (MHA vs GQA vs MQA).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch

from .masks import EVERY_KEY


@runtime_checkable
class LayerCache(Protocol):
    """One layer's decoding state, whatever the mixer: a key/value store or a recurrent state."""

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search keeps the surviving hypotheses)."""

    def bytes(self) -> int:
        """Bytes held now (memory.py's estimate of decoding)."""


@runtime_checkable
class KeyStore(Protocol):
    """Where attention keeps keys and values between decoding steps. It stores; attention rotates.

    positions_inside: False, keys come rotated at their absolute positions; True, keys come
    unrotated and attention rotates them after `store` at 0 .. Tk - 1 (`rotate_inside`).
    store(attn, x, k, v, start, mask) -> (k, v, mask): the new keys and values (B, Hkv, T, D) of
    `x` (B, T, dim) at `start` stored; every held key and value (B, Hkv, Tk, D), oldest first,
    and the mask placed where those keys sit."""

    positions_inside: bool

    def store(self, attn, x, k, v, start, mask) -> tuple: ...

    def reorder(self, index: torch.Tensor) -> None: ...


class AbsoluteStore:
    """The default `store`, for keys at absolute positions: `update` writes them (a subclass says
    how) and sets `key_start`, the position of the first key it returns."""

    positions_inside = False
    key_start = 0

    def store(self, attn, x, k, v, start, mask):
        k, v = self.update(k, v, start)  # (B, Hkv, Tk, D): cached keys, oldest first
        return k, v, mask.keys_from(self.key_start)  # a rolling cache no longer starts at 0


def rotate_inside(pos, q, k):
    """Rotate keys at positions 0 .. Tk - 1 and the T queries at the last T of them (positions
    inside the cache: StreamingLLM, Transformer-XL). -> q, k."""
    q, _ = pos.rotate(q, q, k.shape[2] - q.shape[2])
    _, k = pos.rotate(k, k, 0)
    return q, k


class KVCache(AbsoluteStore):
    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        shape = (batch, kv_heads, max_len, head_dim)
        # never read before written (`update` returns the positions up to the last one written),
        # so not zero-filled: filling cost 4% of G2P's batched greedy decoding
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.key_start = 0  # absolute position of the first key returned by `update`
        self.filled = 0  # positions written so far (the most `update` has reached)

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.filled = max(self.filled, end)
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H_kv, end, D)

    def bytes(self) -> int:
        """Bytes allocated (keys and values)."""
        return self.k.numel() * self.k.element_size() * 2

    def held(self) -> int:
        """Positions whose keys and values the cache holds now."""
        return self.filled

    def used_bytes(self) -> int:
        """Bytes of the positions held now (what a cache grown on demand would have allocated)."""
        return self.held() * self.bytes() // self.max_len

    def written(self) -> int:
        """The leading slots that may hold keys: the rest have never been written, nor read."""
        return self.filled

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search keeps the surviving hypotheses). Only the slots written
        so far are copied, in place when the batch keeps its size: copying the whole allocation
        every step took two thirds of G2P's beam search."""
        n, k, v = self.written(), self.k, self.v
        if index.numel() != k.shape[0]:  # a new batch size (beams expanded): new tensors
            self.k = k.new_empty((index.numel(), *k.shape[1:]))
            self.v = v.new_empty((index.numel(), *v.shape[1:]))
        self.k[:, :, :n] = k[:, :, :n].index_select(0, index)  # (B', H_kv, n, D)
        self.v[:, :, :n] = v[:, :, :n].index_select(0, index)


class RollingKVCache(KVCache):
    """The last `window` positions of keys and values, in a ring: position p lives in slot
    p % window. Writes must continue where the last one stopped (or restart at 0)."""

    def __init__(self, batch: int, kv_heads: int, window: int, head_dim: int, dtype, device):
        super().__init__(batch, kv_heads, window, head_dim, dtype, device)
        self.window = window
        self.next_pos = 0

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        if start not in (0, self.next_pos):
            raise ValueError(
                f"rolling KV cache continues at position {self.next_pos}; asked to write at {start}"
            )
        W, T = self.window, k.shape[2]
        held = min(start, W)  # positions [start - held, start) are in the ring
        slots = torch.arange(start - held, start, device=k.device) % W
        k_all = torch.cat(
            (self.k.index_select(2, slots), k), dim=2
        )  # (B, H_kv, held + T, D), oldest first
        v_all = torch.cat((self.v.index_select(2, slots), v), dim=2)
        keep = min(W, held + T)  # the newest `keep` positions stay in the ring
        end = start + T
        write = torch.arange(end - keep, end, device=k.device) % W
        self.k[:, :, write] = k_all[:, :, -keep:]
        self.v[:, :, write] = v_all[:, :, -keep:]
        self.key_start, self.next_pos = start - held, end
        return k_all, v_all

    def held(self) -> int:
        return min(self.next_pos, self.window)

    def written(self) -> int:
        return self.held()  # position p lives in slot p % window: the first `held` slots


class SinkCache(KVCache):
    """Attention sinks plus a rolling window (StreamingLLM, Xiao et al. 2023,
    https://arxiv.org/abs/2309.17453): the keys and values of the first `sinks` positions forever,
    and a ring of the last `window` positions; memory is (sinks + window) positions however long
    the generation.

    Positions are those inside the cache, as in the paper: keys are stored unrotated and rotated
    at every step at their cache positions 0 .. n - 1 (sinks first, then the window oldest first),
    the query at the last of them; an ALiBi bias is evaluated at the same cache positions. So a
    step sees positions 0 .. sinks + window - 1 however far the text has gone. A chunk written at
    position 0 is placed at its own positions (the full forward of the `sinks` pattern); later
    chunks follow the held keys.

        slots  [0, sinks)             the sink positions 0 .. sinks - 1
               [sinks, sinks+window)  ring: position p >= sinks lives in slot sinks + p % window
    """

    def __init__(
        self, batch: int, kv_heads: int, sinks: int, window: int, head_dim: int, dtype, device
    ):
        super().__init__(batch, kv_heads, sinks + window, head_dim, dtype, device)
        self.sinks, self.window = sinks, window
        self.next_pos = 0

    def update(self, k: torch.Tensor, v: torch.Tensor, start: int):
        if start not in (0, self.next_pos):
            raise ValueError(
                f"sink cache continues at position {self.next_pos}; asked to write at {start}"
            )
        S, W, T = self.sinks, self.window, k.shape[2]
        first = self.oldest_held(start, T)
        held = torch.cat(
            (torch.arange(min(start, S)), S + torch.arange(first, max(first, start)) % W)
        ).to(k.device)
        k_all = torch.cat(
            (self.k.index_select(2, held), k), dim=2
        )  # (B, Hkv, n, D): sinks, window, new
        v_all = torch.cat((self.v.index_select(2, held), v), dim=2)
        pos = torch.arange(start, start + T, device=k.device)
        keep = (pos < S) | (pos >= start + T - W)  # sinks, and the newest `window` of the rest
        slots = torch.where(pos < S, pos, S + pos % W)[keep]
        self.k[:, :, slots] = k[:, :, keep]
        self.v[:, :, slots] = v[:, :, keep]
        self.next_pos = start + T
        return k_all, v_all

    def oldest_held(self, start: int, T: int) -> int:
        """The oldest window position handed to a chunk of T at `start`: the oldest one its
        first query still sees (the window - 1 before it); the chunk's later queries slide."""
        return max(self.sinks, start - self.window + 1)

    positions_inside = True  # keys come unrotated: attention rotates them at their cache positions

    def store(self, attn, x, k, v, start, mask):
        k, v = self.update(k, v, start)  # (B, Hkv, n, D): sinks, window, new
        return k, v, mask.placed(k.shape[2] - x.shape[1], 0)

    def held(self) -> int:
        return min(self.next_pos, self.sinks) + min(max(self.next_pos - self.sinks, 0), self.window)

    def written(self) -> int:
        return self.max_len  # the ring's slots fill from the middle: copy them all


class ChunkSinkCache(SinkCache):
    """The sink cache with StreamingLLM's own eviction (`StartRecentKVCache.evict_for_space`):
    before a chunk of T tokens it keeps the sinks and only the window - T most recent positions,
    room for the whole chunk, whose queries then see every held key and the chunk causally (no
    window inside it: a chunk longer than the window, or a first chunk longer than sinks +
    window, is attended whole, as the reference does). One token at a time it is `SinkCache`.
    Afterwards both keep the sinks and the newest `window` positions.

        chunk of T after the cache filled:  keys  sinks | window - T held | the T new
    """

    def oldest_held(self, start: int, T: int) -> int:
        return max(self.sinks, start + T - self.window)

    def store(self, attn, x, k, v, start, mask):
        mask = dataclasses.replace(mask, rule=EVERY_KEY)  # the pattern's window acts on eviction
        return super().store(attn, x, k, v, start, mask)


class SegmentMemory:
    """Transformer-XL segment recurrence for one attention layer (Dai et al. 2019,
    https://arxiv.org/abs/1901.02860): the layer's input hidden states of the last `length` tokens
    of the previous segment(s), detached. The next segment's keys and values are projected from
    [memory; segment] with the current weights; no gradient flows into the memory. Positions are
    relative to the memory: keys at 0 .. M + T - 1, queries at M .. M + T - 1 (RoPE rotated there,
    an ALiBi bias evaluated there), so only relative schemes carry across the boundary.

        segment s:   q from h_s;  k, v from [SG(h_{s-1}); h_s]
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"memory length must be at least 1, got {length}")
        self.length = length
        self.h: torch.Tensor | None = None  # (B, M, dim)

    positions_inside = True  # keys at 0 .. M + T - 1, relative to the memory

    def store(self, attn, x, k, v, start, mask):
        if self.h is not None:
            mk, mv = attn.project_kv(self.h)  # (B, Hkv, M, D)
            k, v = torch.cat((mk, k), dim=2), torch.cat((mv, v), dim=2)  # (B, Hkv, M + T, D)
        self.h = x.detach() if self.h is None else torch.cat((self.h, x.detach()), dim=1)
        self.h = self.h[:, -self.length :]  # (B, M', dim)
        return k, v, mask.placed(k.shape[2] - x.shape[1], 0)

    def bytes(self) -> int:
        return 0 if self.h is None else self.h.numel() * self.h.element_size()

    def reorder(self, index: torch.Tensor) -> None:
        if self.h is not None:
            self.h = self.h.index_select(0, index)


class RetentionState:
    """A retention layer's decoding state S (B, H, Dk, Dv) and nothing else: its size does not
    depend on how many tokens went through. The mixer reads it (`current`), runs a chunk through
    the chunkwise form (mixers.retention_chunk) and keeps the new state (`keep`); `detach` (Transformer-XL-style
    segments in training) keeps it out of the next segment's graph. batch None: allocated at the first chunk."""

    def __init__(
        self,
        batch: int | None,
        heads: int,
        key_dim: int,
        value_dim: int,
        dtype,
        device,
        detach: bool = False,
    ):
        self.shape = (heads, key_dim, value_dim)
        self.dtype, self.device, self.detach = dtype, device, detach
        self.S = (
            None if batch is None else torch.zeros(batch, *self.shape, dtype=dtype, device=device)
        )
        self.seen = (
            0  # tokens folded into S: the position of the next one (segments restart `start` at 0)
        )

    def current(self, q: torch.Tensor) -> torch.Tensor:
        """The state before this chunk (zeros at the start), in q's dtype: (B, H, Dk, Dv)."""
        if self.S is None:
            self.S = torch.zeros(q.shape[0], *self.shape, dtype=q.dtype, device=q.device)
        return self.S.to(q.dtype)

    def keep(self, S: torch.Tensor, tokens: int) -> None:
        self.S = S.detach() if self.detach else S
        self.seen += tokens

    def bytes(self) -> int:
        if self.S is None:
            return 0
        return self.S.numel() * self.S.element_size()

    def used_bytes(self) -> int:
        return self.bytes()

    def reorder(self, index: torch.Tensor) -> None:
        if self.S is not None:
            self.S = self.S.index_select(0, index)


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype=torch.bfloat16) -> int:
    """Bytes a static KV cache holds per token: keys and values, every layer and key/value head."""
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


class DecodeState:
    """Everything a model needs between decoding steps: per-layer KV caches, the position of the
    next token and, for encoder-decoder models, the encoder memory and its padding mask.

    `reorder(index)` keeps batch rows `index` (beam search); it applies to every part (with
    `same_sources`, only to those a beam's history changes).
    """

    def __init__(
        self,
        cache: list[LayerCache],
        pos: int = 0,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ):
        self.cache, self.pos = cache, pos
        self.memory, self.memory_mask = memory, memory_mask
        self.cross: list = [None] * len(cache)  # per-layer (k, v) of the memory, computed once
        self.align: list = [None] * len(
            cache
        )  # per-layer state of a stateful cross-attention kernel
        self.last = (
            None  # the last step's Output (cross-attention weights for copy heads, heatmaps)
        )

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> DecodeState:
        """Keep batch rows `index`. `same_sources`: each kept row replaces a row of the same
        source (beam search, whose rows are each source's beams), so what was computed from the
        source alone (the encoder memory, its mask, the cross-attention keys and values) is kept
        as it is instead of copied."""
        for c in self.cache:
            c.reorder(index)
        for a in self.align:  # a stateful cross-attention kernel's state follows its beam
            if a is not None:
                a.reorder(index)
        if same_sources:
            return self
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)
        self.cross = [
            None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))
            for kv in self.cross
        ]
        return self
