"""`tfmr g2p`: grapheme-to-phoneme on CMUdict (the task is tfmr/tasks/g2p.py).

    tfmr g2p train [--preset g2p-small] [--config FILE] [--set key=value ...] [--out DIR] [--resume]
    tfmr g2p eval --checkpoint DIR [--split test] [--beam K ...] [--limit N]
    tfmr g2p [predict] --checkpoint DIR WORD ...

`train` resolves its config like every command (preset, or with --resume the run's saved
config, then --config, then each --set), trains, then reports test WER / PER greedy and with
the preset's beam; `eval` reports on a split; words alone mean predict.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..builder import max_positions
from ..config import ConfigError
from ..presets import G2PConfig, names
from ..seq2seq import load_run
from ..tasks.g2p import SPLITS, WORD, lexicon, load_data, predict, report, split_of, train
from .common import config_flags, resolve_config


def add_parser(sub) -> None:
    """The `tfmr g2p` command: train | eval | predict WORD... (or just `--checkpoint DIR WORD...`)."""
    p = sub.add_parser("g2p", help="grapheme-to-phoneme on CMUdict: train | eval | predict words",
                       description="tfmr g2p train [--preset g2p-small] | tfmr g2p eval --checkpoint DIR | "
                                   "tfmr g2p --checkpoint DIR word ...")
    p.add_argument("action", nargs="*", metavar="train|eval|predict|WORD",
                   help="what to do; words alone mean predict")
    config_flags(p, preset="g2p-small", data=False,
                 preset_help=f"train: one of {', '.join(names(G2PConfig))} (with --resume the run's saved config "
                             "is used)")
    p.add_argument("--out", default="runs/g2p", help="train: run folder; eval: where heatmaps go")
    p.add_argument("--resume", action="store_true", help="train: continue the run saved in --out")
    p.add_argument("--overwrite", action="store_true", help="train: start over in an --out that holds a run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-eval", action="store_true", help="train: skip the test-set evaluation")
    p.add_argument("--checkpoint", help="eval / predict: a checkpoint folder (RUN/checkpoint)")
    p.add_argument("--split", default="test", choices=SPLITS, help="eval: which split")
    p.add_argument("--beam", type=int, action="append", help="beam size (repeatable; 1 = greedy)")
    p.add_argument("--limit", type=int, help="eval: only the first N words of the split (md5 order)")
    p.set_defaults(func=run)


def run(args) -> int:
    action, rest = (args.action[0], args.action[1:]) if args.action else ("", [])
    if action == "train":
        if args.checkpoint:
            raise ConfigError("g2p train does not read --checkpoint; to pronounce the word 'train' write "
                              f"`tfmr g2p predict --checkpoint {args.checkpoint} train`")
        return run_train(args)
    if action not in ("eval", "predict"):
        action, rest = "predict", list(args.action)
    if not args.checkpoint:
        raise ConfigError(f"g2p {action} needs --checkpoint DIR (a folder written by `tfmr g2p train`)")
    if action == "eval":
        return run_eval(args)
    if not rest:
        raise ConfigError("g2p predict: give one or more words")
    return run_predict(args, rest)


def _beams(cfg: G2PConfig, asked: Sequence[int] | None) -> list[int]:
    return sorted(set(asked)) if asked else sorted({1, cfg.decode.beam_size})


def run_train(args) -> int:
    t0 = time.perf_counter()
    cfg = resolve_config(args, G2PConfig, saved=Path(args.out) / "checkpoint" if args.resume else None)
    trainer, data = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    trained = trainer.seconds
    print(f"checkpoint: {trainer.ckpt_dir}  (trained {trained / 60:.1f} min, {trainer.step} steps, "
          f"epoch {trainer.batches.epoch})")
    if not args.no_eval:
        report(trainer.model.eval(), data, cfg, args.out, "test", _beams(cfg, args.beam))
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min. Try your own words:\n"
          f"  tfmr g2p --checkpoint {trainer.ckpt_dir} hello transformer")
    return 0


def run_eval(args) -> int:
    model, _, cfg = load_run(args.checkpoint, G2PConfig)
    data = load_data(cfg.data.stress)
    report(model, data, cfg, args.out, args.split, _beams(cfg, args.beam), limit=args.limit)
    return 0


def run_predict(args, words: Sequence[str]) -> int:
    model, vocab, cfg = load_run(args.checkpoint, G2PConfig)
    bad = [w for w in words if not WORD.match(w.lower())]
    if bad:
        raise ConfigError(f"G2P reads words of letters a-z and apostrophes; cannot read {bad}")
    long = [w for w in words if len(w) > cfg.model.context]
    if long and max_positions(cfg.model) is not None:
        raise ConfigError(f"this model reads words of up to {cfg.model.context} letters; {long[0]!r} is longer")
    beam = (args.beam or [cfg.decode.beam_size])[-1]
    lex = lexicon(cfg.data.stress)
    for w, phones in zip(words, predict(model, vocab, [w.lower() for w in words], beam, cfg.decode.max_len)):
        known = lex.get(w.lower())
        note = f"   (CMUdict, {split_of(w.lower())} split: {' | '.join(' '.join(p) for p in known)})" if known else ""
        print(f"{w:<16} {' '.join(phones)}{note}")
    return 0
