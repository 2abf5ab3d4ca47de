"""Language-model training: the one loop (loop.py) on text, `Trainer(cfg, out).fit()`.

    Trainer        a decoder-only language model on random windows of a tokenized corpus:
                   `setup_data` tokenizes and caches the data (data.py) and sets the model's
                   vocabulary size, `batch_loss` hands each window to `train.objective`
                   (teacher forcing, or RL on a metric through `objectives.lm_batch`),
                   `evaluate` gives the mean loss of fixed train and val batches
    describe(cfg)  the resolved config as printed at startup

Everything else a run does (optimizer, schedule, accumulation, compile, checkpoints, metrics,
the run-folder lock, Ctrl-C) is `loop.TrainLoop`'s; sequence-to-sequence training is
seq2seq.py and fine-tuning tasks/finetune.py.
"""

from __future__ import annotations

import torch

from . import memory
from .builder import build_model
from .config import RunConfig, dumps
from .data import Batches, default_cache_root, prepare
from .devices import autocast_for, precision
from .loop import TrainLoop
from .objectives import lm_batch, lm_task


class Trainer(TrainLoop):
    """The loop on text: a decoder-only language model, batches of random windows of the corpus.
    Under ddp / fsdp every rank draws the same global batch of windows and keeps its own rows."""

    def setup_data(self) -> None:
        with self.parallel.main_first():  # rank 0 tokenizes and caches; the others read the cache
            self.data = self.prepare_data()
        self.cfg.model.vocab_size = self.data.tokenizer.vocab_size
        t = self.cfg.train
        self.batches = Batches(
            self.data.train,
            self.cfg.model.context,
            t.batch_size,
            t.seed,
            rows=self.parallel.shard(t.batch_size),
        )

    def prepare_data(self):
        """Tokenized train / val ids (fine-tuning overrides this to reuse a checkpoint's tokenizer)."""
        return prepare(self.cfg.data, self.cfg.data.cache_dir or default_cache_root(), log=self.log)

    def vocabulary(self):
        return self.data.tokenizer

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.cfg.model)
        self.setup_objective(
            model, lm_task(self.cfg.model.context)
        )  # teacher forcing or an RL kind
        return model

    def memory_estimate(self) -> memory.MemoryEstimate:
        t = self.cfg.train
        return memory.estimate(
            self.cfg.model, t.batch_size, self.batches.context, precision(self.device, t.dtype)
        )

    def batch_loss(self) -> torch.Tensor:
        x, y = self.batches.next(self.device)
        self.tokens += x.numel()
        return self.objective_loss(lm_batch(self.objective, x, y)).loss

    def evaluate(self) -> dict:
        """Mean loss over `eval_iters` fixed batches of each split (the same batches every time)."""
        t = self.cfg.train
        result = {}
        for split, ids in (("train", self.data.train), ("val", self.data.val)):
            batches = Batches(ids, self.cfg.model.context, t.batch_size, seed=t.seed + 1)
            losses = []
            for _ in range(t.eval_iters):
                x, y = batches.next(self.device)
                with autocast_for(self.device, t.dtype):
                    losses.append(self.model(x, y).loss.item())
            result[f"{split}_loss"] = sum(losses) / len(losses)
        return result

    def fit(self) -> dict:
        self.log(
            f"model: {self.model.num_params() / 1e6:.2f}M parameters (non-embedding) on {self.device}"
        )
        return super().fit()


def describe(cfg: RunConfig) -> str:
    return "resolved config:\n" + dumps(cfg)
