"""Sequence-to-sequence training: vocabularies, pair data, length-bucketed batches, a trainer and
batched greedy decoding for encoder-decoder models.

    Vocab / PairVocab       symbols <-> ids, with <pad>=0, <s>=1, </s>=2, <unk>=3 on both sides
    BucketBatches           batches of pairs of similar length (little padding), reshuffled every
                            epoch from (seed, epoch), so the data position is two integers
    collate(pairs)          {src_ids (B, S), tgt_ids (B, T) = <s> y, targets (B, T) = y </s>}, padded
                            with <pad> (inputs) and -100 (targets, ignored by the loss); pairs
                            that carry soft targets (Soft) add soft_ids / soft_probs (B, T, k)
                            and soft_rest (B, T)
    teacher_distributions   word-level distillation's soft targets (Kim & Rush 2016): a teacher's
                            (a model's or an ensemble's) k most likely next symbols, their
                            probabilities and the rest at every target position of each pair,
                            teacher-forced; `train.word_distill` mixes them into the loss
                            (soft_cross_entropy)
    Seq2SeqTrainer          the one training loop (loop.TrainLoop) on pairs: teacher forcing
                            with label smoothing on bucketed batches, or another objective of
                            objectives.py (`train.objective`, `train.guided_attention`); its loop,
                            schedule, time budget, compile, checkpoints and metrics are loop.py's
    Seq2SeqConfig           the model, train and decode sections every pair run saves
    greedy_decode(...)      batched arg-max decoding (tfmr.decode.greedy), ids before </s>

What a task adds (the data, its metric, its presets) lives in the task's own module: the task
layer is tfmr/tasks/symbols.py, G2P tfmr/tasks/g2p.py. Loading a saved pair model is `tfmr.load`
(tfmr/loading.py). Beam search is `tfmr.decode.beam_search`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .builder import build_model, max_positions
from .config import (  # the pair configs live in config.py (torch-free), re-exported here
    ConfigError,
    DecodeConfig,
    ModelConfig,
    Seq2SeqConfig,
    Seq2SeqTrainConfig,
)
from .decode import greedy
from .devices import autocast_for
from .kernels import eager_attention  # re-exported: run a model on the eager kernel
from .loop import TrainLoop
from .objectives import GuidedAttention, Task
from .vocab import BOS, EOS, PAD, SPECIALS, UNK, PairVocab, Vocab  # re-exported here

# ----------------------------------------------------------------------------- batches
# (source ids, target ids), or with word-level distillation (source ids, target ids, Soft)
Pair = tuple


@dataclass(frozen=True)
class Soft:
    """One pair's soft targets: at each of its len(target) + 1 positions (y_1 .. y_T, </s>) a
    teacher's k most likely symbols, `ids` (T + 1, k), their probabilities, `probs` (T + 1, k),
    and the probability it gives all the other symbols, `rest` (T + 1,), which the loss spreads
    evenly over them. Kept small: ids int16 (int32 past 32,767 symbols), probabilities fp16;
    112,400 G2P pairs at k = 8 hold about 20 MB."""

    ids: torch.Tensor
    probs: torch.Tensor
    rest: torch.Tensor


def collate(pairs: Sequence[Pair], device="cpu") -> dict:
    """Pad a list of (src ids, tgt ids[, Soft]) into the three tensors teacher forcing needs, and
    soft_ids / soft_probs (B, T, k) and soft_rest (B, T) when the pairs carry soft targets
    (probability 0 on padding)."""
    B = len(pairs)
    S = max(len(p[0]) for p in pairs)
    T = max(len(p[1]) for p in pairs) + 1
    src = torch.full((B, S), PAD, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD, dtype=torch.long)
    targets = torch.full((B, T), -100, dtype=torch.long)
    for i, (s, t, *_) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS] + t)  # <s> y
        targets[i, : len(t) + 1] = torch.tensor(t + [EOS])  # y </s>
    batch = {"src_ids": src, "tgt_ids": tgt_in, "targets": targets}
    if len(pairs[0]) > 2:
        k = pairs[0][2].ids.shape[1]
        batch["soft_ids"] = torch.zeros((B, T, k), dtype=torch.long)
        batch["soft_probs"] = torch.zeros((B, T, k))
        batch["soft_rest"] = torch.zeros((B, T))
        for i, (_, t, soft) in enumerate(pairs):
            batch["soft_ids"][i, : len(t) + 1] = soft.ids
            batch["soft_probs"][i, : len(t) + 1] = soft.probs
            batch["soft_rest"][i, : len(t) + 1] = soft.rest
    return {name: x.to(device) for name, x in batch.items()}


class BucketBatches:
    """Length-bucketed batching: each epoch, shuffle the pairs, sort them by length inside pools of
    `pool` batches, cut batches of at most `batch_tokens` padded tokens (source + target) or
    `batch_size` pairs, and shuffle the batch order. Deterministic in (seed, epoch)."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        batch_size: int,
        batch_tokens: int = 0,
        seed: int = 0,
        pool: int = 100,
    ):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.batch_size, self.batch_tokens = pairs, batch_size, batch_tokens
        self.seed, self.pool = seed, pool
        self.epoch, self.index = 0, 0
        self._order = self.epoch_batches(0)

    def _cost(self, idx: int) -> int:
        s, t = self.pairs[idx][:2]
        return len(s) + len(t) + 1

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        idx = list(range(len(self.pairs)))
        rng.shuffle(idx)
        chunk = self.pool * self.batch_size
        batches = []
        for start in range(0, len(idx), chunk):
            pool = sorted(idx[start : start + chunk], key=self._cost)
            batch, longest = [], 0
            for i in pool:
                longest_if = max(longest, self._cost(i))
                full = len(batch) >= self.batch_size or (
                    self.batch_tokens and longest_if * (len(batch) + 1) > self.batch_tokens
                )
                if batch and full:
                    batches.append(batch)
                    batch, longest_if = [], self._cost(i)
                batch.append(i)
                longest = longest_if
            if batch:
                batches.append(batch)
        rng.shuffle(batches)
        return batches

    def next(self) -> list[Pair]:
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self.epoch_batches(self.epoch)
        batch = self._order[self.index]
        self.index += 1
        return [self.pairs[i] for i in batch]

    def state(self) -> torch.Tensor:
        """Where the sampler is: (epoch, index), as a tensor for the checkpoint."""
        return torch.tensor([self.epoch, self.index], dtype=torch.long)

    def load_state(self, state: torch.Tensor) -> None:
        self.epoch, self.index = (int(v) for v in state.tolist())
        self._order = self.epoch_batches(self.epoch)

    def __len__(self) -> int:
        """Batches per epoch (of the current epoch; other epochs differ by a few)."""
        return len(self._order)


def check_lengths(pairs: Sequence[Pair], cfg: ModelConfig) -> None:
    """Learned positions cannot go past model.context: refuse data that would."""
    if max_positions(cfg) is None:
        return
    longest = max(max(len(p[0]), len(p[1]) + 1) for p in pairs)
    if longest > cfg.context:
        raise ConfigError(
            f"a sequence of {longest} tokens does not fit model.context={cfg.context} "
            "with learned positions; raise model.context"
        )


# ----------------------------------------------------------------------------- word-level distillation
@torch.inference_mode()
def teacher_distributions(
    model, pairs: Sequence[Pair], k: int, batch_size: int = 500, done: Callable | None = None
) -> tuple[list[Soft], float]:
    """Word-level distillation's soft targets (Kim & Rush 2016): `model` (the teacher, an
    encoder-decoder) teacher-forced on each pair's own target, its k most likely symbols at every
    position (y_1 .. y_T, </s>), their probabilities and the rest of its probability. Returns the
    Soft of each pair (in the order given) and the mean probability mass the k kept. Pairs are
    read in length-sorted batches, so a batch pads little; `done(n)` is called after each batch
    with the pairs it read (a progress bar's update). The teacher is put in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    softs: list = [None] * len(pairs)
    mass, positions = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate([pairs[i][:2] for i in rows], device)
        logits = model(batch["src_ids"], batch["tgt_ids"]).logits  # (B, T, V)
        top, ids = logits.float().softmax(-1).topk(k, dim=-1)  # (B, T, k) each
        kept = top.sum(-1)  # (B, T)
        live = batch["targets"] != -100
        mass, positions = mass + float(kept[live].sum()), positions + int(live.sum())
        rest = (1 - kept).clamp(min=0)  # (B, T)
        id_type = torch.int16 if logits.shape[-1] <= torch.iinfo(torch.int16).max else torch.int32
        for j, i in enumerate(rows):
            n = len(pairs[i][1]) + 1
            ids_j, top_j, rest_j = ids[j, :n].to(id_type), top[j, :n].half(), rest[j, :n].half()
            softs[i] = Soft(ids_j.cpu(), top_j.cpu(), rest_j.cpu())
        if done is not None:
            done(len(rows))
    return softs, mass / max(positions, 1)


def soft_cross_entropy(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The student's cross entropy against the soft targets, the mean over the target positions
    (targets != -100) of logits (B, T, V) and the batch's soft_ids / soft_probs / soft_rest:
    -sum_k p_k log q(id_k) - rest / (V - k) x the sum of -log q over the V - k other symbols
    (the teacher's leftover probability spread evenly: mostly what label smoothing taught it)."""
    logq = torch.log_softmax(logits.float(), -1)  # (B, T, V)
    kept = logq.gather(-1, batch["soft_ids"])  # (B, T, k)
    others = logq.sum(-1) - kept.sum(-1)  # (B, T): sum of log q over the symbols not kept
    V, k = logits.shape[-1], kept.shape[-1]
    per_position = (
        -(batch["soft_probs"] * kept).sum(-1) - batch["soft_rest"] / max(V - k, 1) * others
    )
    live = batch["targets"] != -100
    return per_position[live].sum() / live.sum().clamp(min=1)


# ----------------------------------------------------------------------------- trainer
class Seq2SeqTrainer(TrainLoop):
    """The training loop (loop.TrainLoop) on (source, target) id pairs: teacher forcing on
    length-bucketed batches of an encoder-decoder.

    `cfg` is a run config with `model` and `train` (Seq2SeqTrainConfig) sections (and whatever
    else the task keeps; it is saved whole). `dev_metric(model) -> dict` is called at every
    evaluation (e.g. greedy word error rate on part of the dev set). `make_model(ModelConfig)`
    defaults to build_model; the copy task passes `build_copy_model`. `make_batch(pairs, device)`
    defaults to collate.
    """

    data_parallel = False  # length-bucketed batches are not yet split among torchrun processes

    def __init__(
        self,
        cfg,
        vocab: PairVocab,
        train_pairs: Sequence[Pair],
        dev_pairs: Sequence[Pair],
        out_dir: str | Path,
        resume: bool = False,
        log=print,
        progress: bool = True,
        dev_metric: Callable | None = None,
        make_model: Callable = build_model,
        make_batch: Callable = collate,
        overwrite: bool = False,
    ):
        self.vocab, self.train_pairs, self.all_dev_pairs = vocab, train_pairs, dev_pairs
        self.dev_metric, self.make_model, self.make_batch = dev_metric, make_model, make_batch
        super().__init__(
            cfg, out_dir, resume=resume, log=log, progress=progress, overwrite=overwrite
        )

    def setup_data(self) -> None:
        t, m = self.cfg.train, self.cfg.model
        m.arch, m.pad_id = "encoder-decoder", PAD
        m.src_vocab_size, m.vocab_size = len(self.vocab.src), len(self.vocab.tgt)
        check_lengths(self.train_pairs, m)
        self.batches = BucketBatches(self.train_pairs, t.batch_size, t.batch_tokens, t.seed)
        self.dev_pairs = list(self.all_dev_pairs)[: t.eval_pairs]

    def build_model(self) -> torch.nn.Module:
        model = self.make_model(self.cfg.model)
        self.setup_objective(
            model, Task(BOS, EOS, PAD, self.vocab.tgt.decode, self.cfg.model.context)
        )
        self.guided = self.guided_attention(model)
        self.check_word_distill()
        return model

    def check_word_distill(self) -> None:
        """`train.word_distill`, checked at start: a weight in [0, 1]; above 0, training pairs that
        carry soft targets, an objective over the gold target and whole logits."""
        w = self.cfg.train.word_distill
        if not 0.0 <= w <= 1.0:
            raise ConfigError(f"train.word_distill is a weight in [0, 1], got {w}")
        if not w:
            return
        if len(self.train_pairs[0]) < 3:
            raise ConfigError(
                "train.word_distill mixes a teacher's distributions into the loss, and this run's "
                "training pairs carry none (G2P: set data.teacher)"
            )
        if not self.objective.over_gold_target:
            raise ConfigError(
                f"train.word_distill adds to a teacher-forced loss; train.objective="
                f"{self.cfg.train.objective.kind} does not compute one"
            )
        if self.cfg.model.loss_chunk:
            raise ConfigError(
                "train.word_distill reads the whole logits, which model.loss_chunk never makes; "
                "set model.loss_chunk=0"
            )

    def guided_attention(self, model: torch.nn.Module) -> GuidedAttention | None:
        """The guided attention term (`train.guided_attention`), checked against the model and the
        objective at start; None when it is off."""
        t = self.cfg.train
        if not t.guided_attention:
            return None
        if not self.objective.over_gold_target:
            raise ConfigError(
                f"train.guided_attention adds to a teacher-forced loss; train.objective="
                f"{t.objective.kind} does not compute one (use teacher-forcing, scheduled, "
                "two-pass or parallel)"
            )
        guided = GuidedAttention(
            t.guided_attention, t.guided_sigma, t.guided_layers, t.guided_heads
        )
        guided.setup(model)
        return guided

    def vocabulary(self) -> PairVocab:
        return self.vocab

    def batch_loss(self) -> torch.Tensor:
        batch = self.make_batch(self.batches.next(), self.device)
        soft = {k: batch.pop(k) for k in ("soft_ids", "soft_probs", "soft_rest") if k in batch}
        self.tokens += int((batch["targets"] != -100).sum())  # target tokens
        out = self.objective_loss(batch)  # train.objective
        loss = out.loss
        w = self.cfg.train.word_distill
        if w:  # word-level distillation: (1 - w) x the objective's loss + w x the soft targets'
            loss = (1 - w) * loss + w * soft_cross_entropy(out.logits, {**batch, **soft})
        if self.guided is None:
            return loss
        return loss + self.guided.weight * self.guided.loss(
            out, batch["src_ids"], batch["targets"], PAD
        )

    def log_fields(self) -> dict:
        return {"epoch": self.batches.epoch}

    def evaluate(self) -> dict:
        """Dev loss (token-weighted, fixed batches) and the task's dev metric."""
        total, count = 0.0, 0
        for i in range(0, len(self.dev_pairs), 256):
            batch = self.make_batch(self.dev_pairs[i : i + 256], self.device)
            n = int((batch["targets"] != -100).sum())
            with autocast_for(self.device, self.cfg.train.dtype):
                total += self.model(**batch).loss.item() * n
            count += n
        result = {"dev_loss": total / max(count, 1)}
        if self.dev_metric is not None:
            result.update(self.dev_metric(self.model))
        return result

    def fit(self) -> dict:
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"model: {n_params / 1e6:.2f}M parameters on {self.device}; "
            f"{len(self.batches.pairs):,} training pairs, about {len(self.batches):,} batches per epoch"
        )
        return super().fit()


# ----------------------------------------------------------------------------- decoding
def pad_batch(seqs: Sequence[Sequence[int]], device="cpu") -> torch.Tensor:
    """(B, S) ids, right-padded with <pad>."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out.to(device)


def greedy_decode(
    model, src: torch.Tensor, max_len: int, bos: int = BOS, eos: int = EOS
) -> list[list[int]]:
    """Arg-max decoding (tfmr.decode.greedy) of a batch of padded sources (B, S): each row's ids
    before its </s>."""
    start = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    ids = greedy(model, start, max_len, eos_id=eos, src=src)[
        :, 1:
    ].tolist()  # (B, new), </s> padded
    return [row[: row.index(eos)] if eos in row else row for row in ids]


__all__ = [
    "Vocab",
    "PairVocab",
    "BucketBatches",
    "collate",
    "Seq2SeqTrainConfig",
    "DecodeConfig",
    "Seq2SeqConfig",
    "Seq2SeqTrainer",
    "pad_batch",
    "greedy_decode",
    "Soft",
    "teacher_distributions",
    "soft_cross_entropy",
    "eager_attention",
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "SPECIALS",
]
