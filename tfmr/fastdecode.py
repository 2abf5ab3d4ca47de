"""Fast decoding: a static KV cache, left padding and a compiled decode step (torch.compile, with
CUDA graphs on a GPU), after gpt-fast's recipe.

decode.py's decoders are the readable reference: each step slices the cache to its filled length,
builds a mask for that length and runs the model eagerly, so every step has new shapes and a few
hundred small kernel launches driven from Python. Here every tensor a step touches has a fixed
shape, so one decode step (embedding, all layers, head and the choice of the next token) is one
compiled graph that CUDA replays with a single launch:

    cache      per layer (B, H_kv, max_len, D), written in place at `slots` (a tensor, not an int)
    positions  (B, T) = slot - the row's left padding, so each row sees positions 0, 1, 2, ...
    mask       (B, 1, T, max_len): the model's own attention pattern (dense, sliding window,
               Longformer, BigBird) evaluated at those per-row positions, minus left padding

Left padding lets prompts of different lengths share one batch. Nothing here knows a variant:
the model's own modules run, through the same seam as the spine. The tokens are embedded by
`model.embed(tokens, where)` and the rest is the model's own `tail` (blocks, final norm, head;
model.py) with a `StaticCache` per layer, a `StaticMask` and
`where = positions.Where(positions, slots)` as the start; every
position scheme answers its hooks for per-row positions (positions.py), and a bias scheme's
described `Bias` is evaluated by the kernel at the mask's per-row positions. So this path
computes what `model.step` computes (tests/test_fastdecode.py checks the tokens against decode.py
for every position kind and pattern; tests/test_contracts.py for schemes defined outside tfmr).
An encoder-decoder (`needs_source`) decodes the same way over its encoded sources, held as
fixed-size cross-attention keys and values (`src_len` slots, padding hidden), so a G2P word
and a sentence share one compiled step. What it refuses, it reads from declarations: encoders
(not causal), patterns and mixers that keep their own decoding state, stateful cross-attention
kernels (`Kernel.stateful`), and a `max_len` past what the position scheme can place
(`Position.max_len`).

    dec = FastDecoder(model, batch=1, max_len=272, compile=True)
    ids = dec.generate(prompt, 256)                                   # greedy
    ids = dec.generate(prompt, 256, temperature=0.8, top_k=200, seed=0)
    dec4 = FastDecoder(model, batch=4, max_len=272, compile=True)
    ids = dec4.beam_search(prompt, 4, 256)                            # batch = inputs x beams

Not here: speculative decoding, paged caches. A weight-only quantized model (quantize.py) decodes here
as it is: its linear layers are the model's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import AbsoluteStore
from .decode import Beams, NBest, Sampling, check_decoding, exponential_race
from .masks import Mask
from .positions import Where

SRC_BUCKET = 16  # compiled encoding pads sources to a multiple of this (one graph per multiple)


class StaticCache(nn.Module, AbsoluteStore):
    """One layer's keys and values, preallocated for the whole generation; buffers, so a CUDA
    graph sees the same memory on every replay. `update` writes at the `Where`'s slots and returns
    the whole buffer: the mask hides what is not filled yet."""

    key_start = 0  # the keys returned start at slot 0 (attention shifts its mask by this)

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        self.register_buffer(
            "k",
            torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device),
            persistent=False,
        )
        self.register_buffer("v", torch.zeros_like(self.k), persistent=False)

    def update(self, k: torch.Tensor, v: torch.Tensor, where: Where):
        self.k.index_copy_(2, where.slots, k)  # (B, H_kv, max_len, D)
        self.v.index_copy_(2, where.slots, v)
        return self.k, self.v

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search: row i takes the cache of row rows[i], in place (same memory)."""
        self.k.copy_(self.k.index_select(0, rows))
        self.v.copy_(self.v.index_select(0, rows))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.k.shape)}, dtype={self.k.dtype}"


class StaticMask(Mask):
    """A ready (B, 1, T, max_len) bool mask (True = may attend) with the per-row positions of its
    queries (B, T) and keys (B, max_len); biases are evaluated at those positions (`by_row`)."""

    by_row = True

    def __init__(self, keep: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        super().__init__(causal=True)
        self.keep, self.q_pos, self.k_pos = keep, q_pos, k_pos

    def is_plain_causal(self, q_len: int, k_len: int) -> bool:
        return False

    def is_empty(self, q_len: int, k_len: int) -> bool:
        return False

    def dense(self, q_len: int, k_len: int, device) -> torch.Tensor:
        return self.keep

    def positions(self, q_len: int, k_len: int, device):
        return self.q_pos[:, :, None], self.k_pos[:, None, :]  # (B, T, 1), (B, 1, max_len)


class FastDecoder(nn.Module):
    """Static-cache decoding of one model for `batch` rows of up to `max_len` tokens: a
    decoder-only model, or an encoder-decoder whose sources (up to `src_len` tokens, default the
    model's context) are encoded once per call (`encode`) into fixed-size cross-attention keys
    and values (padding hidden by the key mask), so the decoder step keeps one shape.

    compile=True runs the decode step through torch.compile: mode "reduce-overhead" (CUDA graphs)
    on a GPU, the default mode on CPU; `mode` overrides it. The first call per sampling setting
    compiles (tens of seconds on a GPU); later calls replay.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: int,
        max_len: int,
        compile: bool = False,
        mode: str | None = None,
        src_len: int | None = None,
    ):
        super().__init__()
        if not model.needs_source and not model.causal:
            raise ValueError(
                "FastDecoder decodes causal models (decoder-only or encoder-decoder); "
                "this one is an encoder"
            )
        crosses = [b.cross.kernel for b in model.blocks] if model.needs_source else []
        stateful = {type(k).__name__ for k in crosses if k.stateful}  # declared on the kernel class
        if stateful:
            raise ValueError(
                "FastDecoder has no place for a stateful cross-attention kernel's alignment "
                f"({', '.join(sorted(stateful))}): use tfmr.decode (greedy, sample, beam_search)"
            )
        if model.pattern.positions_in_cache or not all(b.attn.fast_decoding for b in model.blocks):
            raise ValueError(
                "FastDecoder keeps a static key/value cache at absolute positions; this model's "
                f"{type(model.pattern).__name__} pattern or sequence mixers keep their own decoding "
                "state: use tfmr.decode (greedy, sample, beam_search)"
            )
        limit = model.pos.max_len(model.cfg.context)
        if limit is not None and max_len > limit:
            raise ValueError(
                f"max_len {max_len} exceeds the {limit} positions this model's "
                f"{type(model.pos).__name__} positions can place"
            )
        self.model = model.eval()
        p, a = next(model.parameters()), model.blocks[0].attn
        self.batch, self.max_len = batch, max_len
        self.caches = nn.ModuleList(
            StaticCache(batch, a.kv_heads, max_len, a.head_dim, p.dtype, p.device)
            for _ in model.blocks
        )
        self.rules = model.pattern.mask(
            True
        )  # the model's own pattern: its rules, evaluated per row below
        table = self.rules.random_table(
            max_len, max_len, p.device
        )  # BigBird's random blocks, or None
        self.register_buffer("random_table", table, persistent=False)
        self.register_buffer(
            "pad", torch.zeros(batch, 1, dtype=torch.long, device=p.device), persistent=False
        )
        self.register_buffer("slot_ids", torch.arange(max_len, device=p.device), persistent=False)
        self.src_len = (src_len or model.cfg.context) if model.needs_source else 0
        if (
            model.needs_source
        ):  # the encoded sources' cross-attention keys and values, and which are real
            self.cross = nn.ModuleList(
                StaticCache(
                    batch, b.cross.kv_heads, self.src_len, b.cross.head_dim, p.dtype, p.device
                )
                for b in model.blocks
            )
            self.register_buffer(
                "src_keep",
                torch.zeros(batch, self.src_len, dtype=torch.bool, device=p.device),
                persistent=False,
            )
        self.compiled = compile
        if compile:
            mode = mode or ("reduce-overhead" if p.device.type == "cuda" else None)
            self._next = torch.compile(self._next, mode=mode, fullgraph=True)
            self._beam_next = torch.compile(self._beam_next, mode=mode, fullgraph=True)
            if (
                model.needs_source
            ):  # one graph per source bucket (`encode` pads to a multiple of SRC_BUCKET)
                self._encode_kvs = torch.compile(self._encode_kvs, dynamic=False, fullgraph=True)

    # ---------------------------------------------------------------- the step, shared by all
    def forward(self, tokens: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Feed tokens (B, T) into cache slots (T,); return the float logits of the last
        position (B, V)."""
        m = self.model
        where = Where(
            (slots[None, :] - self.pad).clamp(min=0), slots
        )  # positions (B, T); padding at 0
        kvs, memory_mask = None, None
        if m.needs_source:
            kvs, memory_mask = (
                [(c.k, c.v) for c in self.cross],
                Mask(causal=False, key_padding=self.src_keep),
            )
        out = m.tail(
            m.embed(tokens, where),
            self.mask(slots),
            self.caches,
            where,
            last_only=True,
            memory_kvs=kvs,
            memory_mask=memory_mask,
        )  # the model's own spine tail: blocks, final norm, head
        return out.logits[:, -1].float()  # (B, V)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> None:
        """Encode sources (B, S) right-padded (padding from the model's pad id, or `src_mask`, True
        for real tokens) into the fixed cross-attention buffers; slots past S are hidden."""
        m = self.model
        if not m.needs_source:
            raise ValueError("this model is decoder-only: it takes no source")
        B, S = src.shape
        if B != self.batch or S > self.src_len:
            raise ValueError(
                f"this FastDecoder holds {self.batch} sources of up to {self.src_len} tokens; "
                f"got {B} of {S}"
            )
        if src_mask is None:  # given explicitly, so the encoder never asks whether there is padding
            src_mask = (
                src != m.cfg.pad_id
                if m.cfg.pad_id is not None
                else torch.ones_like(src, dtype=torch.bool)
            )
        if (
            self.compiled
        ):  # pad to the bucket's length (hidden keys change nothing): few compiled graphs
            S = min(self.src_len, -(-S // SRC_BUCKET) * SRC_BUCKET)
            src = F.pad(src, (0, S - src.shape[1]), value=m.cfg.pad_id or 0)  # (B, S)
            src_mask = F.pad(src_mask, (0, S - src_mask.shape[1]), value=False)
        self.src_keep.zero_()
        self.src_keep[:, :S] = src_mask
        for cache, (k, v) in zip(
            self.cross, self._encode_kvs(src, src_mask)
        ):  # k, v: (B, Hkv, S, D)
            cache.k.zero_()
            cache.v.zero_()
            cache.k[:, :, :S], cache.v[:, :, :S] = k, v

    def _encode_kvs(self, src: torch.Tensor, src_mask: torch.Tensor) -> list:
        """The encoder and every decoder layer's cross-attention keys and values (compiled once per
        source bucket when compile=True)."""
        memory, _ = self.model.encode(src, src_mask)
        return self.model.memory_kvs(memory)

    def _source(self, src: torch.Tensor | None, rows: int = 1) -> None:
        """Encode `src` (each row repeated `rows` times, for beams) when the model needs one."""
        if self.model.needs_source != (src is not None):
            raise ValueError(
                "an encoder-decoder model needs its source (src=...)"
                if src is None
                else "a decoder-only model takes no source (src)"
            )
        if src is not None:
            self.encode(src.repeat_interleave(rows, dim=0))

    def mask(self, slots: torch.Tensor) -> StaticMask:
        """Queries at `slots` (T,) over the whole cache: the model's pattern rules at each row's
        positions (causal, windows, global tokens, random blocks), keys of left padding hidden;
        a padding query sees itself only (so no row of the softmax is empty)."""
        q_pos = slots[None, :] - self.pad  # (B, T), negative on left padding
        k_pos = self.slot_ids[None, :] - self.pad  # (B, max_len)
        ok = self.rules.allowed(
            q_pos[:, :, None], k_pos[:, None, :], self.random_table
        )  # (B, T, max_len)
        own = slots[:, None] == self.slot_ids[None, :]  # (T, max_len)
        keep = ok & ((k_pos >= 0)[:, None, :] | own)  # (B, T, max_len)
        return StaticMask(keep[:, None], q_pos, k_pos)  # (B, 1, T, max_len)

    def _next(self, tokens: torch.Tensor, slot: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        """The compiled decode step: tokens (B, 1) at `slot` (1,) -> next tokens (B,)."""
        return sampling.choose(self(tokens, slot), draw=exponential_race)

    def _beam_next(
        self, tokens: torch.Tensor, slot: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """The compiled beam step: keep the surviving rows' caches, then logits (B, V) at `slot`."""
        for cache in self.caches:
            cache.reorder(rows)
        return self(tokens, slot)

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fill the cache with left-padded prompts (B, P); return the last logits (B, V)."""
        B, P = input_ids.shape
        if B != self.batch or P >= self.max_len:
            raise ValueError(
                f"this FastDecoder holds {self.batch} rows of {self.max_len} tokens; "
                f"got {B} prompts of {P} tokens"
            )
        if attention_mask is None:
            self.pad.zero_()
        else:
            self.pad.copy_(
                P - attention_mask.long().sum(dim=1, keepdim=True)
            )  # (B, 1) pads on the left
        return self(input_ids, self.slot_ids[:P])

    # ---------------------------------------------------------------- decoders
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        attention_mask: torch.Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        seed: int | None = None,
        check_every: int = 16,
        src: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation of left-padded prompts (B, P):
        returns (B, P + new). After EOS a row emits `pad_id` (default `eos_id`); whether every row
        is done is checked every `check_every` steps (one host sync each time). `seed` seeds the
        global RNG (sampling happens inside the compiled graph). An encoder-decoder takes its
        sources as `src` (B, S) and the decoder's start tokens as `input_ids`."""
        check_decoding(max_new_tokens, temperature, top_k, top_p, min_p)
        B, P = input_ids.shape
        if P + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_len ({self.max_len})"
            )
        if B != self.batch:
            raise ValueError(
                f"this FastDecoder holds {self.batch} rows of {self.max_len} tokens; got {B} prompts"
            )
        self._source(src)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = Sampling(temperature, top_k, top_p, min_p)
        pad = (
            None
            if eos_id is None
            else torch.tensor(eos_id if pad_id is None else pad_id, device=input_ids.device)
        )
        out = torch.empty(B, max_new_tokens, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        slot = torch.full((1,), P, dtype=torch.long, device=input_ids.device)
        if (
            P == 1 and attention_mask is None
        ):  # a one-token prompt (a decoder's start token) is a step
            self.pad.zero_()
            token = self._next(input_ids, slot - 1, sampling).clone()
        else:
            token = sampling.choose(self.prefill(input_ids, attention_mask), draw=exponential_race)
        for t in range(max_new_tokens):
            if eos_id is not None:
                token = torch.where(done, pad, token)
                done = done | (token == eos_id)
            out[:, t] = token
            if t + 1 == max_new_tokens:
                break
            if eos_id is not None and (t + 1) % check_every == 0 and bool(done.all()):
                out = out[:, : t + 1]
                break
            token = self._next(
                token[:, None], slot, sampling
            ).clone()  # clone: a CUDA graph reuses its output
            slot += 1
        return torch.cat([input_ids, out], dim=1)

    @torch.no_grad()
    def beam_search(
        self,
        input_ids: torch.Tensor,
        beam_size: int,
        max_new_tokens: int,
        eos_id: int | None = None,
        length_penalty: float = 1.0,
        *,
        early_stopping: bool | str = False,
        n_best: int | None = None,
        pad_id: int | None = None,
        check_every: int = 16,
        src: torch.Tensor | None = None,
    ) -> torch.Tensor | NBest:
        """decode.beam_search's semantics on the static cache; this decoder's batch must be
        inputs x beam_size. Whether decoding can stop is checked every `check_every` steps;
        the hypotheses pool is frozen once it can, so checking late changes nothing."""
        check_decoding(
            max_new_tokens, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty
        )
        B, P = input_ids.shape
        K = beam_size
        if B * K != self.batch:
            raise ValueError(
                f"beam search over {B} inputs x {K} beams needs FastDecoder(batch={B * K})"
            )
        if P + max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_len ({self.max_len})"
            )
        self._source(src, K)
        n = 1 if n_best is None else n_best
        fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
        beams = Beams(input_ids, K, max_new_tokens, eos_id, length_penalty, early_stopping, fill)
        logits = self.prefill(input_ids.repeat_interleave(K, dim=0))
        slot = torch.full((1,), P, dtype=torch.long, device=input_ids.device)
        for t in range(max_new_tokens):
            rows, tokens = beams.advance(torch.log_softmax(logits, dim=-1))
            if t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and beams.finished()):
                break
            logits = self._beam_next(tokens[:, None], slot, rows).clone()
            slot += 1
        best = beams.result(n)
        return best if n_best is not None else best.ids[:, 0]
