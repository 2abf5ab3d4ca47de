"""The task layer: what every symbol-to-symbol task shares (G2P, the copy task, a task of your own).

A task maps a sequence of symbols to a sequence of symbols: letters to phonemes, a word to its
reverse. A source is a str (its characters are its symbols) or a tuple of symbols; a target is a
tuple of symbols, and a source may have several right targets (its references).

    PairData              the splits ({source: [target, ...]} each) and the vocabularies
    split_by_source(...)  a split by source, never by pair: md5 bucket 0-4 test, 5-9 dev, else train
    SymbolTask            subclass it with the task's name, config class, presets and data; it then
                          trains, predicts, evaluates, reports, exports, fine-tunes and runs a command
    CompiledDecoder       one source at a time through a compiled static-cache step (lowest latency)
    mean_logprobs(...)    the model's mean log-probability per symbol of given outputs (teacher-forced)
    cross_attention, save_heatmaps   the decoder's cross-attention over the source, as numbers and PNGs
    load_run(path, cls)   (model, vocab, config) of a pair checkpoint: tfmr.load, unpacked
    register(task)        the task's config class and presets added to tfmr.presets' registries

What a subclass gives (the rest has defaults):

    name, title           the command (`tfmr NAME`, `runs/NAME`) and the checkpoint kind in messages
    config_class          model, train and decode sections (seq2seq.Seq2SeqConfig) and any of its own
    presets               {name: (command, function)}; default_preset, the one `train` starts from
    load_data(cfg)        its PairData
    fold(source)          how an input is read (G2P: folded to lower case); default as it is
    items, source_units, target_units, decoded   what its sources, symbols and decoding are called
    describe_data, dev_sources, score, score_note, extra_lines, default_checkpoint, heatmap_sources
    after_training, after_export   the last lines of the train and export commands

WER is the share of sources whose output equals none of their references, PER the edit distance
to the closest reference over its length (tfmr.metrics). Training is the one loop on pairs
(seq2seq.Seq2SeqTrainer); RL fine-tuning is an objective of tfmr.objectives in that loop.
What a task's command adds beyond train | eval | export | predict (G2P's dictionary, text front
end, shipped model) stays in the task.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import checkpoint, presets
from ..builder import max_positions
from ..config import ConfigError, dumps, to_dict
from ..decode import beam_search, eval_mode
from ..folders import check_output
from ..loading import load
from ..metrics import closest_reference, per, wer
from ..programs import (
    config_flags,
    guarded,
    positive_int,
    progress_bar,
    resolve_config,
    short,
    shortened,
)
from ..runsummary import summary
from ..seq2seq import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    PairVocab,
    Seq2SeqConfig,
    Seq2SeqTrainer,
    Vocab,
    eager_attention,
    greedy_decode,
    pad_batch,
)
from .symbols_common import (  # noqa: F401 (torch-free, for the command line; re-exported here)
    FINETUNE_DEFAULTS,
    FINETUNE_RECORD,
    FINETUNE_SAMPLES,
    RL_OBJECTIVES,
    SPLITS,
    escape,
)


# ----------------------------------------------------------------------------- data
def _text(source) -> str:
    return source if isinstance(source, str) else " ".join(source)


def md5_key(source) -> str:
    """md5 of the source as UTF-8 text, in hex: the split's hash, and the order evaluation reads
    a split in (`--limit N` takes the first N). A tuple of symbols is read joined by spaces."""
    return hashlib.md5(_text(source).encode("utf-8")).hexdigest()


def bucket(source) -> int:
    """int(md5(source).hexdigest(), 16) % 100."""
    return int(md5_key(source), 16) % 100


def split_of(source) -> str:
    b = bucket(source)
    return "test" if b < 5 else "dev" if b < 10 else "train"


def split_by_source(references: dict) -> dict:
    """{source: [target, ...]} cut into the three splits by split_of (every reference of a source
    in the same split), in the order given."""
    splits: dict = {s: {} for s in SPLITS}
    for source, targets in references.items():
        splits[split_of(source)][source] = targets
    return splits


@dataclasses.dataclass
class PairData:
    """A task's data: its splits (split name -> {source: [target, ...]}) and vocabularies."""

    splits: dict
    vocab: PairVocab

    @classmethod
    def build(cls, splits: dict, **fields) -> PairData:
        """The vocabularies from the train split's symbols, sorted (the same data, the same ids)."""
        train = splits["train"]
        vocab = PairVocab(
            Vocab.build(train), Vocab.build(t for targets in train.values() for t in targets)
        )
        return cls(splits, vocab, **fields)

    def words(self, split: str) -> list:
        return list(self.splits[split])

    def pairs(self, split: str) -> list[tuple[list[int], list[int]]]:
        """(source ids, target ids) for every reference of every source of `split`."""
        src, tgt = self.vocab.src, self.vocab.tgt
        return [
            (src.encode(s), tgt.encode(t))
            for s, targets in self.splits[split].items()
            for t in targets
        ]


def load_run(path: str | Path, config_class: type):
    """(model in eval mode, PairVocab, config) of a training checkpoint or an export: tfmr.load,
    expecting `config_class` (another command's checkpoint is named as such; a run folder is
    pointed at its checkpoint)."""
    loaded = load(path, config_class, runs=False)
    return loaded.model, loaded.vocab, loaded.config


def _listed(checkpoint) -> list:
    """--checkpoint as a list: repeated (a list), once (a path) or not at all ([])."""
    if checkpoint is None:
        return []
    return list(checkpoint) if isinstance(checkpoint, (list, tuple)) else [checkpoint]


def one_model(loaded: list, sources: Sequence, weights=None):
    """The model of one loaded (model, vocab, cfg), or the Ensemble of several (`ensemble_of`)."""
    return loaded[0][0] if len(loaded) == 1 else ensemble_of(loaded, sources, weights)


def ensemble_of(loaded: list, sources: Sequence, weights=None):
    """One Ensemble of loaded (model, vocab, cfg) triples that share one vocabulary."""
    from ..ensemble import Ensemble

    vocab = loaded[0][1]
    for path, (_, other, _) in zip(sources[1:], loaded[1:]):
        if not vocab.same_symbols(other):
            raise ConfigError(
                f"{path}: its symbols differ from {sources[0]}'s; an ensemble's models share one "
                "vocabulary (train them with the same data settings)"
            )
    return Ensemble([m for m, _, _ in loaded], weights)


def register(task: SymbolTask) -> None:
    """Add the task's config class and presets to tfmr.presets (`tfmr presets`, --preset, the
    checkpoint kinds of messages). A task module calls it once, at its end."""
    presets.register(
        task.config_class, task.title, f"tfmr {task.command or task.name}", task.presets
    )


# ----------------------------------------------------------------------------- decoding one source at a time
class CompiledDecoder:
    """Greedy decoding one source at a time through a compiled static-cache step
    (fastdecode.FastDecoder with compile=True): the lowest latency for a single input, once
    compiled. Compiling takes tens of seconds once per process (the encoder once per multiple of
    16 source symbols), so this serves a process that answers many single inputs; `predict`
    (batched) is faster for many at once. The model is rebuilt with the eager attention kernel
    (the same weights and maths): compiled, its few small matrix products fuse into the step, where
    SDPA's CPU kernel keeps a fixed cost per call. Its outputs equal `predict`'s greedy ones."""

    def __init__(self, model, vocab: PairVocab, cfg, compile: bool = True):
        from ..builder import build_uninitialised
        from ..config import Choice
        from ..ensemble import Ensemble
        from ..fastdecode import FastDecoder
        from ..quantize import prepare_

        if isinstance(model, Ensemble):
            raise ConfigError(
                "the compiled one-word decoder runs one model; this is an ensemble (decode it "
                "with predict, or compile one member)"
            )
        eager = build_uninitialised(dataclasses.replace(cfg.model, kernel=Choice("eager")))
        eager = eager.to(next(model.parameters()).dtype)
        prepare_(
            eager, getattr(model, "quantized", "fp32")
        )  # the same (quantized) layers as `model`
        eager.load_state_dict(model.state_dict())  # strict: every parameter
        self.vocab, self.max_len = vocab, cfg.decode.max_len
        self.decoder = FastDecoder(eager.eval(), 1, self.max_len + 1, compile=compile)
        self.start = torch.full((1, 1), BOS, dtype=torch.long)

    def __call__(self, source) -> list[str]:
        src = pad_batch([self.vocab.src.encode(source)])  # (1, S)
        ids = self.decoder.generate(self.start, self.max_len, eos_id=EOS, src=src, check_every=1)[
            0, 1:
        ].tolist()
        return self.vocab.tgt.decode(ids)  # stops at </s>


def _scored(model, src, beam_size, max_len, length_penalty):
    """(ids, mean log-probability per symbol, </s> included, or None without </s>) of each row:
    beam search keeps its hypotheses' scores (beam 1 is greedy decoding)."""
    start = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    nb = beam_search(
        model,
        start,
        beam_size,
        max_len,
        eos_id=EOS,
        length_penalty=length_penalty,
        src=src,
        n_best=1,
    )
    lengths = nb.lengths[:, 0].double()  # (B,) generated symbols, </s> included
    sums = nb.scores[:, 0].double() * lengths.pow(length_penalty)  # undo the length penalty
    rows = [row[1 : 1 + n] for row, n in zip(nb.ids[:, 0].tolist(), nb.lengths[:, 0].tolist())]
    ended = [bool(row) and row[-1] == EOS for row in rows]
    means = [m if e else None for m, e in zip((sums / lengths).tolist(), ended)]
    return rows, means  # Vocab.decode stops at </s>


@torch.inference_mode()
def mean_logprobs(
    model, vocab: PairVocab, sources: Sequence, outputs: Sequence[Sequence], batch_size: int = 256
) -> list[float]:
    """The mean log-probability per output symbol (and </s>) that `model` gives each source's
    output, teacher-forced: one forward pass per batch."""
    device = next(model.parameters()).device
    eval_mode(model)
    out: list[float] = []
    for i in range(0, len(sources), batch_size):
        src = pad_batch([vocab.src.encode(s) for s in sources[i : i + batch_size]], device)
        rows = [vocab.tgt.encode(list(o)) for o in outputs[i : i + batch_size]]
        tgt = pad_batch([[BOS] + r for r in rows], device)  # (B, T)
        gold = pad_batch([r + [EOS] for r in rows], device)  # (B, T)
        logp = model(src, tgt).logits.float().log_softmax(-1)  # (B, T, V)
        picked = logp.gather(-1, gold.unsqueeze(-1)).squeeze(-1)  # (B, T)
        mask = (gold != PAD).float()
        out.extend(((picked * mask).sum(1) / mask.sum(1)).tolist())
    return out


def _beam(model, src, beam_size, max_len, length_penalty) -> list[list[int]]:
    start = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    ids = beam_search(
        model, start, beam_size, max_len, eos_id=EOS, length_penalty=length_penalty, src=src
    )
    return [row[1:] for row in ids.tolist()]  # drop <s>; Vocab.decode stops at </s>


# ----------------------------------------------------------------------------- heatmaps
@torch.no_grad()
def cross_attention(model, vocab: PairVocab, source, target: Sequence[str]) -> torch.Tensor:
    """(layers, T, S) head-averaged cross-attention while reading `target` + </s> for `source`."""
    device = next(model.parameters()).device
    src = torch.tensor([vocab.src.encode(source)], device=device)
    tgt = torch.tensor([[BOS] + vocab.tgt.encode(target)], device=device)
    with eager_attention(model):
        out = model(src, tgt)
    return torch.stack([a[0].float().mean(0) for a in out.cross_attentions]).cpu()  # (L, T, S)


def save_heatmaps(model, vocab: PairVocab, predictions: dict, directory: str | Path) -> list[Path]:
    """One PNG per source: the last decoder layer's cross-attention (rows: the output's symbols,
    columns: the source's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for source, target in predictions.items():
        attn = cross_attention(model, vocab, source, target)[-1]  # (T, S)
        fig, ax = plt.subplots(figsize=(0.45 * len(source) + 1.6, 0.35 * (len(target) + 1) + 1.2))
        ax.imshow(attn.numpy(), cmap="viridis", aspect="auto", vmin=0.0)
        ax.set_xticks(range(len(source)), list(source))
        ax.set_yticks(range(len(target) + 1), list(target) + [SPECIALS[2]])
        ax.set_title(f"{_text(source)}: cross-attention, last layer", fontsize=9)
        fig.tight_layout()
        path = directory / f"{re.sub(r'[^a-z]', '_', _text(source))}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- RL fine-tuning settings
# (the settings themselves, RL_OBJECTIVES, FINETUNE_DEFAULTS, ..., are in symbols_common.py)
def finetune_overrides(objective: str, reward: str) -> list[str]:
    """The --set assignments a fine-tuning run starts from (FINETUNE_DEFAULTS and the objective)."""
    from ..objectives import REWARDS

    if objective not in RL_OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; valid: {', '.join(RL_OBJECTIVES)}")
    if reward not in REWARDS:
        raise ConfigError(f"unknown reward {reward!r}; valid: {', '.join(REWARDS)}")
    kind = RL_OBJECTIVES[objective]
    return [
        *FINETUNE_DEFAULTS,
        f"train.objective={kind}",
        f"train.objective.reward={reward}",
        f"train.objective.samples={FINETUNE_SAMPLES[kind]}",
    ]


def side_by_side(record: dict) -> str:
    """The test results before and after fine-tuning, one row per decoder."""
    words = next(iter(record["before"].values()))["words"]
    rows = [f"test ({words:,} words)   WER before  WER after   PER before  PER after"]
    for name, b in record["before"].items():
        a = record["after"].get(name, {})
        rows.append(
            f"  {name:<18} {100 * b['wer']:9.2f}% {100 * a.get('wer', float('nan')):9.2f}%  "
            f"{100 * b['per']:9.2f}% {100 * a.get('per', float('nan')):9.2f}%"
        )
    return "\n".join(rows)


def _loader(source: Path):
    """make_model for Seq2SeqTrainer: the model built from its config, with `source`'s weights."""
    from ..builder import build_model

    def make(model_cfg):
        model = build_model(model_cfg)
        checkpoint.load_weights(source, model)
        return model

    return make


# ----------------------------------------------------------------------------- the task
class SymbolTask:
    """A symbol-to-symbol task: subclass it (see the module docstring), make one instance, and
    `register` it. Methods take the data, config and model explicitly; the task holds no state."""

    name = ""  # the command (`tfmr NAME`) and the default run folder (runs/NAME)
    command = (
        ""  # the `tfmr` command words when they are not NAME (the copy task: `experiment copytask`)
    )
    title = ""  # the checkpoint kind in messages ("a G2P checkpoint")
    config_class: type = Seq2SeqConfig
    presets: dict[str, tuple[str, Callable]] = {}
    default_preset = ""
    items, source_units, target_units = "sources", "source symbols", "target symbols"
    decoded = "decoded"  # the export check's verb ("pronounced" for G2P)
    heatmap_sources: tuple = ()  # drawn by `report` before the split's first few

    # ------------------------------------------------------------------ what a task gives
    def load_data(self, cfg) -> PairData:
        raise NotImplementedError

    def fold(self, source):
        """An input as the model reads it (G2P: lower case)."""
        return source

    def describe_data(self, data: PairData, cfg, pairs: int) -> str:
        """The data line of a training run (after "data: ")."""
        n = {s: len(data.splits[s]) for s in SPLITS}
        return (
            f"{n['train']:,} train / {n['dev']:,} dev / {n['test']:,} test {self.items}, {pairs:,} training pairs, "
            f"{len(data.vocab.src) - len(SPECIALS)} {self.source_units} -> "
            f"{len(data.vocab.tgt) - len(SPECIALS)} {self.target_units}"
        )

    def dev_sources(self, cfg) -> int:
        """Dev sources decoded (greedy) at each evaluation for dev WER / PER; 0 for none."""
        return cfg.train.eval_pairs

    def score_note(self, result: dict, data: PairData) -> str:
        """More numbers on a result's line of `report` (G2P: the scores with stress left out)."""
        return ""

    def extra_lines(self, result: dict, data: PairData, split: str, model=None) -> list[str]:
        """Lines `report` prints after a result's (G2P: the words it composes from the dictionary
        instead, which may ask `model`); may add to `result`."""
        return []

    def default_checkpoint(self) -> Path:
        """The model used when no checkpoint is given (G2P: the shipped one)."""
        raise ConfigError(
            f"give --checkpoint DIR: a checkpoint or an export of `tfmr {self.name} train`"
        )

    # ------------------------------------------------------------------ models and predictions
    def load_model(self, path: str | Path):
        """(model, PairVocab, config) of a checkpoint or an export of this task."""
        return load_run(path, self.config_class)

    @torch.inference_mode()
    def predict(
        self,
        model,
        vocab: PairVocab,
        sources: Sequence,
        beam_size: int = 1,
        max_len: int = 40,
        batch_size: int = 500,
        length_penalty: float = 1.0,
        progress: str = "",
        scored: bool = False,
    ):
        """The output of each source (in the order given): greedy with beam_size 1, else beam search;
        with `progress`, a bar of that name counts the sources decoded (programs.progress_bar).
        `scored`: (outputs, means), each output's mean log-probability per symbol, </s> included,
        from the search itself (None for one that ran to max_len without </s>).

        Sources are decoded in batches of similar length (sorted by length): a batch decodes until
        its longest output ends, so a short source no longer waits for a long one, and the encoder
        reads little padding. On G2P's test split this made greedy decoding 2.2x faster than
        batches in md5 order (1,100 -> 2,400 words/s, a g2p-small-sized model, 2 CPU threads), with
        the same outputs (each row is decoded on its own: the padding is masked out). Batches of 250
        to 2,000 words ran at the same speed. `batch_size` counts decoder rows, so beam search
        takes batch_size / beam_size sources at a time: at 1,000-5,000 rows a step's attention
        and bookkeeping cost more than its matrices (the shipped G2P model, beam 5, 2 threads,
        3,000 test words: 160-170 words/s at 1,000 words a batch, 250 at 500, 270-275 at 250,
        240-300 at 100-125)."""
        device = next(model.parameters()).device  # (the decoders put the model in eval mode)
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out: list[list[str]] = [[] for _ in sources]
        means: list[float | None] = [None for _ in sources]
        with progress_bar(len(sources), progress, self.items, enabled=bool(progress)) as bar:
            per_batch = max(1, batch_size // max(1, beam_size))  # a source's beams are rows
            for i in range(0, len(order), per_batch):
                rows = order[i : i + per_batch]
                src = pad_batch([vocab.src.encode(self.fold(sources[j])) for j in rows], device)
                if scored:
                    ids, batch_means = _scored(model, src, beam_size, max_len, length_penalty)
                    for j, mean in zip(rows, batch_means):
                        means[j] = mean
                elif beam_size <= 1:
                    ids = greedy_decode(model, src, max_len)
                else:
                    ids = _beam(model, src, beam_size, max_len, length_penalty)
                for j, row in zip(rows, ids):
                    out[j] = vocab.tgt.decode(row)
                bar.update(len(rows))
        return (out, means) if scored else out

    def evaluate(
        self,
        model,
        data: PairData,
        split: str = "test",
        beam_size: int = 1,
        max_len: int = 40,
        batch_size: int = 500,
        limit: int | None = None,
        progress: str = "",
    ) -> dict:
        """WER and PER of `model` on `split` (its first `limit` sources in md5 order when given):
        the scores, "words" (how many sources), "seconds" and "predictions" ({source: output}).
        `progress`: the name of a progress bar while decoding (none when empty)."""
        sources = sorted(data.splits[split], key=md5_key)[:limit]
        t0 = time.perf_counter()
        hyps = self.predict(
            model, data.vocab, sources, beam_size, max_len, batch_size, progress=progress
        )
        seconds = time.perf_counter() - t0
        predictions = dict(zip(sources, hyps))
        return {
            **self.score(predictions, data, split),
            "words": len(sources),
            "seconds": seconds,
            "predictions": predictions,
        }

    def score(self, predictions: dict, data: PairData, split: str) -> dict:
        """WER and PER of {source: output} against `split`'s references."""
        sources = list(predictions)
        hyps = [list(predictions[s]) for s in sources]
        refs = [[list(t) for t in data.splits[split][s]] for s in sources]
        return {"wer": wer(hyps, refs), "per": per(hyps, refs)}

    def agreement(
        self, model_a, vocab_a: PairVocab, model_b, vocab_b: PairVocab, sources: Sequence
    ) -> float:
        """The share of `sources` two models decode the same way (greedy)."""
        a, b = self.predict(model_a, vocab_a, sources), self.predict(model_b, vocab_b, sources)
        return sum(x == y for x, y in zip(a, b)) / max(len(sources), 1)

    def show_examples(
        self, result: dict, data: PairData, split: str, sources: Sequence, out=print
    ) -> None:
        refs = data.splits[split]
        for s in sources:
            hyp = result["predictions"][s]
            ok = list(hyp) in [list(t) for t in refs[s]]
            _, closest = closest_reference(hyp, [list(t) for t in refs[s]])
            out(
                f"  {'ok   ' if ok else 'WRONG'} {_text(s):<16} {' '.join(hyp):<32} reference: {' '.join(closest)}"
            )

    # ------------------------------------------------------------------ the jobs
    def dev_metric(self, data: PairData, n: int):
        """A callable for Seq2SeqTrainer: greedy WER / PER on the first `n` dev sources (md5 order)."""

        def metric(model) -> dict:
            if n <= 0:
                return {}
            r = self.evaluate(model, data, "dev", beam_size=1, limit=n)
            return {"dev_wer": r["wer"], "dev_per": r["per"]}

        return metric

    def trainer(
        self,
        cfg,
        vocab: PairVocab,
        train_pairs: Sequence,
        dev_pairs: Sequence,
        out: str | Path,
        data: PairData | None = None,
        **options,
    ) -> Seq2SeqTrainer:
        """The one loop on the task's id pairs; with `data`, dev WER / PER on its first
        `dev_sources(cfg)` dev sources at each evaluation. `options` are Seq2SeqTrainer's (resume,
        progress, log, overwrite, make_model)."""
        metric = None if data is None else self.dev_metric(data, self.dev_sources(cfg))
        return Seq2SeqTrainer(cfg, vocab, train_pairs, dev_pairs, out, dev_metric=metric, **options)

    def train(
        self,
        cfg,
        out: str | Path,
        resume: bool = False,
        progress: bool = True,
        log=print,
        overwrite: bool = False,
        verbose: bool = False,
    ):
        """Train (or resume) a model; returns (trainer, data). Before the first step it logs a short
        summary (tfmr.runsummary); `verbose`: the whole resolved config first."""
        check_output(
            out, "run", overwrite=overwrite, resume=resume
        )  # before the data is read (tfmr.folders)
        t0 = time.perf_counter()
        data = self.load_data(cfg)
        pairs = self.train_pairs(data, cfg, Path(out), resume, log)
        log(f"data: {self.describe_data(data, cfg, len(pairs))}; {time.perf_counter() - t0:.1f}s")
        trainer = self.trainer(
            cfg,
            data.vocab,
            pairs,
            data.pairs("dev"),
            out,
            data,
            resume=resume,
            progress=progress,
            log=log,
            overwrite=overwrite,
        )  # resuming, the saved model and data sections win
        if verbose:
            log("resolved config:\n" + dumps(trainer.cfg))
        for line in summary(trainer):
            log(line)
        trainer.fit()
        return trainer, data

    def train_pairs(self, data: PairData, cfg, out: Path, resume: bool, log=print) -> list:
        """The (source ids, target ids) pairs a run trains on: the train split's (a task may put
        other targets in their place, as G2P's sequence-level distillation does)."""
        return data.pairs("train")

    def report(
        self,
        model,
        data: PairData,
        cfg,
        out: str | Path | None,
        split: str = "test",
        beams: Sequence[int] = (1,),
        log=print,
        heatmap_words: Sequence | None = None,
        limit: int | None = None,
    ) -> dict:
        """Evaluate on `split` with each beam size, print WER / PER and examples, save heatmaps
        (OUT/heatmaps, unless `out` is None). The results without their predictions, by decoder."""
        results = {}
        for beam in beams:
            name = "greedy" if beam <= 1 else f"beam {beam}"
            r = self.evaluate(
                model,
                data,
                split,
                beam_size=beam,
                max_len=cfg.decode.max_len,
                batch_size=cfg.decode.batch_size,
                limit=limit,
                progress=f"{split}, {name}",
            )
            log(
                f"{split} ({r['words']:,} {self.items}), {name:<7}: "
                f"WER {100 * r['wer']:.2f}%  PER {100 * r['per']:.2f}%"
                f"{self.score_note(r, data)}  ({r['seconds']:.1f}s)"
            )
            results[name] = r
            for line in self.extra_lines(r, data, split, model):
                log(line)
        best = results[list(results)[-1]]
        log(f"examples from the {split} split:")
        self.show_examples(best, data, split, list(best["predictions"])[:12], log)
        if out is not None:
            sources = list(self.heatmap_sources if heatmap_words is None else heatmap_words)
            sources += list(best["predictions"])[:4]
            paths = save_heatmaps(
                model,
                data.vocab,
                dict(zip(sources, self.predict(model, data.vocab, sources))),
                Path(out) / "heatmaps",
            )
            log(f"cross-attention heatmaps: {paths[0].parent}/ ({len(paths)} PNGs)")
        return {k: {m: v for m, v in r.items() if m != "predictions"} for k, r in results.items()}

    def export(
        self,
        source: str | Path | Sequence[str | Path],
        out: str | Path,
        dtype: torch.dtype = torch.float16,
        overwrite: bool = False,
        weights: Sequence[float] | None = None,
    ) -> Path:
        """Write the model of checkpoint `source` (a training checkpoint or an export) to `out` as
        weights in `dtype` (fp16: 2 bytes per parameter), vocab.json, config.json, export.json and
        the sha256 manifest (tfmr.checkpoint.export; an earlier export in `out` is replaced only
        with `overwrite`). Several sources are one ensemble (tfmr.ensemble, mean probability,
        `weights` default equal): one vocab.json, the first one's config.json and ensemble.json
        with every member's config; tfmr.load reads it back as the Ensemble. Returns `out`."""
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        loaded = [self.load_model(s) for s in sources]
        return self._export_loaded(loaded, sources, out, dtype, overwrite, weights)[0]

    def _export_loaded(
        self,
        loaded: list,
        sources: Sequence,
        out,
        dtype=torch.float16,
        overwrite=False,
        weights=None,
    ) -> tuple:
        """`export` of models already loaded ((model, vocab, cfg) per source): (the folder written,
        the model it holds (an Ensemble for several), its vocabulary). The model is left as it was
        (fp32): the export writes a copy."""
        resolved = [checkpoint.resolve(s) for s in sources]
        _, vocab, cfg = loaded[0]
        model, ensemble = one_model(loaded, resolved, weights), None
        if len(loaded) > 1:
            ensemble = {
                "members": [to_dict(c) for _, _, c in loaded],
                "weights": list(weights) if weights else None,
                "combine": "prob",
            }
        info = {
            "source": ", ".join(f"{s.parent.name}/{s.name}" for s in resolved),
            "parameters": sum(p.numel() for p in model.parameters()),
            "step": checkpoint.saved_step(resolved[0]) if len(resolved) == 1 else None,
        }
        averaged = checkpoint.averaged_from(resolved[0]) if len(resolved) == 1 else None
        if averaged:  # the mean of several checkpoints: which, and their steps
            info["averaged_from"] = averaged
        written = checkpoint.export(
            out,
            model,
            to_dict(cfg),
            vocab,
            dtype,
            info,
            overwrite=overwrite,
            sources=tuple(resolved),
            ensemble=ensemble,
        )
        return written, model, vocab

    def test_results(
        self, model, data: PairData, cfg, beams: Sequence[int], limit: int | None
    ) -> dict:
        """{"greedy" | "beam K": {"wer", "per", "words"}} on the test split."""
        out = {}
        for beam in beams:
            name = "greedy" if beam <= 1 else f"beam {beam}"
            r = self.evaluate(
                model,
                data,
                "test",
                beam,
                cfg.decode.max_len,
                cfg.decode.batch_size,
                limit=limit,
                progress=f"test, {name}",
            )
            out[name] = {k: r[k] for k in ("wer", "per", "words")}
        return out

    def finetune(
        self,
        source: str | Path | None,
        objective: str,
        reward: str,
        out: str | Path,
        sets: Sequence[str] = (),
        resume: bool = False,
        overwrite: bool = False,
        limit: int | None = None,
        beams: Sequence[int] | None = None,
        progress: bool = True,
        log=print,
        before: dict | None = None,
    ) -> dict:
        """Fine-tune a model with an RL objective (tfmr.objectives) in the one training loop, and
        evaluate it on the test split before and after (greedy and the model's beam).

        `source`: a training checkpoint or an export; None is `default_checkpoint()`. The config is
        the source's, then the fine-tuning defaults, then `sets`. With `resume` the run in `out`
        continues (its saved config, then `sets`), and the "before" results are read back from
        OUT/finetune.json; `before` gives them (the same source, beams and limit) instead of
        testing the source model again. "after" tests the weights of the lowest dev number when
        `train.keep_best` is set (the default: dev_wer; they may be the starting weights). Returns
        that record: {"source", "objective", "reward", "before", "after", "steps", "best"}."""
        out, limit = Path(out), short("words", limit)  # TFMR_DOCS_SHORT: a few test words
        check_output(
            out, "run", overwrite=overwrite, resume=resume
        )  # before the source is tested (tfmr.folders)
        record_path = out / FINETUNE_RECORD
        if resume:
            if not record_path.exists():
                raise ConfigError(
                    f"nothing to resume: {record_path} does not exist (not a {self.name} finetune run)"
                )
            record = json.loads(record_path.read_text())
            cfg = shortened(
                presets.resolve(
                    None, overrides=list(sets), cls=self.config_class, saved=out / "checkpoint"
                )
            )
            vocab, options = PairVocab.load(out / "checkpoint"), {}
        else:
            source = self.default_checkpoint() if source is None else source
            base, vocab, _ = self.load_model(source)
            source = checkpoint.resolve(source)
            cfg = shortened(
                presets.resolve(
                    None,
                    overrides=[*finetune_overrides(objective, reward), *sets],
                    cls=self.config_class,
                    saved=source,
                )
            )
            record = {"source": str(source), "objective": objective, "reward": reward}
            options = {"make_model": _loader(source)}
        beams = sorted(set(beams)) if beams else sorted({1, cfg.decode.beam_size})
        data = dataclasses.replace(self.load_data(cfg), vocab=vocab)  # the checkpoint's own ids
        if not resume:
            if before is None:
                log(f"testing the model of {source} before fine-tuning ...")
            record["before"] = before or self.test_results(base, data, cfg, beams, limit)
        trainer = self.trainer(
            cfg,
            vocab,
            data.pairs("train"),
            data.pairs("dev"),
            out,
            data,
            resume=resume,
            progress=progress,
            log=log,
            overwrite=overwrite,
            **options,
        )
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=1))
        trainer.fit()
        if trainer.best is not None:  # train.keep_best: test the weights of the best dev number
            checkpoint.load_weights(out / "best", trainer.model)
            record["best"] = {"metric": cfg.train.keep_best, **trainer.best}
            log(
                f"testing the weights of step {trainer.best['step']} (lowest {cfg.train.keep_best}, "
                f"{trainer.best['value']:.4f}) ..."
            )
        record["after"] = self.test_results(trainer.model.eval(), data, cfg, beams, limit)
        record["steps"] = trainer.step
        record_path.write_text(json.dumps(record, indent=1))
        return record

    # ------------------------------------------------------------------ the command
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """The flags of the task's command: ACTION [SOURCE ...], the config flags and the rest."""
        p.add_argument("action", choices=("train", "eval", "export", "predict"))
        p.add_argument(
            "sources", nargs="*", metavar="SOURCE", help=f"predict: the {self.items} to decode"
        )
        config_flags(p, preset=self.default_preset, data=False)
        p.add_argument(
            "--out",
            help=f"train: the run folder (default runs/{self.name}); eval: where heatmaps go; "
            "export: the folder to write",
        )
        p.add_argument(
            "--checkpoint", help="eval / export / predict: a training checkpoint or an export"
        )
        p.add_argument(
            "--resume", action="store_true", help="train: continue the run saved in --out"
        )
        p.add_argument(
            "--overwrite", action="store_true", help="train: start over; export: replace an export"
        )
        p.add_argument("--split", default="test", choices=SPLITS, help="eval: which split")
        p.add_argument(
            "--beam",
            type=positive_int,
            action="append",
            help="beam size (1 = greedy); repeatable for eval and train (default 1 and the model's)",
        )
        p.add_argument(
            "--limit",
            type=positive_int,
            help="eval: only the first N sources of the split (md5 order)",
        )
        p.add_argument("--no-eval", action="store_true", help="train: skip the test-set evaluation")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument(
            "-v", "--verbose", action="store_true", help="train: print the whole resolved config"
        )

    def main(self, args) -> int:
        if args.sources and args.action != "predict":
            raise ConfigError(
                f"{self.name} {args.action} takes no {self.items} (got {args.sources[0]!r})"
            )
        actions = {
            "train": self.train_command,
            "eval": self.eval_command,
            "export": self.export_command,
            "predict": self._predict_command,
        }
        return actions[args.action](args)

    def command_line(self, argv: Sequence[str] | None = None) -> int:
        """Parse `argv` and run the command: 0, or 2 with one line for a user's mistake."""
        parser = argparse.ArgumentParser(
            prog=f"tfmr {self.name}", description=f"the {self.title} task"
        )
        self.add_arguments(parser)
        return guarded(
            self.main, parser.parse_intermixed_args(argv)
        )  # SOURCE ... may follow options

    def _beams(self, cfg, asked: Sequence[int] | None) -> list[int]:
        return sorted(set(asked)) if asked else sorted({1, cfg.decode.beam_size})

    def train_command(self, args) -> int:
        """`tfmr TASK train`: train (or --resume) the run in --out, then report the test split."""
        t0 = time.perf_counter()
        out = args.out or f"runs/{self.name}"
        cfg = resolve_config(
            args, self.config_class, saved=Path(out) / "checkpoint" if args.resume else None
        )
        trainer, data = self.train(
            cfg,
            out,
            resume=args.resume,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            verbose=args.verbose,
        )
        print(
            f"checkpoint: {trainer.ckpt_dir}  (trained {trainer.seconds / 60:.1f} min, "
            f"{trainer.step} steps, epoch {trainer.batches.epoch})"
        )
        results = None
        if not args.no_eval:
            beams = self._beams(cfg, args.beam)
            results = self.report(
                trainer.model.eval(), data, cfg, out, "test", beams, limit=short("words")
            )
        for line in self.after_training(trainer, data, cfg, results, time.perf_counter() - t0):
            print(line)
        return 0

    def after_training(self, trainer, data: PairData, cfg, results: dict | None, seconds: float):
        """Lines `train_command` prints last (`results`: the test report, None with --no-eval)."""
        return []

    def eval_command(self, args) -> int:
        """`tfmr TASK eval`: WER / PER on a split of --checkpoint (repeated: one ensemble; none:
        the task's default model), greedy and with the beams asked for."""
        given = _listed(args.checkpoint) or [self.default_checkpoint()]
        loaded = [self.load_model(s) for s in given]
        model, (_, vocab, cfg) = one_model(loaded, given), loaded[0]
        data = dataclasses.replace(self.load_data(cfg), vocab=vocab)
        beams, limit = self._beams(cfg, args.beam), short("words", args.limit)
        self.report(model, data, cfg, args.out, args.split, beams, limit=limit)
        return 0

    def export_command(self, args) -> int:
        """`tfmr TASK export`: write the --checkpoint model(s) to --out as one fp16 folder, then
        check the export decodes 500 dev sources as the fp32 model does."""
        if not args.checkpoint or not args.out:
            raise ConfigError(
                f"{self.name} export needs --checkpoint (the model) and --out DIR (where to write it)"
            )
        given = _listed(args.checkpoint)
        loaded = [self.load_model(s) for s in given]  # each source read once
        out, original, vocab = self._export_loaded(
            loaded, given, args.out, overwrite=args.overwrite
        )
        size = (out / "model.safetensors").stat().st_size
        total = sum(p.stat().st_size for p in out.iterdir())
        members = f" ({len(given)} models, one ensemble)" if len(given) > 1 else ""
        print(
            f"exported {sum(p.numel() for p in original.parameters()):,} parameters{members} as "
            f"float16 to {out}: model.safetensors {size / 1e6:.2f} MB, {total / 1e6:.2f} MB in "
            f"all, sha256 of every file in {out / checkpoint.MANIFEST}"
        )
        exported, exported_vocab, _ = self.load_model(out)
        sources = sorted(self.load_data(loaded[0][2]).splits["dev"], key=md5_key)[:500]
        same = self.agreement(original, vocab, exported, exported_vocab, sources)
        print(
            f"check: {100 * same:.1f}% of {len(sources)} dev {self.items} are {self.decoded} as "
            "the fp32 checkpoint does (greedy)"
        )
        for line in self.after_export(out, given):
            print(line)
        return 0

    def after_export(self, out: Path, sources: Sequence) -> list[str]:
        """Lines `export_command` prints last (G2P: how to ship the export)."""
        return []

    def _predict_command(self, args) -> int:
        if not args.sources:
            raise ConfigError(f"give one or more {self.items} to decode")
        model, vocab, cfg = self.load_model(args.checkpoint or self.default_checkpoint())
        sources = [self.fold(s) for s in args.sources]
        self.check_sources(sources, vocab, cfg)
        beam = (args.beam or [cfg.decode.beam_size])[-1]
        outputs = self.predict(
            model,
            vocab,
            sources,
            beam,
            cfg.decode.max_len,
            cfg.decode.batch_size,
            cfg.decode.length_penalty,
        )
        for given, output in zip(args.sources, outputs):
            print(f"{escape(given)}\t{' '.join(output)}")
        return 0

    def check_sources(self, sources: Sequence, vocab: PairVocab, cfg) -> None:
        """Refuse (ConfigError, one line) a source with a symbol outside the model's input
        vocabulary, or longer than its learned positions reach."""
        known = set(vocab.src.itos[len(SPECIALS) :])
        for s in sources:
            unknown = sorted(set(s) - known)
            if unknown:
                raise ConfigError(
                    f"{_text(s)!r} has {', '.join(map(repr, unknown))}, not in the model's "
                    f"{self.source_units} ({len(known)} of them)"
                )
            if max_positions(cfg.model) is not None and len(s) > cfg.model.context:
                raise ConfigError(
                    f"{_text(s)!r} has {len(s)} {self.source_units}; this model reads at most "
                    f"{cfg.model.context}"
                )
