"""Sequence-to-sequence training: vocabularies, pair data, length-bucketed batches, a trainer and
batched greedy decoding for encoder-decoder models.

    Vocab / PairVocab       symbols <-> ids, with <pad>=0, <s>=1, </s>=2, <unk>=3 on both sides
    BucketBatches           batches of pairs of similar length (little padding), reshuffled every
                            epoch from (seed, epoch), so the data position is two integers
    collate(pairs)          {src_ids (B, S), tgt_ids (B, T) = <s> y, targets (B, T) = y </s>}, padded
                            with <pad> (inputs) and -100 (targets, ignored by the loss)
    Seq2SeqTrainer          teacher forcing with label smoothing, AdamW + warmup + cosine, bf16
                            autocast, clipping, a wall-clock budget, progress bar, JSON-lines
                            metrics and checkpoints that resume (pieces shared with train.py)
    greedy_decode(...)      batched arg-max decoding (tfmr.decode.greedy), ids before </s>

What a task adds (the data, its metric, its presets) lives in the task's own module: g2p.py for
grapheme-to-phoneme conversion. Beam search is `tfmr.decode.beam_search`.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .builder import build_model, max_positions
from .config import ConfigError, ModelConfig, TrainConfig, from_dict, to_dict
from .decode import greedy
from .kernels import eager_attention  # re-exported: run a model on the eager kernel
from .train import autocast_for, lr_at, make_optimizer, optimizer_step, plot_losses, prepare_run

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


# ----------------------------------------------------------------------------- vocabularies
class Vocab:
    """Symbols <-> ids. The four specials come first, then the symbols in the order given."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if set(symbols) & set(SPECIALS) or len(set(symbols)) != len(symbols):
            raise ValueError("Vocab symbols must be distinct and must not be special tokens")
        self.itos = list(SPECIALS) + symbols
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences) -> "Vocab":
        """Every symbol of `sequences`, sorted (the same data always gives the same ids)."""
        return cls(sorted({s for seq in sequences for s in seq}))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, seq: Sequence[str]) -> list[int]:
        return [self.stoi.get(s, UNK) for s in seq]

    def decode(self, ids) -> list[str]:
        """Symbols up to the first </s>, without <pad> and <s>."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.itos[i] if i < len(self.itos) else SPECIALS[UNK])
        return out


class PairVocab:
    """The source and the target vocabulary of a task, saved together as vocab.json."""

    kind = "pair"

    def __init__(self, src: Vocab, tgt: Vocab):
        self.src, self.tgt = src, tgt

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "vocab.json"
        data = {"kind": self.kind, "src": self.src.itos[len(SPECIALS):], "tgt": self.tgt.itos[len(SPECIALS):]}
        path.write_text(json.dumps(data, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "PairVocab":
        path = Path(directory) / "vocab.json"
        if not path.exists():
            raise FileNotFoundError(f"no vocab.json in {directory}: not a sequence-to-sequence checkpoint")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(Vocab(data["src"]), Vocab(data["tgt"]))


# ----------------------------------------------------------------------------- batches
Pair = tuple[list[int], list[int]]


def collate(pairs: Sequence[Pair], device="cpu") -> dict:
    """Pad a list of (src ids, tgt ids) into the three tensors teacher forcing needs."""
    B = len(pairs)
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    src = torch.full((B, S), PAD, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD, dtype=torch.long)
    targets = torch.full((B, T), -100, dtype=torch.long)
    for i, (s, t) in enumerate(pairs):
        src[i, :len(s)] = torch.tensor(s)
        tgt_in[i, :len(t) + 1] = torch.tensor([BOS] + t)  # <s> y
        targets[i, :len(t) + 1] = torch.tensor(t + [EOS])  # y </s>
    return {"src_ids": src.to(device), "tgt_ids": tgt_in.to(device), "targets": targets.to(device)}


class BucketBatches:
    """Length-bucketed batching: each epoch, shuffle the pairs, sort them by length inside pools of
    `pool` batches, cut batches of at most `batch_tokens` padded tokens (source + target) or
    `batch_size` pairs, and shuffle the batch order. Deterministic in (seed, epoch)."""

    def __init__(self, pairs: Sequence[Pair], batch_size: int, batch_tokens: int = 0, seed: int = 0,
                 pool: int = 100):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.batch_size, self.batch_tokens = pairs, batch_size, batch_tokens
        self.seed, self.pool = seed, pool
        self.epoch, self.index = 0, 0
        self._order = self.epoch_batches(0)

    def _cost(self, idx: int) -> int:
        s, t = self.pairs[idx]
        return len(s) + len(t) + 1

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + epoch)
        idx = list(range(len(self.pairs)))
        rng.shuffle(idx)
        chunk = self.pool * self.batch_size
        batches = []
        for start in range(0, len(idx), chunk):
            pool = sorted(idx[start:start + chunk], key=self._cost)
            batch, longest = [], 0
            for i in pool:
                longest_if = max(longest, self._cost(i))
                full = len(batch) >= self.batch_size or (self.batch_tokens and longest_if * (len(batch) + 1) > self.batch_tokens)
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

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self.epoch_batches(self.epoch)

    def __len__(self) -> int:
        """Batches per epoch (of the current epoch; other epochs differ by a few)."""
        return len(self._order)


# ----------------------------------------------------------------------------- config
@dataclass
class Seq2SeqTrainConfig(TrainConfig):
    """TrainConfig plus what sequence pairs need."""

    batch_tokens: int = 0  # > 0: cap each batch at this many padded tokens (source + target)
    max_minutes: float = 0.0  # > 0: a wall-clock budget; the schedule decays by steps or time, whichever is first
    eval_pairs: int = 2000  # dev pairs in the dev loss (and the task's own dev metric)


@dataclass
class DecodeConfig:
    """How a trained model is decoded for evaluation."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_len: int = 40  # target tokens, </s> included
    batch_size: int = 500


def check_lengths(pairs: Sequence[Pair], cfg: ModelConfig) -> None:
    """Learned positions cannot go past model.context: refuse data that would."""
    if max_positions(cfg) is None:
        return
    longest = max(max(len(s), len(t) + 1) for s, t in pairs)
    if longest > cfg.context:
        raise ConfigError(f"a sequence of {longest} tokens does not fit model.context={cfg.context} "
                          "with learned positions; raise model.context")


# ----------------------------------------------------------------------------- trainer
class Seq2SeqTrainer:
    """Teacher-forced training of an encoder-decoder on (source, target) id pairs.

    `cfg` is a run config with `model`, `train` (Seq2SeqTrainConfig) sections (and whatever else the
    task keeps; it is saved whole). `dev_metric(model) -> dict` is called at every evaluation (e.g.
    greedy word error rate on part of the dev set). `make_model(ModelConfig)` defaults to
    build_model; the copy head wraps it. `make_batch(pairs, device)` defaults to collate.
    """

    def __init__(self, cfg, vocab: PairVocab, train_pairs: Sequence[Pair], dev_pairs: Sequence[Pair],
                 out_dir: str | Path, resume: bool = False, log=print, progress: bool = True,
                 dev_metric: Callable | None = None, make_model: Callable = build_model,
                 make_batch: Callable = collate):
        self.cfg, self.vocab, self.log, self.progress = cfg, vocab, log, progress
        self.out, self.device, self.ckpt_dir = prepare_run(cfg.train, out_dir)
        t = cfg.train
        m = cfg.model
        m.arch, m.pad_id = "encoder-decoder", PAD
        m.src_vocab_size, m.vocab_size = len(vocab.src), len(vocab.tgt)
        check_lengths(train_pairs, m)
        torch.manual_seed(t.seed)
        self.model = make_model(m).to(self.device)
        self.optimizer = make_optimizer(self.model, t, self.device)
        self.make_batch, self.dev_metric = make_batch, dev_metric
        self.batches = BucketBatches(train_pairs, t.batch_size, t.batch_tokens, t.seed)
        self.dev_pairs = list(dev_pairs)[: t.eval_pairs]
        self.step, self.seconds, self.history = 0, 0.0, []
        if resume:
            self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        checkpoint.load_weights(self.ckpt_dir, self.model)
        tensors, plain = checkpoint.load_state(self.ckpt_dir)
        self.optimizer.load_state_dict(plain["optimizer"])
        self.step, self.seconds = plain["step"], plain.get("seconds", 0.0)
        self.history = plain.get("history", [])
        self.batches.load_state(plain["batches"])
        torch.set_rng_state(tensors["rng.torch"])
        self.log(f"resumed from {self.ckpt_dir} at step {self.step} ({self.seconds / 60:.1f} min trained)")

    def save(self) -> Path:
        extra = {"step": self.step, "seconds": self.seconds, "history": self.history,
                 "batches": self.batches.state()}
        path = checkpoint.save(self.ckpt_dir, self.model, to_dict(self.cfg), self.vocab, self.optimizer,
                               {"rng.torch": torch.get_rng_state()}, extra)
        if self.cfg.train.keep_last > 0:
            checkpoint.keep_snapshot(path, self.out / "snapshots", self.step, self.cfg.train.keep_last)
        return path

    # ------------------------------------------------------------------ loop
    def progress_fraction(self) -> float:
        """How far the schedule is: by steps, or by the wall-clock budget if that is further."""
        t = self.cfg.train
        frac = self.step / t.steps
        if t.max_minutes > 0:
            frac = max(frac, self.seconds / (60.0 * t.max_minutes))
        return min(frac, 1.0)

    def train_step(self) -> float:
        t = self.cfg.train
        lr = lr_at(round(self.progress_fraction() * t.steps), t)

        def micro_loss():
            return self.model(**self.make_batch(self.batches.next(), self.device)).loss

        total = optimizer_step(self.model, self.optimizer, micro_loss, t, self.device, lr)
        self.step += 1
        return total

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Dev loss (token-weighted, fixed batches) and the task's dev metric."""
        was = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        for i in range(0, len(self.dev_pairs), 256):
            batch = self.make_batch(self.dev_pairs[i:i + 256], self.device)
            n = int((batch["targets"] != -100).sum())
            with autocast_for(self.device, self.cfg.train.dtype):
                total += self.model(**batch).loss.item() * n
            count += n
        result = {"dev_loss": total / max(count, 1)}
        if self.dev_metric is not None:
            result.update(self.dev_metric(self.model))
        self.model.train(was)
        return result

    def fit(self) -> dict:
        """Train to train.steps or the time budget; Ctrl-C saves a checkpoint first."""
        t = self.cfg.train
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"model: {n_params / 1e6:.2f}M parameters on {self.device}; "
                 f"{len(self.batches.pairs):,} training pairs, about {len(self.batches):,} batches per epoch")
        metrics = open(self.out / "metrics.jsonl", "a" if self.step else "w")  # a fresh run starts a fresh log
        bar = tqdm(total=t.steps, initial=self.step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        self.model.train()
        last: dict = {}
        try:
            while self.step < t.steps and self.progress_fraction() < 1.0:
                t0 = time.perf_counter()
                loss = self.train_step()
                self.seconds += time.perf_counter() - t0
                record = {"step": self.step, "loss": loss, "epoch": self.batches.epoch, "seconds": round(self.seconds, 2)}
                done = self.step >= t.steps or self.progress_fraction() >= 1.0
                if self.step % t.log_every == 0 or done:
                    if t.max_minutes > 0:  # the bar's end: the steps the time budget will allow
                        bar.total = self.step if done else min(t.steps, round(self.step / self.progress_fraction()))
                    bar.set_postfix(loss=f"{loss:.3f}", epoch=self.batches.epoch, min=f"{self.seconds / 60:.1f}")
                if self.step % t.eval_every == 0 or done:
                    record.update(self.evaluate())
                    bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                                  if k.startswith("dev")))
                self.history.append(record)
                metrics.write(json.dumps(record) + "\n")
                last = record
                bar.update(1)
                if self.step % t.checkpoint_every == 0 or done:
                    metrics.flush()
                    self.save()
        except KeyboardInterrupt:
            bar.write("interrupted: saving a checkpoint")
            self.save()
            raise
        finally:
            bar.close()
            metrics.close()
        plot_losses([dict(r, val_loss=r["dev_loss"], train_loss=r["loss"]) if "dev_loss" in r else r
                     for r in self.history], self.out / "loss.png")
        return last


def load_run(directory: str | Path, config_cls, make_model: Callable = build_model):
    """(model in eval mode, PairVocab, config) from a checkpoint folder written by Seq2SeqTrainer."""
    directory = checkpoint.verify(directory)
    cfg = from_dict(config_cls, checkpoint.read_config(directory))
    model = make_model(cfg.model)
    checkpoint.load_weights(directory, model)
    return model.eval(), PairVocab.load(directory), cfg


# ----------------------------------------------------------------------------- decoding
def pad_batch(seqs: Sequence[Sequence[int]], device="cpu") -> torch.Tensor:
    """(B, S) ids, right-padded with <pad>."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out.to(device)


def greedy_decode(model, src: torch.Tensor, max_len: int, bos: int = BOS, eos: int = EOS) -> list[list[int]]:
    """Arg-max decoding (tfmr.decode.greedy) of a batch of padded sources (B, S): each row's ids
    before its </s>."""
    start = torch.full((src.shape[0], 1), bos, dtype=torch.long, device=src.device)
    ids = greedy(model, start, max_len, eos_id=eos, src=src)[:, 1:].tolist()  # (B, new), </s> padded
    return [row[:row.index(eos)] if eos in row else row for row in ids]


__all__ = ["Vocab", "PairVocab", "BucketBatches", "collate", "Seq2SeqTrainConfig", "DecodeConfig",
           "Seq2SeqTrainer", "load_run", "pad_batch", "greedy_decode", "eager_attention", "PAD", "BOS", "EOS",
           "UNK"]
