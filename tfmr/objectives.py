"""Training objectives of an encoder-decoder: what one micro-batch's loss is.

    teacher-forcing   cross entropy of the gold next token, the gold prefix fed in (the default)
    scheduled         scheduled sampling (Bengio et al. 2015): each input position gets the model's
                      own previous prediction with probability 1 - eps_i; mode=parallel (one
                      teacher-forced pass predicts, the default) or sequential (the exact loop
                      over positions, one pass each)
    two-pass          two-pass scheduled sampling (Mihaylova & Martins 2019): a teacher-forced
                      first pass, then per position the gold embedding or a predicted one
                      (arg-max, top-k weighted, softmax weighted)
    parallel          parallel scheduled sampling (Duckworth et al. 2019, as tensor2tensor): K
                      passes, each mixing samples of the previous pass with gold at the positions
                      the earlier passes left open; the loss on the last
    reinforce         REINFORCE on a metric with a moving-average reward baseline
    self-critical     SCST (Rennie et al. 2017): the greedy decode's reward is the baseline
    mrt               minimum risk training (Shen et al. 2016) over a sampled or beam n-best set
    GuidedAttention   the guided attention loss (Tachibana et al. 2017), an extra term that
                      composes with the first four (not with the RL objectives)

    schedules  eps_i, the probability of the gold token at step i (SCHEDULES):
               constant k | linear max(eps_min, k - c i) | exponential k^i |
               inverse-sigmoid k / (k + exp(i / k))
    REWARDS    (hyp symbols, reference symbol lists) -> float: bleu (sacrebleu sentence BLEU / 100,
               tokenize="none" on the space-joined symbols), per (1 - PER), exact (exact match)

Every objective is a class with `loss(forward, model, batch, step) -> Output` (the Output whose
`.loss` is minimised); `forward` is the loop's (possibly compiled) model, `model` the module
itself for methods (`encode`, `decode_embedded`), `batch` the collated dict (src_ids, tgt_ids =
<s> y, targets = y </s>), `step` the loop's step counter. `setup(model, task)` checks the model
and takes the task's token ids. Randomness comes only from the global torch RNG, which the loop
saves, so resumed runs stay bit-identical; a running baseline is saved through `state()`.

Design choices:
- A Transformer decoder is parallel over positions, so "the model's own previous prediction"
  (scheduled, parallel) comes from a teacher-forced pass without gradient, as in Duckworth et al.
  and Mihaylova & Martins; training stays one parallel pass per round. The token-by-token loop of
  the paper is there too (`scheduled` with mode=sequential), for checking and small models.
- Two-pass mixes *embeddings*. The seam is `EncoderDecoder.decode_embedded(tok_x, memory, ...)`:
  `decode(ids)` is `decode_embedded(tok_emb(ids))`, so the spine gains no flag; the objective
  encodes once and runs the decoder twice from embeddings it computes (it calls the model's
  methods, so `train.compile` does not reach it). Models without `decode_embedded` (the
  pointer-generator wrapper) are refused at start.
- RL objectives sample with the decoding protocol (`start_state` / `step`, batched, in eval mode,
  no gradient), then get log p(y|x) with gradient by one teacher-forced forward on the samples.
  The sampler is here, not `tfmr.decode.sample`, because that one draws from its own generator
  (seeded from the OS when no seed is given) and a training objective must use the saved RNG.
  It never draws the task's specials (`Task.specials`: <pad>, <s>; `WithoutSpecials`), which the
  rewards would drop while log p counted them; nor does MRT's beam.

The registry `OBJECTIVES` at the bottom is read by `build_objective`, the one wiring of
`train.objective` into a trainer (the training loop's `setup_objective`, which `Seq2SeqTrainer`
and the language-model `Trainer` call); the guided attention term is `train.guided_attention`
(its weight; 0 = off) with `guided_sigma`, `guided_layers`, `guided_heads`.

Decoder-only language models take the objectives that declare `for_language_models`:
teacher-forcing and the three RL ones. Each training window is split (`lm_batch`): the first
`prompt` share (default half) is the prompt, the rest the reference continuation; the model
continues the prompt for as many tokens, and the reward compares the token ids (bleu on the ids
as words, exact, per = 1 - token error rate). The scheduled-sampling kinds are for
encoder-decoders only.

`diagonal_share` measures how diagonal a cross-attention is (the `g2p-guided` experiment).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Choice, ConfigError, check_options
from .decode import Sampling, beam_search
from .kernels import KERNELS, weight_giving
from .metrics import edit_distance
from .model import Block, Output


# ----------------------------------------------------------------------------- schedules
def _constant(i: int, k: float, c: float) -> float:
    return k


def _linear(i: int, k: float, c: float) -> float:
    return k - c * i


def _exponential(i: int, k: float, c: float) -> float:
    return k**i


def _inverse_sigmoid(i: int, k: float, c: float) -> float:
    return 0.0 if i / k > 700 else k / (k + math.exp(i / k))


SCHEDULES = {
    "constant": _constant,
    "linear": _linear,
    "exponential": _exponential,
    "inverse-sigmoid": _inverse_sigmoid,
}
DEFAULT_K = {"constant": 1.0, "linear": 1.0, "exponential": 0.9999, "inverse-sigmoid": 1000.0}


class Schedule:
    """eps_i, the probability of feeding the gold token at training step i (Bengio et al. 2015,
    section 2.4), never below eps_min: linear max(eps_min, k - c i), exponential k^i,
    inverse-sigmoid k / (k + exp(i / k)), constant k. `k=None` takes the kind's usual value."""

    def __init__(
        self,
        kind: str = "inverse-sigmoid",
        k: float | None = None,
        c: float = 1e-4,
        eps_min: float = 0.0,
    ):
        if kind not in SCHEDULES:
            raise ConfigError(f"unknown schedule {kind!r}; valid schedules: {', '.join(SCHEDULES)}")
        self.kind, self.k, self.c, self.eps_min = (
            kind,
            float(DEFAULT_K[kind] if k is None else k),
            float(c),
            float(eps_min),
        )
        if kind == "inverse-sigmoid" and self.k < 1:
            raise ConfigError(f"the inverse-sigmoid schedule needs k >= 1, got {self.k}")

    def __call__(self, step: int) -> float:
        return min(1.0, max(self.eps_min, SCHEDULES[self.kind](step, self.k, self.c)))

    def __repr__(self) -> str:
        return f"Schedule({self.kind!r}, k={self.k}, c={self.c}, eps_min={self.eps_min})"


# ----------------------------------------------------------------------------- rewards
def bleu_reward(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """sacrebleu's sentence BLEU of the space-joined symbols (tokenize="none"), in [0, 1]."""
    from .metrics import sentence_bleu

    return sentence_bleu(" ".join(hyp), [" ".join(r) for r in refs], tokenize="none") / 100.0


def per_reward(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """1 - PER against the closest reference: 1 - edit distance / reference length (may go below 0)."""
    return max(1.0 - edit_distance(hyp, r) / max(len(r), 1) for r in refs)


def exact_reward(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """1 when the hypothesis equals one of the references, else 0."""
    return float(any(list(hyp) == list(r) for r in refs))


REWARDS = {"bleu": bleu_reward, "per": per_reward, "exact": exact_reward}


# ----------------------------------------------------------------------------- the task's ids
@dataclass
class Task:
    """What objectives need from the task: special ids and how ids become symbols."""

    bos: int
    eos: int
    pad: int
    symbols: Callable[[Sequence[int]], list]  # target ids -> symbols, up to the first </s>
    context: int  # longest target the model's positions take
    # ids the RL sampler never draws; None: <pad> and <s>, which no output may be (the symbols
    # drop them, so a reward would not see what log p counts)
    specials: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.specials is None:
            self.specials = tuple(i for i in (self.pad, self.bos) if i >= 0)


def lm_task(context: int) -> Task:
    """A decoder-only LM's Task: no <s> or </s> (continuations run to the reference's length),
    token ids as the reward's symbols, every id a text token (none held back from the sampler)."""
    return Task(
        bos=-1,
        eos=-1,
        pad=0,
        symbols=lambda ids: [str(i) for i in ids],
        context=context,
        specials=(),
    )


def lm_batch(objective, x: torch.Tensor, y: torch.Tensor) -> dict:
    """A language model's window (B, T) as the batch an objective reads: teacher forcing gets
    {input_ids, targets}; an RL objective {src_ids: the first `objective.prompt` share of the window
    (B, P), targets: the rest (B, T - P), the reference continuation}."""
    if not isinstance(objective, _RL):
        return {"input_ids": x, "targets": y}
    P = min(max(1, round(objective.prompt * x.shape[1])), x.shape[1] - 1)
    return {"src_ids": x[:, :P], "targets": x[:, P:]}


def _without_targets(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "targets"}


def mix_tokens(gold: torch.Tensor, pred_out: torch.Tensor, eps: float, pad: int) -> torch.Tensor:
    """Decoder inputs (B, T): gold with probability eps per position, else the prediction made at
    the previous position (`pred_out[:, t - 1]`). Position 0 (<s>) and padding stay gold."""
    pred_in = torch.cat(
        [gold[:, :1], pred_out[:, :-1]], dim=1
    )  # (B, T): what the model said before t
    keep = (torch.rand(gold.shape, device=gold.device) < eps) | (gold == pad)
    keep[:, 0] = True
    return torch.where(keep, gold, pred_in)


def predict_tokens(logits: torch.Tensor, how: str, temperature: float = 1.0) -> torch.Tensor:
    """(B, T, V) -> (B, T): the arg-max, or a draw from softmax(logits / temperature), from the
    global RNG (`decode.Sampling`, the one next-token chooser)."""
    sampling = Sampling(0.0 if how == "argmax" else temperature)
    return sampling.choose(logits.float().flatten(0, 1)).view(
        logits.shape[:2]
    )  # (B T, V) -> (B, T)


PREDICT = ("argmax", "sample")


# ----------------------------------------------------------------------------- objectives
class Objective:
    """One micro-batch's loss. `over_gold_target`: whether the Output this objective returns is
    over the gold target's positions (its logits and cross-attention), so that terms read there
    can be added to it: guided attention, word-level distillation's soft targets."""

    over_gold_target = True
    for_language_models = False  # whether a decoder-only LM's batch (`lm_batch`) is read

    def setup(self, model: torch.nn.Module, task: Task) -> None:
        self.task = task

    def loss(self, forward, model, batch: dict, step: int) -> Output:
        raise NotImplementedError

    def state(self) -> dict:
        """Tensors a resumed run needs (a running baseline); keys start with 'objective.'."""
        return {}

    def load_state(self, tensors: dict) -> None:
        pass


class TeacherForcing(Objective):
    """Cross entropy of y_t given the gold prefix <s> y_<t (label smoothing is the model's)."""

    for_language_models = True

    def loss(self, forward, model, batch, step):
        return forward(**batch)


def keep_earlier(previous: torch.Tensor, mixed: torch.Tensor, index: int) -> torch.Tensor:
    """Decoder inputs (B, T): `previous` at positions t <= index, `mixed` after. Parallel pass
    `index` (0-based) leaves what earlier passes decided at those positions (tensor2tensor's
    `is_later_timestep`: its target position t - 1 < index is our input position t <= index)."""
    later = torch.arange(mixed.shape[1], device=mixed.device)[None, :] > index  # (1, T)
    return torch.where(later, mixed, previous)


def one_pass_inputs(forward, batch: dict, eps: float, how: str, temperature: float, pad: int):
    """Scheduled sampling's mixed decoder inputs (B, T), the one-pass parallel approximation: the
    predictions come from one teacher-forced pass, so the one at t - 1 saw the gold prefix."""
    with torch.no_grad():
        first = forward(**_without_targets(batch)).logits  # (B, T, V)
    return mix_tokens(batch["tgt_ids"], predict_tokens(first, how, temperature), eps, pad)


def sequential_inputs(forward, batch: dict, eps: float, how: str, temperature: float, pad: int):
    """Scheduled sampling's mixed decoder inputs (B, T), exactly as Bengio et al. 2015: position by
    position, input t + 1 is gold with probability eps, else the prediction made at t from the
    inputs already mixed (not the gold prefix). One full decoder pass without gradient per
    position (T - 1 of them): slow, for checking and small models. Per position the draws are the
    prediction (B,), then the coins (B,), from the global RNG (tensor2tensor's order)."""
    gold = batch["tgt_ids"]
    inputs, rest = gold.clone(), _without_targets(batch)
    with torch.no_grad():
        for t in range(gold.shape[1] - 1):
            logits = forward(**{**rest, "tgt_ids": inputs}).logits[:, t : t + 1]  # (B, 1, V)
            pred = predict_tokens(logits, how, temperature)[:, 0]  # (B,)
            keep = (torch.rand(gold.shape[0], device=gold.device) < eps) | (gold[:, t + 1] == pad)
            inputs[:, t + 1] = torch.where(keep, gold[:, t + 1], pred)
    return inputs


SS_MODES = {"parallel": one_pass_inputs, "sequential": sequential_inputs}


class ScheduledSampling(Objective):
    """Scheduled sampling (Bengio et al. 2015, https://arxiv.org/abs/1506.03099).

    Each decoder input position t >= 1 is the gold y_{t-1} with probability eps_i (the schedule at
    training step i), else the model's own prediction for that position; the loss is the cross
    entropy of a pass on the mixed inputs. `mode` (SS_MODES): parallel (default), the one-pass
    approximation: a Transformer predicts all positions at once, so the predictions come from a
    teacher-forced pass without gradient; sequential, the paper's algorithm: the prediction at t
    conditions on the inputs mixed before it, one pass per position (tensor2tensor's
    `sequential_scheduled_sampling`). `predict`: argmax, or sample (from softmax(logits /
    temperature)). eps = 1 is teacher forcing."""

    def __init__(
        self,
        schedule: str = "inverse-sigmoid",
        k: float | None = None,
        c: float = 1e-4,
        eps_min: float = 0.0,
        predict: str = "argmax",
        temperature: float = 1.0,
        mode: str = "parallel",
    ):
        self.schedule = Schedule(schedule, k, c, eps_min)
        if predict not in PREDICT:
            raise ConfigError(f"unknown predict {predict!r}; valid: {', '.join(PREDICT)}")
        if mode not in SS_MODES:
            raise ConfigError(
                f"unknown scheduled sampling mode {mode!r}; valid: {', '.join(SS_MODES)}"
            )
        self.predict, self.temperature, self.mode = predict, float(temperature), mode

    def loss(self, forward, model, batch, step):
        mixed = SS_MODES[self.mode](
            forward, batch, self.schedule(step), self.predict, self.temperature, self.task.pad
        )
        return forward(**{**batch, "tgt_ids": mixed})


class ParallelScheduledSampling(ScheduledSampling):
    """Parallel scheduled sampling (Duckworth et al. 2019, https://arxiv.org/abs/1906.04331), as
    tensor2tensor's `scheduled_sampling_method=parallel`.

    K passes: the first teacher-forced; pass k feeds gold with probability eps_i per position, else
    a token sampled from pass k - 1, except that the positions the earlier passes settled (input
    t <= k - 2, `keep_earlier`) keep their tokens; the loss is the cross entropy of pass K. So
    pass k fixes one more position for good, and K = T passes equal sequential scheduled sampling.
    No gradient flows through the samples or the first K - 1 passes. passes = 2 is scheduled
    sampling with sampled predictions, and tensor2tensor's `scheduled_sampling_num_passes=1`
    (its count leaves out the teacher-forced pass): `passes` = num_passes + 1."""

    def __init__(
        self,
        passes: int = 2,
        schedule: str = "inverse-sigmoid",
        k: float | None = None,
        c: float = 1e-4,
        eps_min: float = 0.0,
        predict: str = "sample",
        temperature: float = 1.0,
    ):
        super().__init__(schedule, k, c, eps_min, predict, temperature)
        if int(passes) < 1:
            raise ConfigError(f"parallel scheduled sampling needs passes >= 1, got {passes}")
        self.passes = int(passes)

    def loss(self, forward, model, batch, step):
        eps, gold = self.schedule(step), batch["tgt_ids"]
        inputs = gold
        with torch.no_grad():
            for index in range(self.passes - 1):
                logits = forward(
                    **{**_without_targets(batch), "tgt_ids": inputs}
                ).logits  # (B, T, V)
                pred = predict_tokens(logits, self.predict, self.temperature)  # (B, T)
                inputs = keep_earlier(inputs, mix_tokens(gold, pred, eps, self.task.pad), index)
        return forward(**{**batch, "tgt_ids": inputs})


MIXES = ("argmax", "top-k", "softmax")


def predicted_embeddings(
    logits: torch.Tensor, weight: torch.Tensor, how: str, top_k: int = 5, temperature: float = 1.0
) -> torch.Tensor:
    """(B, T, V) logits, (V, dim) embedding table -> (B, T, dim): the arg-max token's embedding,
    the top-k tokens' embeddings weighted by their renormalised softmax, or all embeddings weighted
    by softmax(logits / temperature) (Mihaylova & Martins 2019, section 3)."""
    if how == "argmax":
        return F.embedding(logits.argmax(-1), weight)
    scores = logits.float() / temperature
    if how == "top-k":
        kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]  # (B, T, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return torch.softmax(scores, dim=-1).to(weight.dtype) @ weight  # (B, T, dim)


class TwoPassScheduledSampling(Objective):
    """Scheduled sampling for Transformers (Mihaylova & Martins 2019, https://arxiv.org/abs/1906.07651).

        src -> encode -> memory
        pass 1: decode_embedded(E[gold])             (no gradient unless first_grad)
        pass 2: decode_embedded(mix), per position t: E[y_{t-1}] with probability eps_i, else the
                predicted embedding from pass 1's output at t - 1 (mix: argmax | top-k | softmax)
        loss: cross entropy of pass 2

    The encoder runs once. The model must have `decode_embedded` and `tok_emb` (EncoderDecoder).
    With eps = 1 it is teacher forcing (same loss, same gradients)."""

    def __init__(
        self,
        schedule: str = "inverse-sigmoid",
        k: float | None = None,
        c: float = 1e-4,
        eps_min: float = 0.0,
        mix: str = "softmax",
        top_k: int = 5,
        temperature: float = 1.0,
        first_grad: bool = False,
    ):
        self.schedule = Schedule(schedule, k, c, eps_min)
        if mix not in MIXES:
            raise ConfigError(f"unknown two-pass mix {mix!r}; valid: {', '.join(MIXES)}")
        self.mix, self.top_k, self.temperature, self.first_grad = (
            mix,
            int(top_k),
            float(temperature),
            bool(first_grad),
        )

    def setup(self, model, task):
        super().setup(model, task)
        if not (hasattr(model, "decode_embedded") and hasattr(model, "tok_emb")):
            raise ConfigError(
                f"train.objective=two-pass feeds embeddings through decode_embedded, which "
                f"{type(model).__name__} does not have; use scheduled or parallel"
            )

    def loss(self, forward, model, batch, step):
        eps, gold, targets = self.schedule(step), batch["tgt_ids"], batch["targets"]
        weight = model.tok_emb.weight  # (V, dim)
        memory, src_mask = model.encode(batch["src_ids"])
        gold_emb = model.tok_emb(gold)  # (B, T, dim)
        with torch.set_grad_enabled(self.first_grad and torch.is_grad_enabled()):
            first = model.decode_embedded(gold_emb, memory, src_mask).logits  # (B, T, V)
            pred = predicted_embeddings(
                first, weight, self.mix, self.top_k, self.temperature
            )  # (B, T, dim)
        pred_in = torch.cat([gold_emb[:, :1], pred[:, :-1]], dim=1)  # (B, T, dim): said before t
        keep = (torch.rand(gold.shape, device=gold.device) < eps) | (gold == self.task.pad)
        keep[:, 0] = True
        mixed = torch.where(keep[..., None], gold_emb, pred_in.to(gold_emb.dtype))
        return model.decode_embedded(mixed, memory, src_mask, targets)


# ----------------------------------------------------------------------------- RL on a metric
def _start(model, src: torch.Tensor, max_len: int, bos: int):
    """The decoding state and the first tokens fed: an encoder-decoder reads the source and starts
    from <s>; a decoder-only LM (`needs_source` False) is fed `src` itself, the prompt."""
    if model.needs_source:
        start = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
        return model.start_state(src.shape[0], max_len, src=src), start
    return model.start_state(src.shape[0], src.shape[1] + max_len), src


class WithoutSpecials:
    """A model's decoding protocol (decode.Decodable: `needs_source`, `cfg`, `start_state`, `step`,
    train / eval) in which the ids `never` get no probability: their logits are -inf at every
    step, so a draw is from the model's distribution over the other ids renormalised, and an
    arg-max or a beam is over those. The RL objectives decode their candidates (samples, the
    greedy baseline, a beam's n-best) through it with the task's specials (<pad>, <s>): no
    candidate holds a token that log p would count and the reward drop. The logits of log p
    itself stay the model's."""

    def __init__(self, model, never: Sequence[int]):
        self.model, self.never = model, torch.tensor(list(never), dtype=torch.long)

    @property
    def needs_source(self) -> bool:
        return self.model.needs_source

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def start_state(self, *args, **kwargs):
        return self.model.start_state(*args, **kwargs)

    def step(self, tokens: torch.Tensor, state):
        logits, state = self.model.step(tokens, state)  # (B, V)
        return logits.index_fill(-1, self.never.to(logits.device), float("-inf")), state


@torch.no_grad()
def sample_ids(
    model,
    src: torch.Tensor,
    max_len: int,
    bos: int,
    eos: int,
    pad: int,
    greedy: bool = False,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Batched decoding through the model's protocol, in eval mode, from the global torch RNG:
    (B, L) ids, </s> included, `pad` after it (L <= max_len). For a decoder-only LM `src` is the
    prompt (B, P) and the ids are its continuation; eos < 0: no end token, L = max_len."""
    was_training = model.training
    model.eval()
    sampling = Sampling(0.0 if greedy else temperature)  # the one next-token chooser (decode.py)
    try:
        state, tokens = _start(model, src, max_len, bos)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, state = model.step(tokens, state)  # (B, V)
            nxt = sampling.choose(logits.float())  # from the global RNG, which the loop saves
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            out.append(nxt)
            done = done | (nxt == eos)
            if bool(done.all()):
                break
            tokens = nxt[:, None]
    finally:
        model.train(was_training)
    return torch.stack(out, dim=1)


def sequence_logprobs(
    forward, src: torch.Tensor, ys: torch.Tensor, bos: int, eos: int, needs_source: bool = True
) -> torch.Tensor:
    """log p(y | x) (N,) with gradient, by one teacher-forced forward on the sequences `ys` (N, L):
    the sum over positions up to and including the first </s> (all L when there is none). With
    `needs_source` False (a decoder-only LM) `src` is the prompt (N, P) and y its continuation."""
    ended_before = (ys == eos).long().cumsum(1) - (ys == eos).long()  # (N, L): </s> strictly before
    valid = ended_before == 0
    if needs_source:
        tgt_in = torch.cat([torch.full_like(ys[:, :1], bos), ys[:, :-1]], dim=1)  # (N, L): <s> y
        logits = forward(src_ids=src, tgt_ids=tgt_in).logits  # (N, L, V)
    else:
        P = src.shape[1]
        logits = forward(torch.cat([src, ys[:, :-1]], dim=1)).logits[
            :, P - 1 :
        ]  # (N, L, V): prompt y, shifted
    logits = logits.to(
        torch.promote_types(logits.dtype, torch.float32)
    )  # float32 at least (float64 kept)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ys[..., None]).squeeze(-1)  # (N, L)
    return (logp * valid).sum(1)


def reinforce_loss(logp: torch.Tensor, reward: torch.Tensor, baseline) -> torch.Tensor:
    """-mean((r - b) log p(y)): its gradient is REINFORCE's estimate of -grad E[r] (Williams 1992)."""
    return -((reward - baseline).detach() * logp).mean()


def scst_advantage(sample_reward: torch.Tensor, greedy_reward: torch.Tensor) -> torch.Tensor:
    """Self-critical advantage: r(sample) - r(greedy decode of the same source)."""
    return sample_reward - greedy_reward


def mrt_loss(
    logp: torch.Tensor, reward: torch.Tensor, alpha: float = 0.005, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Minimum risk (Shen et al. 2016, https://arxiv.org/abs/1512.02433): logp, reward (B, S) over
    each source's candidate set (mask (B, S) False for dropped candidates, e.g. duplicates).
    Q(y) = P(y)^alpha / sum over the set of P(y')^alpha; risk = sum_y Q(y) (-r(y)); mean over B."""
    scores = alpha * logp
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    q = torch.softmax(scores, dim=-1)  # (B, S)
    return (q * -reward.to(q.dtype)).sum(-1).mean()


class _RL(Objective):
    """Shared by the RL objectives: sampling, rewards, log-probabilities. For a decoder-only LM
    (`lm_batch`), `prompt` is the share of each training window given as the prompt; the rest is
    the reference continuation the sampled one is rewarded against."""

    over_gold_target = False
    for_language_models = True

    def __init__(
        self,
        reward: str = "bleu",
        samples: int = 1,
        max_len: int = 0,
        temperature: float = 1.0,
        prompt: float = 0.5,
    ):
        if reward not in REWARDS:
            raise ConfigError(f"unknown reward {reward!r}; valid rewards: {', '.join(REWARDS)}")
        if int(samples) < 1:
            raise ConfigError(f"samples must be at least 1, got {samples}")
        if not 0 < float(prompt) < 1:
            raise ConfigError(
                f"prompt is the share of a window given as the prompt, between 0 and 1; got {prompt}"
            )
        self.reward_name, self.reward = reward, REWARDS[reward]
        self.samples, self.max_len, self.temperature = (
            int(samples),
            int(max_len),
            float(temperature),
        )
        self.prompt = float(prompt)

    def setup(self, model, task):
        super().setup(model, task)
        self.needs_source = bool(model.needs_source)
        if not self.needs_source and not model.causal:
            raise ConfigError(
                "RL objectives sample continuations: they need a causal model (model.arch=decoder) "
                "or an encoder-decoder"
            )

    def logprobs(self, forward, src: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return sequence_logprobs(forward, src, ys, self.task.bos, self.task.eos, self.needs_source)

    def references(self, targets: torch.Tensor) -> list[list]:
        return [[self.task.symbols([i for i in row if i != -100])] for row in targets.tolist()]

    def rewards(self, ids: torch.Tensor, refs: list[list], repeat: int) -> torch.Tensor:
        """(N,) rewards of the rows of `ids`; row j belongs to source j // repeat."""
        hyps = [self.task.symbols(row) for row in ids.tolist()]
        return torch.tensor(
            [self.reward(h, refs[j // repeat]) for j, h in enumerate(hyps)],
            dtype=torch.float32,
            device=ids.device,
        )

    def length(self, targets: torch.Tensor, src: torch.Tensor) -> int:
        """How many tokens to draw: the longest reference + 5 (exactly its length without an end
        token, as for a language model), or `max_len`; never past the model's positions (a
        language model's prompt takes some of them)."""
        longest = int((targets != -100).sum(1).max())
        room = self.task.context - (0 if self.needs_source else src.shape[1])
        return max(1, min(self.max_len or longest + (5 if self.task.eos >= 0 else 0), room))

    def draw(self, model, src: torch.Tensor, n: int, max_len: int, greedy: bool = False) -> tuple:
        src_n = src.repeat_interleave(n, dim=0)  # (B n, S)
        t = self.task
        return src_n, sample_ids(
            self.decoder(model), src_n, max_len, t.bos, t.eos, t.pad, greedy, self.temperature
        )

    def decoder(self, model) -> WithoutSpecials:
        """The model as the candidates are decoded from: the task's specials never drawn."""
        return WithoutSpecials(model, self.task.specials)


class Reinforce(_RL):
    """REINFORCE (Williams 1992; Ranzato et al. 2016 for sequences) on a metric: `samples` draws
    per source, loss -mean((r - b) log p(y|x)), b a moving average of the batch mean reward
    (b <- decay b + (1 - decay) mean r, started at the first batch's mean; saved with checkpoints)."""

    def __init__(
        self,
        reward: str = "bleu",
        samples: int = 4,
        baseline_decay: float = 0.9,
        max_len: int = 0,
        temperature: float = 1.0,
        prompt: float = 0.5,
    ):
        super().__init__(reward, samples, max_len, temperature, prompt)
        self.decay = float(baseline_decay)
        self.baseline: float | None = None

    def loss(self, forward, model, batch, step):
        src, targets = batch["src_ids"], batch["targets"]
        src_n, ys = self.draw(model, src, self.samples, self.length(targets, src))
        r = self.rewards(ys, self.references(targets), self.samples)
        mean = float(r.mean())
        b = mean if self.baseline is None else self.baseline
        logp = self.logprobs(forward, src_n, ys)
        self.baseline = self.decay * b + (1 - self.decay) * mean
        return Output(logits=logp, loss=reinforce_loss(logp, r, b))

    def state(self):
        return (
            {}
            if self.baseline is None
            else {"objective.baseline": torch.tensor([self.baseline], dtype=torch.float64)}
        )

    def load_state(self, tensors):
        if "objective.baseline" in tensors:
            self.baseline = float(tensors["objective.baseline"][0])


class SelfCritical(_RL):
    """Self-critical sequence training (Rennie et al. 2017, https://arxiv.org/abs/1612.00563): the
    baseline of each sampled sequence is the reward of the greedy decode of its source; loss
    -mean((r(sample) - r(greedy)) log p(sample|x))."""

    def loss(self, forward, model, batch, step):
        src, targets = batch["src_ids"], batch["targets"]
        refs, L = self.references(targets), self.length(targets, src)
        _, greedy = self.draw(model, src, 1, L, greedy=True)
        r_greedy = self.rewards(greedy, refs, 1).repeat_interleave(self.samples)  # (B n,)
        src_n, ys = self.draw(model, src, self.samples, L)
        r = self.rewards(ys, refs, self.samples)
        logp = self.logprobs(forward, src_n, ys)
        return Output(logits=logp, loss=-(scst_advantage(r, r_greedy).detach() * logp).mean())


CANDIDATES = ("sample", "beam")
REFERENCES = ("append", "replace_last")


def _key(row: Sequence[int], eos: int) -> tuple:
    """A candidate's ids up to and including its first </s> (what follows is padding)."""
    row = list(row)
    return tuple(row[: row.index(eos) + 1] if eos in row else row)


def replace_last(rows: list[tuple], gold: tuple, sort: bool) -> tuple | None:
    """Nematus' way of adding the reference (mrt_utils.full_sampler, `mrt_reference`): unless the
    gold target is already a candidate, it takes the place of the last distinct candidate, which
    is the greatest in id order for sampled candidates (Nematus sorts them to drop duplicates) and
    the worst of a beam's n-best. Returns the candidate to replace, or None."""
    distinct = list(dict.fromkeys(rows))
    if gold in distinct:
        return None
    return max(distinct) if sort else distinct[-1]


class MinimumRisk(_RL):
    """Minimum risk training (Shen et al. 2016, https://arxiv.org/abs/1512.02433) over a candidate
    set per source: `samples` draws (candidates=sample) or the n-best of a beam search of width
    `samples` (candidates=beam); duplicates dropped. With `with_reference` the gold target joins
    the set: `reference=append` adds it as one more candidate, `replace_last` puts it in place of
    the last candidate unless it is one already (Nematus, `replace_last`), so the set keeps n.
    Q = P^alpha renormalised over the set, loss = E_Q[-reward]."""

    def __init__(
        self,
        reward: str = "bleu",
        samples: int = 8,
        alpha: float = 0.005,
        candidates: str = "sample",
        with_reference: bool = False,
        reference: str = "append",
        max_len: int = 0,
        temperature: float = 1.0,
        prompt: float = 0.5,
    ):
        super().__init__(reward, samples, max_len, temperature, prompt)
        if candidates not in CANDIDATES:
            raise ConfigError(
                f"unknown MRT candidates {candidates!r}; valid: {', '.join(CANDIDATES)}"
            )
        if reference not in REFERENCES:
            raise ConfigError(
                f"unknown MRT reference {reference!r}; valid: {', '.join(REFERENCES)}"
            )
        self.alpha, self.candidates, self.with_reference, self.reference = (
            float(alpha),
            candidates,
            bool(with_reference),
            reference,
        )

    def nbest(self, model, src: torch.Tensor, max_len: int) -> torch.Tensor:
        """(B n, L) the n best hypotheses of beam search (width n), `pad` after </s>."""
        t, n, was_training = self.task, self.samples, model.training
        if self.needs_source:
            start, source = (
                torch.full((src.shape[0], 1), t.bos, dtype=torch.long, device=src.device),
                src,
            )
        else:
            start, source = src, None  # a language model continues its prompt
        try:
            with torch.no_grad():
                best = beam_search(
                    self.decoder(model),
                    start,
                    n,
                    min(max_len, t.context - start.shape[1]),
                    eos_id=t.eos if t.eos >= 0 else None,
                    src=source,
                    n_best=n,
                    pad_id=t.pad,
                )
        finally:
            model.train(was_training)
        return best.ids[:, :, start.shape[1] :].reshape(src.shape[0] * n, -1)

    def add_reference(self, ys: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The candidates (B, n, L) with the gold target (B, T) added: (B, n + 1, L') appended, or
        (B, n, L') in place of the last candidate (`replace_last`); L' = max(L, T), `pad` after."""
        pad, eos = self.task.pad, self.task.eos
        gold = torch.where(targets == -100, torch.full_like(targets, pad), targets)  # (B, T)
        L = max(ys.shape[2], gold.shape[1])
        ys, gold = (
            F.pad(ys, (0, L - ys.shape[2]), value=pad),
            F.pad(gold, (0, L - gold.shape[1]), value=pad),
        )
        if self.reference == "append":
            return torch.cat([ys, gold[:, None]], dim=1)  # (B, n + 1, L)
        ys = ys.clone()
        for b in range(ys.shape[0]):
            rows = [_key(r, eos) for r in ys[b].tolist()]
            out = replace_last(rows, _key(gold[b].tolist(), eos), self.candidates == "sample")
            for j, row in enumerate(rows):
                if out is not None and row == out:
                    ys[b, j] = gold[b]
        return ys

    def loss(self, forward, model, batch, step):
        src, targets = batch["src_ids"], batch["targets"]
        B, n = src.shape[0], self.samples
        if self.candidates == "beam":
            src_n, ys = (
                src.repeat_interleave(n, dim=0),
                self.nbest(model, src, self.length(targets, src)),
            )
        else:
            src_n, ys = self.draw(model, src, n, self.length(targets, src))  # (B n, L)
        if self.with_reference:
            ys = self.add_reference(ys.view(B, n, -1), targets)  # (B, n', L')
            n = ys.shape[1]
            ys, src_n = ys.reshape(B * n, -1), src.repeat_interleave(n, dim=0)
        keep = torch.ones(B, n, dtype=torch.bool)
        rows = [tuple(self.task.symbols(r)) for r in ys.tolist()]
        for b in range(B):  # drop repeated candidates: the set is a set
            seen = set()
            for j in range(n):
                keep[b, j] = rows[b * n + j] not in seen
                seen.add(rows[b * n + j])
        r = self.rewards(ys, self.references(targets), n).view(B, n)
        logp = self.logprobs(forward, src_n, ys).view(B, n)
        return Output(logits=logp, loss=mrt_loss(logp, r, self.alpha, keep.to(logp.device)))


def build_objective(spec: Choice, model: torch.nn.Module, task: Task) -> Objective:
    """`train.objective` (a Choice of `OBJECTIVES`) built and set up for `model` and `task`: what
    every trainer calls (`TrainLoop.setup_objective`). A model that reads a source (an
    encoder-decoder) takes every kind; one that does not (a language model) only the kinds that
    declare `for_language_models`."""
    check_options(spec, OBJECTIVES, "train.objective")
    kind = OBJECTIVES[spec.kind]
    if not model.needs_source and not kind.for_language_models:
        valid = ", ".join(k for k, v in OBJECTIVES.items() if v.for_language_models)
        raise ConfigError(
            f"train.objective={spec.kind} is for encoder-decoder models; a language model "
            f"takes: {valid}"
        )
    objective = kind(**spec.options)
    objective.setup(model, task)
    return objective


# ----------------------------------------------------------------------------- guided attention
def diagonal_share(
    attn: torch.Tensor, src_len: torch.Tensor, tgt_len: torch.Tensor, band: float = 0.1
) -> torch.Tensor:
    """How diagonal a cross-attention is: attn (B, T, S) (rows: target positions t, columns:
    source n, e.g. averaged over heads), lengths (B,) -> (B,) the mean over each word's T valid rows
    of the attention mass on the source positions with |n / N - t / T| <= band (N, T its lengths,
    n / N and t / T as in `guided_weights`). 1 is all mass in the band; padding is left out."""
    B, T, S = attn.shape
    n = (
        torch.arange(S, device=attn.device, dtype=torch.float32)[None, None, :]
        / src_len[:, None, None]
    )
    t = (
        torch.arange(T, device=attn.device, dtype=torch.float32)[None, :, None]
        / tgt_len[:, None, None]
    )
    real = torch.arange(S, device=attn.device)[None, None, :] < src_len[:, None, None]  # (B, 1, S)
    inside = ((n - t).abs() <= band + 1e-9) & real  # (B, T, S)
    rows = (attn.float() * inside).sum(-1)  # (B, T): mass in the band per row
    valid = torch.arange(T, device=attn.device)[None, :] < tgt_len[:, None]  # (B, T)
    return (rows * valid).sum(1) / tgt_len.clamp(min=1)


def guided_weights(
    src_len, tgt_len, sigma: float, S: int | None = None, T: int | None = None
) -> torch.Tensor:
    """Tachibana et al. 2017 (https://arxiv.org/abs/1710.08969), eq. 1:
    W(t, n) = 1 - exp(-(n / N - t / T)^2 / (2 g^2)), rows target positions t, columns source n.

    Plain ints give one (T, N) matrix; tensors src_len, tgt_len (B,) give (B, T_max, S_max), zero
    outside each row's N x T (padding excluded)."""
    if isinstance(src_len, int):
        return guided_weights(torch.tensor([src_len]), torch.tensor([tgt_len]), sigma)[0]
    S = int(src_len.max()) if S is None else S
    T = int(tgt_len.max()) if T is None else T
    n = (
        torch.arange(S, device=src_len.device, dtype=torch.float32)[None, None, :]
        / src_len[:, None, None]
    )
    t = (
        torch.arange(T, device=src_len.device, dtype=torch.float32)[None, :, None]
        / tgt_len[:, None, None]
    )
    w = 1.0 - torch.exp(-((n - t) ** 2) / (2 * sigma**2))  # (B, T, S)
    valid = (torch.arange(T, device=w.device)[None, :, None] < tgt_len[:, None, None]) & (
        torch.arange(S, device=w.device)[None, None, :] < src_len[:, None, None]
    )
    return w * valid


def _indices(spec: str, count: int, what: str) -> list[int]:
    if spec.strip() == "all":
        return list(range(count))
    try:
        picked = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"train.guided_{what} must be 'all' or comma-separated indices, got {spec!r}"
        ) from None
    bad = [i for i in picked if not -count <= i < count]
    if bad or not picked:
        raise ConfigError(
            f"train.guided_{what}={spec!r}: the model has {count} {what} (indices 0..{count - 1})"
        )
    return picked


class GuidedAttention:
    """The guided attention loss: mean of W * A over valid (source, target) positions of the chosen
    layers' and heads' cross-attention A (B, H, T, S), W from `guided_weights`. It pushes attention
    toward the diagonal; it needs attention weights, so it refuses a kernel without `gives_weights`."""

    def __init__(self, weight: float, sigma: float = 0.4, layers: str = "all", heads: str = "0,1"):
        if not sigma > 0:
            raise ConfigError(f"train.guided_sigma must be positive, got {sigma}")
        self.weight, self.sigma, self.layers_spec, self.heads_spec = (
            float(weight),
            float(sigma),
            layers,
            heads,
        )

    def setup(self, model: torch.nn.Module) -> None:
        crosses = [m.cross for m in model.modules() if isinstance(m, Block) and m.cross is not None]
        if not crosses:
            raise ConfigError(
                "train.guided_attention needs an encoder-decoder model (cross-attention)"
            )
        for a in crosses:
            if not a.kernel.gives_weights:
                raise ConfigError(
                    f"train.guided_attention needs cross-attention weights, which the "
                    f"{type(a.kernel).__name__} kernel does not give; set "
                    f"model.kernel={' | '.join(weight_giving(KERNELS))}"
                )
        self.layers = _indices(self.layers_spec, len(crosses), "layers")
        self.heads = _indices(self.heads_spec, crosses[0].heads, "heads")

    def loss(
        self, out: Output, src_ids: torch.Tensor, targets: torch.Tensor, pad: int
    ) -> torch.Tensor:
        src_len, tgt_len = (src_ids != pad).sum(1), (targets != -100).sum(1)  # (B,), (B,)
        A = torch.stack(
            [out.cross_attentions[i][:, self.heads] for i in self.layers], dim=1
        )  # (B, L, h, T, S)
        W = guided_weights(src_len, tgt_len, self.sigma, A.shape[-1], A.shape[-2])  # (B, T, S)
        valid = (src_len * tgt_len).sum() * A.shape[1] * A.shape[2]
        return (W[:, None, None] * A.float()).sum() / valid


OBJECTIVES = {
    "teacher-forcing": TeacherForcing,
    "scheduled": ScheduledSampling,
    "two-pass": TwoPassScheduledSampling,
    "parallel": ParallelScheduledSampling,
    "reinforce": Reinforce,
    "self-critical": SelfCritical,
    "mrt": MinimumRisk,
}
