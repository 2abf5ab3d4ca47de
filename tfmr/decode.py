"""Decoding: turn a model's next-token distributions into token ids.

Functions over the small model protocol (`Decodable`, written down below), so they work for
decoder-only and encoder-decoder models and the pointer-generator alike:

    model.needs_source                                             (encoder-decoders: src=...)
    model.start_state(batch, max_len, src=None) -> DecodeState   (KV caches, position, memory)
    model.step(tokens (B, T), state) -> (next-token logits (B, V), state)
    state.reorder(rows, same_sources)                              (beam search keeps survivors)

    Sampling           how the next token is chosen (repetition, no-repeat-n-gram, temperature,
                       top-k, top-p, min-p; temperature 0: arg-max): the one chooser, used here, by
                       fastdecode.py inside its compiled step and by the training objectives
    choose(...)        Sampling's choice as a function
    greedy(...)        the arg-max at every step                        贪心解码
    sample(...)        temperature, top-k, top-p (nucleus), min-p       采样
    next_token_probs(...)  the filtered, renormalised distribution a sample is drawn from
    stream(...)        the same, one token at a time (for printing as it comes)
    check_decoding(...)  every setting above in its range (ValueError naming it); the decoders call it
    beam_search(...)   K hypotheses per input, length penalty, early stopping, n-best   束搜索
                       (`on_step` sees every step's candidates: `BeamStep`, for drawing the tree)

Logits processors run in Hugging Face `generate`'s order and with its math, so the same logits
give the same choices: repetition penalty, no-repeat-n-gram, then temperature, top-k, top-p,
min-p. Greedy and beam search follow `generate`'s semantics token for token (tests/test_decode_hf.py):
after EOS a row emits `pad_id` (default: `eos_id`); beam search keeps the 2K best continuations,
finishes a hypothesis when it ends in EOS or reaches the length limit, scores a finished one by
sum(log p) / (generated tokens) ** length_penalty, and stops when no running beam can beat the
finished ones (`early_stopping` False / True / "never", as in `generate`).

Left padding (ragged prompts in one batch) and the compiled static-cache path for GPUs live in
fastdecode.py; the degeneration metrics in degeneration.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

NEG = (
    -1.0e9
)  # the "impossible" score beam search adds, as Hugging Face does (not -inf: it is summed)


@runtime_checkable
class Decodable(Protocol):
    """What the decoders here need of a model (model.Model, model.EncoderDecoder,
    pointer.PointerGenerator). The state is a cache.DecodeState (or a subclass): per-layer caches,
    the next position `pos`, and `reorder(rows, same_sources=False)`."""

    needs_source: bool  # True: start_state needs the source ids (encoder-decoders)
    cfg: object  # its ModelConfig: the decoders read `cfg.context`, the most positions it takes

    def start_state(self, batch: int, max_len: int, src: torch.Tensor | None = None):
        """A fresh decoding state for `batch` rows of up to `max_len` tokens."""

    def step(self, tokens: torch.Tensor, state) -> tuple[torch.Tensor, object]:
        """Feed tokens (B, T) at state.pos -> (next-token logits (B, V), the advanced state)."""


# ------------------------------------------------------------------------ settings
SCALE_MIN, SCALE_MAX = 1e-4, 1e4  # the temperature's and the repetition penalty's range


def check_decoding(
    max_new_tokens: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition: float = 1.0,
    ngram: int = 0,
    beam_size: int | None = None,
    n_best: int | None = None,
    length_penalty: float = 1.0,
    name: Callable[[str], str] = str,
    seed: int | None = None,
) -> None:
    """Raise ValueError, naming the setting (`name(argument)`: the CLI passes its flag names), for
    any decoding setting out of its range:

        max_new_tokens >= 0        temperature 0 (greedy) or in [1e-4, 1e4]  top_k >= 0 or None (0: off)
        0 < top_p <= 1 or None     0 <= min_p <= 1 or None                 repetition in [1e-4, 1e4]
        ngram >= 0                 beam_size >= 1 or None                  1 <= n_best <= beam_size
        length_penalty finite      0 <= seed < 2**63 or None
    A temperature or penalty of 1e-40 divides the logits into infinities (NaN probabilities), so
    the ranges stop at 1e-4 (temperature 1e-4 is greedy to every digit that matters).
    """

    def bad(arg: str, value, want: str):
        raise ValueError(f"{name(arg)} must be {want}, got {value}")

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(max_new_tokens) or max_new_tokens < 0:
        bad("max_new_tokens", max_new_tokens, "an integer >= 0")
    if not (temperature == 0 or SCALE_MIN <= temperature <= SCALE_MAX):
        bad(
            "temperature",
            temperature,
            f"a finite number >= 0 (0 means greedy; else in [{SCALE_MIN:g}, {SCALE_MAX:g}])",
        )
    if top_k is not None and (not integer(top_k) or top_k < 0):
        bad("top_k", top_k, "an integer >= 1 (0 or none: no top-k filter)")
    if top_p is not None and not 0 < top_p <= 1:
        bad("top_p", top_p, "in (0, 1] (1: no nucleus filter)")
    if min_p is not None and not 0 <= min_p <= 1:
        bad("min_p", min_p, "in [0, 1] (0: no min-p filter)")
    if not (math.isfinite(repetition) and repetition > 0):
        bad(
            "repetition", repetition, "a finite number > 0 (1: no penalty; > 1 discourages repeats)"
        )
    if not SCALE_MIN <= repetition <= SCALE_MAX:
        bad("repetition", repetition, f"in [{SCALE_MIN:g}, {SCALE_MAX:g}] (1: no penalty)")
    if not integer(ngram) or ngram < 0:
        bad("ngram", ngram, "an integer >= 0 (0: off)")
    if beam_size is not None and (not integer(beam_size) or beam_size < 1):
        bad("beam_size", beam_size, "an integer >= 1 (1: no beam search)")
    if n_best is not None and not (integer(n_best) and 1 <= n_best <= (beam_size or 1)):
        bad("n_best", n_best, f"between 1 and the beam size ({beam_size or 1})")
    if not math.isfinite(length_penalty):
        bad("length_penalty", length_penalty, "a finite number")
    if seed is not None and (not integer(seed) or not 0 <= seed < 2**63):
        bad("seed", seed, "an integer in [0, 2**63)")


# ------------------------------------------------------------------------ logits processors
def filter_logits(
    logits: torch.Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Set to -inf every logit outside the top-k / nucleus (top-p) / min-p set. (B, V) -> (B, V).

    top-k: keep the k largest (ties with the k-th kept too).
    top-p: keep the smallest set of most likely tokens whose probability reaches p
           (Holtzman et al. 2019, https://arxiv.org/abs/1904.09751); the best token always stays.
    min-p: keep tokens with probability >= min_p * the best token's (https://arxiv.org/abs/2407.01082).
    """
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # ascending order: a token goes when the mass of it and everything less likely is <= 1 - p
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        mass_up_to = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        drop_sorted = mass_up_to <= 1 - top_p
        drop_sorted[..., -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    if min_p is not None and min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        floor = min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make every token already in `seen` (B, T) less likely, once per token (CTRL,
    https://arxiv.org/abs/1909.05858): a positive logit is divided by `penalty`, a negative one
    multiplied. penalty 1 changes nothing; above 1 penalises, below 1 rewards."""
    if penalty == 1.0:
        return logits
    old = torch.gather(logits, 1, seen)  # (B, T)
    new = torch.where(old < 0, old * penalty, old / penalty)
    return logits.scatter(1, seen, new)


def no_repeat_ngram(logits: torch.Tensor, seen: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid (-inf) every token that would complete an n-gram already present in `seen` (B, T)."""
    T = seen.shape[1]
    if n <= 0 or T < n:
        return logits
    suffix = seen[
        :, T - n + 1 :
    ]  # (B, n-1): the n-gram the next token would complete starts with this
    grams = seen.unfold(1, n, 1)  # (B, T-n+1, n): every n-gram so far
    hits = (grams[..., :-1] == suffix[:, None]).all(dim=-1)  # (B, T-n+1)
    V = logits.shape[-1]
    banned = torch.zeros(logits.shape[0], V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(
        1, torch.where(hits, grams[..., -1].clamp(max=V), V), True
    )  # misses go to column V
    return logits.masked_fill(banned[:, :V], float("-inf"))


def process(
    logits: torch.Tensor, seen: torch.Tensor, repetition: float = 1.0, ngram: int = 0
) -> torch.Tensor:
    """The processors that come before temperature and filtering, in Hugging Face's order."""
    if repetition != 1.0:
        logits = repetition_penalty(logits, seen, repetition)
    if ngram:
        logits = no_repeat_ngram(logits, seen, ngram)
    return logits


def choose(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of each row (B,): the arg-max when temperature <= 0, else a draw from the
    filtered, tempered distribution (`next_token_probs`). `Sampling.choose` as a function."""
    return Sampling(temperature, top_k, top_p, min_p).choose(logits, generator=generator)


def exponential_race(probs: torch.Tensor) -> torch.Tensor:
    """A sample from each row of probs (B, V): argmax of p / Exp(1) noise (the exponential-race
    form of multinomial sampling, from the global RNG; it compiles into a graph, unlike
    torch.multinomial)."""
    noise = torch.empty_like(probs).exponential_(1)
    return (probs / noise).argmax(dim=-1)


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from a step's logits, in Hugging Face `generate`'s order: the
    repetition processors (`repetition`, `ngram`; they need the tokens seen so far), then
    temperature (<= 0: the arg-max), top-k, top-p, min-p, and a draw. The one chooser: decode.py's
    decoders, fastdecode.py's compiled step and the training objectives' samplers all call it.
    Frozen, so a compiled step can take it as an argument (one graph per setting)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition: float = 1.0
    ngram: int = 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution a token is drawn from, (B, V) -> (B, V) (`next_token_probs`)."""
        return next_token_probs(logits, self.temperature, self.top_k, self.top_p, self.min_p)

    def choose(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        draw: Callable | None = None,
    ) -> torch.Tensor:
        """The next token of each row (B,) from logits (B, V). `seen` (B, T): the tokens so far,
        for the repetition processors (None: they are off). The draw is torch.multinomial from
        `generator` (None: the global RNG), or `draw(probs) -> (B,)` (`exponential_race` in a
        compiled graph)."""
        if seen is not None:
            logits = process(logits, seen, self.repetition, self.ngram)
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = self.probs(logits)
        if draw is not None:
            return draw(probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """The distribution `choose` draws from, (B, V) -> (B, V): softmax of the tempered logits after
    top-k / top-p / min-p, so filtered tokens get 0 and the rest are renormalised. At temperature
    <= 0 (greedy) all the mass is on the arg-max."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(filter_logits(logits / temperature, top_k, top_p, min_p), dim=-1)


# ------------------------------------------------------------------------ greedy and sampling
def eval_mode(model) -> None:
    """model.eval(), skipped when no module is training: eval() sets every module's flag (about
    0.5 ms for the 3+3 G2P model on CPU, a few percent of a word's decoding), the check reads them.
    A wrapper that is not an nn.Module (an objective's view of the model) is always told."""
    if not isinstance(model, torch.nn.Module) or any(m.training for m in model.modules()):
        model.eval()


def _context_of(model) -> int:
    return model.cfg.context


def _generator(device, seed: int | None) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    return gen


def stream(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
    *,
    src: torch.Tensor | None = None,
    repetition: float = 1.0,
    ngram: int = 0,
    pad_id: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) one step at a time, using the KV cache.

    A row that has produced `eos_id` yields `pad_id` (default `eos_id`) from then on; the stream
    ends when every row has. When the sequence reaches the model's context the window slides:
    the cache is refilled from the last half-context of tokens (positions restart at 0), unless
    the model's decoding state is constant in size (`constant_state()`: attention sinks,
    retention), which runs on for any length.
    The settings are checked when this is called (ValueError), before the first token.
    """
    check_decoding(max_new_tokens, temperature, top_k, top_p, min_p, repetition, ngram)
    return _stream(
        model,
        input_ids,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        min_p,
        seed,
        eos_id,
        src,
        repetition,
        ngram,
        pad_id,
    )


@torch.no_grad()
def _stream(
    model,
    input_ids,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    min_p,
    seed,
    eos_id,
    src,
    repetition,
    ngram,
    pad_id,
) -> Iterator[torch.Tensor]:
    eval_mode(model)
    gen = _generator(input_ids.device, seed)
    pad = eos_id if pad_id is None else pad_id
    context = _context_of(model)
    endless = getattr(model, "constant_state", lambda: False)()  # sinks / retention: never restart
    if endless:
        context = max(context, input_ids.shape[1])
    sampling = Sampling(temperature, top_k, top_p, min_p, repetition, ngram)
    seen = input_ids  # everything so far, for the repetition processors
    window = input_ids[:, -context:]
    state = model.start_state(window.shape[0], context, src=src)
    logits, state = model.step(window, state)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    # what each row yields once it has left the batch (its EOS came earlier): `pad`
    ended = None if pad is None else torch.full_like(done, pad, dtype=torch.long)
    live = None  # (B',) the rows still decoding, once ended ones have left the batch
    for _ in range(max_new_tokens):
        nxt = sampling.choose(logits.float(), seen, gen)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            done = done | (nxt == eos_id)
        yield nxt if live is None else ended.index_copy(0, live, nxt)
        finished = 0 if eos_id is None else int(done.sum())  # one host sync a step
        if finished == done.numel():
            return
        seen = torch.cat([seen, nxt[:, None]], dim=1)
        window = torch.cat([window, nxt[:, None]], dim=1)
        if sampling.temperature <= 0 and _many_ended(finished, done.numel()):
            keep = (~done).nonzero()[:, 0]  # arg-max rows are independent: the rest go on alike
            live = keep if live is None else live[keep]
            state.reorder(keep)
            seen, window, done, nxt = seen[keep], window[keep], done[keep], nxt[keep]
            src = None if src is None else src[keep]
        if state.pos + 1 > context and not endless:  # slide the window
            window = window[:, -(context // 2) :]
            state = model.start_state(window.shape[0], context, src=src)
            logits, state = model.step(window, state)
        else:
            logits, state = model.step(nxt[:, None], state)


def _many_ended(finished: int, rows: int, share: float = 0.25) -> bool:
    """A quarter of the rows or more have ended: greedy decoding goes on without them."""
    return finished > 0 and finished >= share * rows


def sample(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
    src: torch.Tensor | None = None,
    *,
    repetition: float = 1.0,
    ngram: int = 0,
    pad_id: int | None = None,
) -> torch.Tensor:
    """Prompt + sampled continuation, (B, T + new). temperature 0 means greedy."""
    new = list(
        stream(
            model,
            input_ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            seed,
            eos_id,
            src=src,
            repetition=repetition,
            ngram=ngram,
            pad_id=pad_id,
        )
    )
    return torch.cat([input_ids] + [t[:, None] for t in new], dim=1) if new else input_ids


def greedy(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    eos_id: int | None = None,
    src: torch.Tensor | None = None,
    *,
    repetition: float = 1.0,
    ngram: int = 0,
    pad_id: int | None = None,
) -> torch.Tensor:
    """Prompt + arg-max continuation, (B, T + new)."""
    return sample(
        model,
        input_ids,
        max_new_tokens,
        temperature=0.0,
        eos_id=eos_id,
        src=src,
        repetition=repetition,
        ngram=ngram,
        pad_id=pad_id,
    )


# ------------------------------------------------------------------------ beam search
@dataclass
class NBest:
    """The n best finished hypotheses of each input, best first."""

    ids: torch.Tensor  # (B, n, T): prompt + continuation, `pad_id` after a hypothesis ends
    scores: torch.Tensor  # (B, n): sum of log-probs / (generated tokens) ** length_penalty
    lengths: torch.Tensor  # (B, n): generated tokens of each hypothesis, EOS included


@dataclass
class BeamStep:
    """What one step of beam search looked at, for drawing its tree (`beam_search(on_step=...)`).
    Step t adds token t + 1 of the continuation; candidate c extends running beam `parents[b, c]`
    (the beam slot of the previous step; at t = 0 every beam is the prompt)."""

    t: int
    parents: torch.Tensor  # (B, 2K) the running beam slot each candidate extends
    tokens: torch.Tensor  # (B, 2K) the token it adds
    scores: torch.Tensor  # (B, 2K) sum of log-probs of the whole continuation, best first
    ended: torch.Tensor  # (B, 2K) bool: ends here (EOS or the length limit)
    kept: (
        torch.Tensor
    )  # (B, K) which candidate now runs in beam slot 0..K-1 (an ended one never runs on:
    #                     a slot whose `scores` entry is NEG holds no live beam)
    pooled: torch.Tensor  # (B, 2K) bool: entered the pool of finished hypotheses this step


class Beams:
    """The bookkeeping of beam search for B inputs x K beams, all in tensors (no per-beam Python).

    Each step: add the K beams' log-probs to their running scores, keep the 2K best continuations
    over all K x V, move those that end (EOS or the length limit) into a pool of K finished
    hypotheses when they rank among the first K and score well enough, and carry the best K
    unfinished ones on. `advance` returns the cache rows the survivors come from and their new
    tokens; `finished()` says whether any running beam could still improve the pool.

        running:  seqs (B, K, L)      scores (B, K)        sum of log-probs so far
        pool:     fin_seqs (B, K, L)  fin_scores (B, K)    normalised by length ** length_penalty
    """

    def __init__(
        self,
        prompts: torch.Tensor,
        beam_size: int,
        max_new_tokens: int,
        eos_id: int | None,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        fill: int = 0,
    ):
        if early_stopping not in (True, False, "never"):
            raise ValueError(
                f"early_stopping must be True, False or 'never', got {early_stopping!r}"
            )
        B, P = prompts.shape
        K, L, dev = beam_size, P + max_new_tokens, prompts.device
        self.B, self.K, self.P, self.L = B, K, P, L
        self.eos_id, self.lp, self.es = eos_id, length_penalty, early_stopping
        self.seqs = torch.full((B, K, L), fill, dtype=torch.long, device=dev)
        self.seqs[:, :, :P] = prompts[:, None]
        self.scores = torch.zeros(B, K, device=dev)
        self.scores[:, 1:] = NEG  # at first every beam is the same prompt: expand only the first
        self.fin_seqs = self.seqs.clone()
        self.fin_scores = torch.full((B, K), NEG, device=dev)
        self.fin_done = torch.zeros(B, K, dtype=torch.bool, device=dev)
        self.fin_len = torch.zeros(B, K, dtype=torch.long, device=dev)
        self.improvable = torch.ones(
            B, 1, dtype=torch.bool, device=dev
        )  # False for good once decoding stops
        self.first_k = torch.arange(2 * K, device=dev) < K  # (2K,)
        self.row_base = torch.arange(B, device=dev)[:, None] * K  # (B, 1)
        self.origin = torch.arange(B, device=dev)  # (B,) each row's input, as `drop_finished` keeps
        self.final = None  # the pools of every input, (fin_seqs, fin_scores, fin_len), once dropped
        self.t = 0
        self.last: BeamStep | None = None  # the step just taken, kept when `record` is True
        self.record = False

    def history(self) -> torch.Tensor:
        """Every running beam's tokens so far, (B*K, P + t): what the processors look at."""
        return self.seqs[:, :, : self.P + self.t].reshape(self.B * self.K, -1)

    def advance(self, logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from log-probs (B*K, V); returns (cache rows (B*K,), next tokens (B*K,))."""
        B, K, t = self.B, self.K, self.t
        V = logprobs.shape[-1]
        total = (logprobs.view(B, K, V) + self.scores[:, :, None]).view(B, K * V)
        cand_scores, flat = torch.topk(total, 2 * K)  # (B, 2K) each, best first
        beam, tok = flat // V, flat % V
        cand = torch.take_along_dim(self.seqs, beam[..., None], dim=1)  # (B, 2K, L)
        cand[:, :, self.P + t] = tok
        ends = torch.full_like(tok, self.P + t + 1 >= self.L, dtype=torch.bool)
        if self.eos_id is not None:
            ends = ends | (tok == self.eos_id)
        kept = self._keep_running(cand, cand_scores, beam, ends)
        pooled = self._update_pool(cand, cand_scores, ends)
        if self.record:
            self.last = BeamStep(t, beam, tok, cand_scores, ends, kept, pooled)
        self.t = t + 1
        self._update_improvable(ends)
        rows = (self.src_beam + self.row_base).view(-1)
        return rows, self.seqs[:, :, self.P + t].reshape(-1)

    def _keep_running(self, cand, cand_scores, beam, ends):
        alive = cand_scores + ends.to(torch.float32) * NEG  # an ended continuation cannot run on
        best = torch.topk(alive, self.K).indices  # (B, K)
        self.seqs = torch.take_along_dim(cand, best[..., None], dim=1)
        self.scores = torch.take_along_dim(alive, best, dim=1)
        self.src_beam = torch.take_along_dim(beam, best, dim=1)
        return best

    def _update_pool(self, cand, cand_scores, ends):
        new = ends & self.first_k[None, :]  # only the first K continuations may finish
        normed = cand_scores / ((self.t + 1) ** self.lp)
        full = self.fin_done.all(dim=-1, keepdim=True) & (self.es is True)
        normed = normed + full.to(torch.float32) * NEG
        normed = normed + (~self.improvable).to(torch.float32) * NEG
        normed = normed + (~new) * NEG
        scores = torch.cat([self.fin_scores, normed], dim=1)  # (B, 3K)
        top = torch.topk(scores, self.K).indices  # (B, K)
        self.fin_scores = torch.take_along_dim(scores, top, dim=1)
        self.fin_seqs = torch.take_along_dim(
            torch.cat([self.fin_seqs, cand], dim=1), top[..., None], dim=1
        )
        self.fin_done = torch.take_along_dim(torch.cat([self.fin_done, new], dim=1), top, dim=1)
        lengths = torch.cat(
            [self.fin_len, torch.full_like(new, self.t + 1, dtype=torch.long)], dim=1
        )
        self.fin_len = torch.take_along_dim(lengths, top, dim=1)
        K = (
            self.K
        )  # which of the 2K candidates made it into the pool (pool rows K.. are candidates)
        pooled = torch.zeros(self.B, 3 * K, dtype=torch.bool, device=top.device).scatter(
            1, top, True
        )[:, K:]
        return pooled & new

    def _update_improvable(self, ends):
        """Can the best running beam still beat the worst finished one? With early_stopping=False
        its best possible score is taken at the current length, with "never" (and a positive
        length penalty) at the longest allowed length. Decoding stops for the whole batch when no
        input can improve, when every pool is full under early_stopping=True, or when every
        continuation ended; then `improvable` turns False everywhere, which freezes the pools
        (so a caller that checks `finished()` only now and then gets the same result)."""
        best_len = (self.L - self.P) if (self.es == "never" and self.lp > 0.0) else self.t
        best = self.scores[:, :1] / (best_len**self.lp)  # (B, 1)
        worst = torch.where(
            self.fin_done, self.fin_scores.min(dim=1, keepdim=True).values, NEG
        )  # (B, K)
        improvable = self.improvable & (best > worst).any(dim=-1, keepdim=True)
        stop = ~improvable.any() | (self.fin_done.all() & (self.es is True)) | ends.all()
        self.improvable = improvable & ~stop

    def finished(self) -> bool:
        """True when decoding can stop for every input (one host sync)."""
        return not bool(self.improvable.any())

    def drop_finished(self, share: float = 0.25) -> torch.Tensor | None:
        """Stop carrying the inputs none of whose beams can improve its pool any more, once they
        are at least `share` of the rows: their pools are final (kept aside for `result`), so the
        search goes on the same for the others. Returns the inputs kept (B',), as rows of the batch
        before, or None when nothing is dropped. The stopping rules still hold for the kept rows:
        a dropped input is not improvable (or, with early_stopping=True, its pool is full, which
        freezes it), and an input whose continuations all end does so only at the length limit,
        which every input reaches at the same step."""
        running = self.improvable[:, 0]
        if self.es is True:  # a full pool is final under early stopping
            running = running & ~self.fin_done.all(dim=-1)
        keep = running.nonzero()[:, 0]
        if self.B - keep.numel() < share * self.B or keep.numel() == 0:
            return None
        self._save_pools()
        for name in ("seqs", "scores", "fin_seqs", "fin_scores", "fin_done", "fin_len"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
        self.improvable = self.improvable.index_select(0, keep)
        self.src_beam, self.origin = self.src_beam.index_select(0, keep), self.origin[keep]
        self.B = keep.numel()
        self.row_base = torch.arange(self.B, device=keep.device)[:, None] * self.K
        return keep

    def _save_pools(self) -> None:
        if self.final is None:
            self.final = (self.fin_seqs.clone(), self.fin_scores.clone(), self.fin_len.clone())
            return
        for whole, part in zip(self.final, (self.fin_seqs, self.fin_scores, self.fin_len)):
            whole.index_copy_(0, self.origin, part)

    def result(self, n: int) -> NBest:
        """The n best finished hypotheses, cropped to the longest one returned."""
        fin_seqs, fin_scores, fin_len = self.fin_seqs, self.fin_scores, self.fin_len
        if self.final is not None:  # inputs were dropped on the way: every pool, in input order
            self._save_pools()
            fin_seqs, fin_scores, fin_len = self.final
        lengths = fin_len[:, :n]
        end = self.P + int(lengths.max())
        return NBest(fin_seqs[:, :n, :end], fin_scores[:, :n], lengths)


def _expand(state, rows: int, beam_size: int, device):
    return state.reorder(torch.arange(rows, device=device).repeat_interleave(beam_size))


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int | None = None,
    length_penalty: float = 1.0,
    src: torch.Tensor | None = None,
    *,
    early_stopping: bool | str = False,
    n_best: int | None = None,
    pad_id: int | None = None,
    repetition: float = 1.0,
    ngram: int = 0,
    on_step: Callable[[BeamStep], None] | None = None,
) -> torch.Tensor | NBest:
    """Beam search (https://arxiv.org/abs/1409.3215 section 3.2; scoring and stopping as in
    Hugging Face `generate`). Returns the best hypothesis per input, (B, T + new), or with
    `n_best=n` an `NBest` with the n best of each (n <= beam_size), their scores and lengths.

    length_penalty > 0 favours longer hypotheses, < 0 shorter ones. Finished hypotheses shorter
    than the longest returned are filled with `pad_id` (default `eos_id`). `on_step`, when given,
    is called with a `BeamStep` after every step: the candidates, their scores and their fate (the
    tree `tfmr explore` draws); it changes nothing in the search.
    """
    eval_mode(model)
    B, P = input_ids.shape
    K = beam_size
    n = 1 if n_best is None else n_best
    check_decoding(
        max_new_tokens,
        repetition=repetition,
        ngram=ngram,
        beam_size=K,
        length_penalty=length_penalty,
    )
    if not 1 <= n <= K:
        raise ValueError(f"n_best must be between 1 and beam_size ({K}), got {n}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if P + max_new_tokens > _context_of(model):
        raise ValueError(
            f"beam search keeps the whole sequence in the cache: prompt ({P}) + max_new_tokens "
            f"({max_new_tokens}) exceeds the model's context ({_context_of(model)})"
        )
    fill = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    state = _expand(model.start_state(B, P + max_new_tokens, src=src), B, K, input_ids.device)
    logits, state = model.step(input_ids.repeat_interleave(K, dim=0), state)  # (B*K, V)
    beams = Beams(input_ids, K, max_new_tokens, eos_id, length_penalty, early_stopping, fill)
    beams.record = on_step is not None
    while True:
        logprobs = process(
            torch.log_softmax(logits.float(), dim=-1), beams.history(), repetition, ngram
        )
        rows, tokens = beams.advance(logprobs)
        if on_step is not None:
            on_step(beams.last)
        if beams.finished():
            break
        kept = None if on_step is not None else beams.drop_finished()  # a drawn tree keeps all
        if kept is not None:  # the finished inputs' rows leave the batch, source side and all
            rows = rows.view(-1, K)[kept].view(-1)
            tokens = tokens.view(-1, K)[kept].view(-1)
            state.reorder(rows)
        elif K > 1:  # one beam a source (greedy with scores) always continues its own row
            state.reorder(rows, same_sources=True)  # rows stay among their source's beams
        logits, state = model.step(tokens[:, None], state)
    best = beams.result(n)
    return best if n_best is not None else best.ids[:, 0]
