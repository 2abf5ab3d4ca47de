"""Decoding: turn a model's next-token distributions into text.

Functions over the small model protocol, so they work for any model that speaks it:

    model.start_state(batch, max_len, src=None) -> DecodeState   (KV caches, position, memory)
    model.step(tokens (B, T), state) -> (next-token logits (B, V), state)


    stream(...)   yields one token id at a time (for printing as it comes)
    sample(...)   temperature, top-k, top-p (nucleus), min-p; seeded, reproducible
    greedy(...)   the arg-max at every step

Beam search and the degeneration metrics live beside these (issue: decoding).
"""
from __future__ import annotations

from typing import Iterator

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None,
                  min_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k / nucleus (top-p) / min-p set. (B, V) -> (B, V)."""
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop_sorted[..., 0] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    if min_p is not None and min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        floor = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def _context_of(model) -> int:
    return model.cfg.context


@torch.no_grad()
def stream(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
           seed: int | None = None, eos_id: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) one step at a time, using the KV cache.

    When the sequence reaches the model's context, the window slides: the cache is refilled from
    the last half-context of tokens (positions restart at 0).
    """
    model.eval()
    gen = torch.Generator(device=input_ids.device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    context = _context_of(model)
    ids = input_ids[:, -context:]
    state = model.start_state(ids.shape[0], context)
    logits, state = model.step(ids, state)
    for _ in range(max_new_tokens):
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p, min_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)  # (B,)
        yield nxt
        if eos_id is not None and bool((nxt == eos_id).all()):
            return
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if state.pos + 1 > context:  # slide the window
            ids = ids[:, -(context // 2):]
            state = model.start_state(ids.shape[0], context)
            logits, state = model.step(ids, state)
        else:
            logits, state = model.step(nxt[:, None], state)


def sample(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
           seed: int | None = None, eos_id: int | None = None) -> torch.Tensor:
    """Prompt + sampled continuation, (B, T + new)."""
    new = list(stream(model, input_ids, max_new_tokens, temperature, top_k, top_p, min_p, seed, eos_id))
    return torch.cat([input_ids] + [t[:, None] for t in new], dim=1) if new else input_ids


def greedy(model, input_ids: torch.Tensor, max_new_tokens: int, eos_id: int | None = None) -> torch.Tensor:
    """Prompt + arg-max continuation, (B, T + new)."""
    return sample(model, input_ids, max_new_tokens, temperature=0.0, eos_id=eos_id)
