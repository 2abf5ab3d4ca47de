"""A synthetic task where copying matters: the pointer-generator against the plain softmax head.

    source  a b R17 c N4 ...          known symbols (a-t) mixed with rare ones
    target  ... N4 d R17 c b          reversed; each known symbol shifted by one (a->b, ..., t->a);
                                      rare symbols copied unchanged

The vocabulary holds only the 20 known symbols. Training draws rare symbols from one pool
(R0..R199), testing from another (N0..N199) that the models never see. The plain head reads
and writes every rare symbol as <unk>, so it can only get them wrong; the pointer-generator
receives them as extended ids (V + j for the j-th rare symbol of an example) and can copy them
from the source through its cross-attention.

    tfmr experiment copytask [--preset copytask] [--set key=value ...] [--steps 1500] [--out runs/copytask]
    python -m tfmr.tasks.copytask ...                 (the same)

trains both on the same data for the same steps and prints token and sequence accuracy on
test sequences (about a minute per head on one core). The config (model shape, training budget;
CopyTaskConfig) comes from the presets `copytask` and `copytask-tiny`, defined and added to
tfmr.presets' registry in tasks/copytask_presets.py (no torch there, so `tfmr presets` lists
them); train.seed also seeds the data. The task is a symbol-to-symbol task of the task layer
(tfmr/tasks/symbols.py: CopyTask), whose training loop and command it uses; its data, two heads
and accuracy are its own. At 600 steps the pointer-generator has not yet learned when to generate
and when to copy and trails the plain head; by 1500 it copies the never-seen symbols (numbers in
docs/seq2seq.md). A demonstration, not a tuned benchmark.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

from ..builder import build_copy_model
from ..programs import config_flags, out_folder, resolve_config
from ..seq2seq import (
    UNK,
    PairVocab,
    Vocab,
    greedy_decode,
    pad_batch,
)
from .copytask_presets import (  # noqa: F401 (its config and presets, registered there; re-exported)
    COMMAND,
    NAME,
    PRESETS,
    TITLE,
    CopyTaskConfig,
    copytask,
    copytask_tiny,
)
from .symbols import SymbolTask

KNOWN = [chr(ord("a") + i) for i in range(20)]


# ----------------------------------------------------------------------------- data
def make_example(
    rng: random.Random, pool: str, p_rare: float = 0.3, lengths=(4, 10)
) -> tuple[list, list]:
    """(source symbols, target symbols) of one example; rare symbols come from `pool` ("R" or "N")."""
    n = rng.randint(*lengths)
    src = [
        f"{pool}{rng.randrange(200)}" if rng.random() < p_rare else rng.choice(KNOWN)
        for _ in range(n)
    ]
    shift = {k: KNOWN[(i + 1) % len(KNOWN)] for i, k in enumerate(KNOWN)}
    return src, [shift.get(s, s) for s in reversed(src)]


def extended_ids(
    vocab: Vocab, src: Sequence[str], tgt: Sequence[str]
) -> tuple[list[int], list[int], list[str]]:
    """Ids in the vocabulary extended by this example's source-only symbols: (src, tgt, oov list).
    A target symbol neither in the vocabulary nor in the source is <unk>."""
    oov: list[str] = []
    for s in src:
        if s not in vocab.stoi and s not in oov:
            oov.append(s)
    ext = {s: len(vocab) + j for j, s in enumerate(oov)}
    encode = lambda seq: [vocab.stoi.get(s, ext.get(s, UNK)) for s in seq]  # noqa: E731
    return encode(src), encode(tgt), oov


def decode_extended(vocab: Vocab, ids: Sequence[int], oov: Sequence[str]) -> list[str]:
    return [
        vocab.itos[i]
        if i < len(vocab)
        else (oov[i - len(vocab)] if i - len(vocab) < len(oov) else "<unk>")
        for i in ids
    ]


def make_data(n_train: int = 20000, n_test: int = 1000, seed: int = 0):
    rng = random.Random(seed)
    vocab = Vocab(KNOWN)
    train = [make_example(rng, "R") for _ in range(n_train)]
    test = [make_example(rng, "N") for _ in range(n_test)]
    return vocab, train, test


def accuracy(model, vocab: Vocab, examples, copy: bool, max_len: int) -> dict:
    """Token accuracy (position by position against the true target), the same on the target
    positions holding symbols outside the vocabulary (rare_acc), and whole-sequence accuracy."""
    encoded = [
        extended_ids(vocab, s, t) if copy else (vocab.encode(s), vocab.encode(t), [])
        for s, t in examples
    ]
    hyps = []
    for i in range(0, len(encoded), 500):
        chunk = encoded[i : i + 500]
        ids = greedy_decode(model, pad_batch([e[0] for e in chunk]), max_len)
        hyps += [decode_extended(vocab, h, e[2]) for h, e in zip(ids, chunk)]
    hits = [
        (a == b, b in vocab.stoi)
        for h, (_, t) in zip(hyps, examples)
        for a, b in zip(h + [None] * len(t), t)
    ]
    rare = [hit for hit, known in hits if not known]
    exact = sum(h == t for h, (_, t) in zip(hyps, examples))
    return {
        "token_acc": sum(hit for hit, _ in hits) / len(hits),
        "rare_acc": sum(rare) / max(len(rare), 1),
        "seq_acc": exact / len(examples),
        "example": (examples[0][0], hyps[0]),
    }


class CopyTask(SymbolTask):
    """The copy task in the task layer: its config and presets, the one loop on each head's ids
    (the heads encode the examples differently, so it trains on id pairs, not on PairData)."""

    name, title, command = NAME, TITLE, COMMAND
    config_class = CopyTaskConfig
    presets = PRESETS  # registered by copytask_presets.py, which needs no torch
    default_preset = "copytask"

    def run(
        self,
        cfg: CopyTaskConfig | None = None,
        out: str | Path = "runs/copytask",
        progress: bool = True,
        log=print,
    ) -> dict:
        """Train the plain head and the pointer-generator with `cfg` (default: the `copytask` preset) on
        the same data (seeded by cfg.train.seed); their test accuracies by head name."""
        cfg = cfg or copytask()
        vocab, train, test = make_data(seed=cfg.train.seed)
        pv = PairVocab(vocab, vocab)
        results = {}
        for name, copying in (("plain softmax head", False), ("pointer-generator", True)):
            head_cfg = copy.deepcopy(cfg)
            enc = (
                (lambda s, t: extended_ids(vocab, s, t)[:2])
                if copying
                else (lambda s, t: (vocab.encode(s), vocab.encode(t)))
            )
            pairs = [enc(s, t) for s, t in train]
            dev = [enc(s, t) for s, t in test[:256]]
            options = {"make_model": lambda m: build_copy_model(m, UNK)} if copying else {}
            t0 = time.perf_counter()
            trainer = self.trainer(
                head_cfg,
                pv,
                pairs,
                dev,
                Path(out) / name.split()[0],
                progress=progress,
                overwrite=True,
                log=lambda *a: None,
                **options,
            )
            trainer.fit()
            r = accuracy(trainer.model, vocab, test, copying, head_cfg.decode.max_len)
            r["seconds"] = time.perf_counter() - t0
            results[name] = r
            log(
                f"{name:<20} test token accuracy {100 * r['token_acc']:5.1f}%  never-seen symbols "
                f"{100 * r['rare_acc']:5.1f}%  sequence accuracy {100 * r['seq_acc']:5.1f}%  "
                f"({head_cfg.train.steps} steps, {r['seconds']:.0f}s)"
            )
            log(f"{'':<20} e.g. {' '.join(r['example'][0])}  ->  {' '.join(r['example'][1])}")
        return results

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """The flags of `tfmr experiment copytask` and `python -m tfmr.tasks.copytask`."""
        config_flags(p, preset="copytask", data=False)
        p.add_argument(
            "--steps", type=int, help="shortcut for --set train.steps=N (the preset: 1500)"
        )
        p.add_argument(
            "--seed",
            type=int,
            help="shortcut for --set train.seed=N, which also seeds the data (the preset: 0)",
        )
        p.add_argument(
            "--out", default="runs/copytask", help="report folder (the runs of both heads)"
        )
        p.add_argument("--json", help="write the results to this file")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    def main(self, args) -> int:
        shortcuts = [
            f"train.{key}={getattr(args, key)}"
            for key in ("steps", "seed")
            if getattr(args, key) is not None
        ]
        cfg = resolve_config(args, CopyTaskConfig, overrides=shortcuts)
        out_folder(args.out)
        results = self.run(cfg, args.out, not args.no_progress)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0


TASK = CopyTask()
run, add_arguments, main = TASK.run, TASK.add_arguments, TASK.main

if (
    __name__ == "__main__"
):  # `python -m tfmr.tasks.copytask`: this file also runs as the module the command
    from tfmr.tasks.copytask import (
        TASK as registered,
    )  # line imported; that module's task holds the presets

    raise SystemExit(registered.command_line())
