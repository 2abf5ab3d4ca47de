"""Fast decoding: a static KV cache, left padding and a compiled decode step (torch.compile, with
CUDA graphs on a GPU), after gpt-fast's recipe.

decode.py's decoders are the readable reference: each step slices the cache to its filled length,
builds a mask for that length and runs the model eagerly, so every step has new shapes and a few
hundred small kernel launches driven from Python. Here every tensor a step touches has a fixed
shape, so one decode step (embedding, all layers, head and the choice of the next token) is one
compiled graph that CUDA replays with a single launch:

    cache      per layer (B, H_kv, max_len, D), written in place at `slots` (a tensor, not an int)
    mask       (B, 1, T, max_len): keys at or before the query's slot that are not left padding
    positions  (B, T) = slot - the row's left padding, so each row sees positions 0, 1, 2, ...

Left padding lets prompts of different lengths share one batch. The model's own modules run: the
blocks are called through `run_blocks` with a `StaticCache` per layer, a `StaticMask` and per-row
positions, so this path computes what `model.step` computes (tests/test_fastdecode.py checks the
tokens against decode.py). Decoder-only models with the dense attention pattern; every position
kind (learned, sinusoidal, none, RoPE, xPos, ALiBi); encoder-decoder models use decode.py.

    dec = FastDecoder(model, batch=1, max_len=272, compile=True)
    ids = dec.generate(prompt, 256)                                   # greedy
    ids = dec.generate(prompt, 256, temperature=0.8, top_k=200, seed=0)
    dec4 = FastDecoder(model, batch=4, max_len=272, compile=True)
    ids = dec4.beam_search(prompt, 4, 256)                            # batch = inputs x beams

Not here: speculative decoding, paged caches, quantisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .decode import Beams, NBest, filter_logits
from .kernels import Dense, Mask
from .model import run_blocks
from .positions import Learned, NoPosition, Position, Sinusoidal


@dataclass
class Where:
    """Where a chunk of tokens goes: cache slots (T,) shared by the batch, positions (B, T) per row."""

    slots: torch.Tensor
    positions: torch.Tensor


class StaticCache(nn.Module):
    """One layer's keys and values, preallocated for the whole generation; buffers, so a CUDA
    graph sees the same memory on every replay. `update` writes at tensor slots and returns the
    whole buffer: the mask hides what is not filled yet."""

    key_start = 0  # the keys returned start at position 0 (attention shifts its mask by this)

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        self.register_buffer("k", torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device),
                             persistent=False)
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
    """A mask given as a ready (B, 1, T, max_len) bool tensor, True = may attend."""

    def __init__(self, keep: torch.Tensor):
        super().__init__(causal=True)
        self.keep = keep

    def is_plain_causal(self, q_len: int, k_len: int) -> bool:
        return False

    def is_empty(self, q_len: int, k_len: int) -> bool:
        return False

    def dense(self, q_len: int, k_len: int, device) -> torch.Tensor:
        return self.keep


def _embed_learned(pos: Learned, x, positions):
    return x + pos.wpe(positions)  # (B, T, dim)


def _embed_sinusoidal(pos: Sinusoidal, x, positions):
    return x * pos.scale + pos.table[positions].to(x.dtype)  # (B, T, dim)


def _embed_none(pos, x, positions):
    return x


class RowPositions:
    """A model's position module called with per-row positions instead of one int start.

    embed: absolute schemes are looked up in ROW_EMBEDS (their `embed` takes an int start).
    rotate: the module's own `rotate(q, k, positions)` with (B, T) positions (Rope accepts them).
    bias: the module's own `bias(q_len, k_len, where)` with the `Where` (Alibi then returns the
    dense (H, T, max_len) bias over cache slots)."""

    def __init__(self, pos: nn.Module):
        self.pos = pos
        kind = type(pos)
        if kind not in ROW_EMBEDS and kind.embed is not Position.embed:
            raise ValueError(f"fast decoding does not know how to embed per-row positions for {kind.__name__}; "
                             f"known: {', '.join(c.__name__ for c in ROW_EMBEDS)}")
        self._embed = ROW_EMBEDS.get(kind, _embed_none)
        self._rotates = kind.rotate is not Position.rotate
        self._biases = kind.bias is not Position.bias

    def embed(self, x: torch.Tensor, where: Where) -> torch.Tensor:
        return self._embed(self.pos, x, where.positions)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, where: Where):
        return self.pos.rotate(q, k, where.positions) if self._rotates else (q, k)

    def bias(self, q_len: int, k_len: int, where: Where):
        return self.pos.bias(q_len, k_len, where) if self._biases else None


def _draw(probs: torch.Tensor) -> torch.Tensor:
    """A sample from each row of probs (B, V): argmax of p / Exp(1) noise (the exponential-race
    form of multinomial sampling; compiles into the graph, unlike torch.multinomial)."""
    noise = torch.empty_like(probs).exponential_(1)
    return (probs / noise).argmax(dim=-1)


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen inside the compiled step (temperature <= 0: arg-max)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(filter_logits(logits / self.temperature, self.top_k, self.top_p, self.min_p), dim=-1)
        return _draw(probs)


class FastDecoder(nn.Module):
    """Static-cache decoding of one decoder-only model for `batch` rows of up to `max_len` tokens.

    compile=True runs the decode step through torch.compile: mode "reduce-overhead" (CUDA graphs)
    on a GPU, the default mode on CPU; `mode` overrides it. The first call per sampling setting
    compiles (tens of seconds on a GPU); later calls replay.
    """

    def __init__(self, model: nn.Module, batch: int, max_len: int, compile: bool = False, mode: str | None = None):
        super().__init__()
        if not hasattr(model, "tok_emb") or hasattr(model, "encoder"):
            raise ValueError("FastDecoder takes a decoder-only tfmr Model; use tfmr.decode for encoder-decoder models")
        if type(model.pattern) is not Dense:
            raise ValueError(f"FastDecoder runs the dense attention pattern; this model uses "
                             f"{type(model.pattern).__name__} (decode with tfmr.decode)")
        if max_len > model.cfg.context and isinstance(model.pos, Learned):
            raise ValueError(f"max_len {max_len} exceeds the {model.cfg.context} learned positions of this model")
        self.model = model.eval()
        p, a = next(model.parameters()), model.blocks[0].attn
        self.batch, self.max_len = batch, max_len
        self.caches = nn.ModuleList(StaticCache(batch, a.kv_heads, max_len, a.head_dim, p.dtype, p.device)
                                    for _ in model.blocks)
        self.rows = RowPositions(model.pos)
        self.register_buffer("pad", torch.zeros(batch, 1, dtype=torch.long, device=p.device), persistent=False)
        self.register_buffer("slot_ids", torch.arange(max_len, device=p.device), persistent=False)
        self.compiled = compile
        if compile:
            mode = mode or ("reduce-overhead" if p.device.type == "cuda" else None)
            self._next = torch.compile(self._next, mode=mode, fullgraph=True)
            self._beam_next = torch.compile(self._beam_next, mode=mode, fullgraph=True)

    # ---------------------------------------------------------------- the step, shared by all
    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Feed tokens (B, T) into cache slots (T,), attending where keep (B, 1, T, max_len);
        return the float logits of the last position (B, V)."""
        m = self.model
        where = Where(slots, (slots[None, :] - self.pad).clamp(min=0))  # positions (B, T)
        x = m.embed_norm(self.rows.embed(m.tok_emb(tokens), where))  # (B, T, dim)
        x, _, _, _ = run_blocks(m.blocks, x, self.rows, StaticMask(keep), self.caches, where)
        return m.lm_head(m.final_norm(x[:, -1:]))[:, -1].float()  # (B, V)

    def _decode_keep(self, slot: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, max_len): one query at `slot` sees filled, non-padding slots."""
        keep = (self.slot_ids <= slot) & (self.slot_ids >= self.pad)  # (B, max_len)
        return keep[:, None, None, :]

    def _next(self, tokens: torch.Tensor, slot: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        """The compiled decode step: tokens (B, 1) at `slot` (1,) -> next tokens (B,)."""
        return sampling.choose(self(tokens, slot, self._decode_keep(slot)))

    def _beam_next(self, tokens: torch.Tensor, slot: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The compiled beam step: keep the surviving rows' caches, then logits (B, V) at `slot`."""
        for cache in self.caches:
            cache.reorder(rows)
        return self(tokens, slot, self._decode_keep(slot))

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fill the cache with left-padded prompts (B, P); return the last logits (B, V)."""
        B, P = input_ids.shape
        if B != self.batch or P >= self.max_len:
            raise ValueError(f"this FastDecoder holds {self.batch} rows of {self.max_len} tokens; "
                             f"got {B} prompts of {P} tokens")
        if attention_mask is None:
            self.pad.zero_()
        else:
            self.pad.copy_((P - attention_mask.long().sum(dim=1, keepdim=True)))  # (B, 1) pads on the left
        slots = self.slot_ids[:P]
        real = slots[None, :] >= self.pad  # (B, P)
        causal = slots[None, :] <= slots[:, None]  # (P, P): query i sees key j <= i
        keep = causal[None] & (real[:, None, :] | torch.eye(P, dtype=torch.bool, device=slots.device))
        keep = torch.cat([keep, keep.new_zeros(B, P, self.max_len - P)], dim=-1)  # (B, P, max_len)
        return self(input_ids, slots, keep[:, None])

    # ---------------------------------------------------------------- decoders
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *, attention_mask: torch.Tensor | None = None,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 min_p: float | None = None, eos_id: int | None = None, pad_id: int | None = None,
                 seed: int | None = None, check_every: int = 16) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation of left-padded prompts (B, P):
        returns (B, P + new). After EOS a row emits `pad_id` (default `eos_id`); whether every row
        is done is checked every `check_every` steps (one host sync each time). `seed` seeds the
        global RNG (sampling happens inside the compiled graph)."""
        B, P = input_ids.shape
        if P + max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_len ({self.max_len})")
        if seed is not None:
            torch.manual_seed(seed)
        sampling = Sampling(temperature, top_k, top_p, min_p)
        pad = None if eos_id is None else torch.tensor(eos_id if pad_id is None else pad_id, device=input_ids.device)
        out = torch.empty(B, max_new_tokens, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        slot = torch.full((1,), P, dtype=torch.long, device=input_ids.device)
        token = sampling.choose(self.prefill(input_ids, attention_mask))
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
            token = self._next(token[:, None], slot, sampling).clone()  # clone: a CUDA graph reuses its output
            slot += 1
        return torch.cat([input_ids, out], dim=1)

    @torch.no_grad()
    def beam_search(self, input_ids: torch.Tensor, beam_size: int, max_new_tokens: int, eos_id: int | None = None,
                    length_penalty: float = 1.0, *, early_stopping: bool | str = False, n_best: int | None = None,
                    pad_id: int | None = None, check_every: int = 16) -> torch.Tensor | NBest:
        """decode.beam_search's semantics on the static cache; this decoder's batch must be
        inputs x beam_size. Whether decoding can stop is checked every `check_every` steps;
        the hypotheses pool is frozen once it can, so checking late changes nothing."""
        B, P = input_ids.shape
        K = beam_size
        if B * K != self.batch:
            raise ValueError(f"beam search over {B} inputs x {K} beams needs FastDecoder(batch={B * K})")
        if P + max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_len ({self.max_len})")
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


# Absolute schemes: how to add the embeddings of per-row positions (B, T).
ROW_EMBEDS = {Learned: _embed_learned, Sinusoidal: _embed_sinusoidal, NoPosition: _embed_none}
