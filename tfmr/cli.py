"""The `tfmr` command line: train, generate, bench, tokenizer (and more as issues land).

Common flags: --preset NAME, --config FILE (YAML/TOML), --set key=value (repeatable),
--out DIR, --resume. User mistakes (a bad key, a missing file, a tampered checkpoint) print one
line, `tfmr: error: ...`, and exit with code 2; no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DataError

USER_ERRORS = (ConfigError, DataError, CheckpointError, FileNotFoundError)


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="starting configuration (see `tfmr presets`)")
    p.add_argument("--config", help="YAML or TOML file overlaid on the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set model.heads=8 (repeatable)")
    p.add_argument("--data", help="shortcut for --set data.path=PATH")


def resolve_config(args):
    """Preset, then config file, then --data, then each --set in order."""
    from . import presets
    from .config import apply_override, load_file, merge_into

    cfg = presets.get(args.preset)
    if args.config:
        merge_into(cfg, load_file(args.config))
    if getattr(args, "data", None):
        cfg.data.path = args.data
    for assignment in args.set:
        apply_override(cfg, assignment)
    return cfg


# ---------------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from .builder import validate
    from .train import Trainer, describe

    cfg = resolve_config(args)
    validate(cfg.model)
    print(describe(cfg))
    trainer = Trainer(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(trainer.model)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(f"checkpoint: {trainer.ckpt_dir}\nmetrics:    {args.out}/metrics.jsonl\nloss curve: {args.out}/loss.png")
    s = cfg.sample
    for i in range(s.num_samples):
        print(f"\n--- sample {i + 1} (temperature {s.temperature}, top-k {s.top_k}) ---")
        _stream_text(trainer.model, trainer.data.tokenizer, s.prompt, s.max_new_tokens, s.temperature,
                     s.top_k, None, seed=cfg.train.seed + i)
    return 0


def _stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed) -> str:
    """Generate and print text as it is produced; returns the continuation."""
    import torch

    from .decode import stream

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one character")
    sys.stdout.write(prompt)
    new: list[int] = []
    shown = ""
    for tok in stream(model, ids, max_new_tokens, temperature, top_k, top_p, seed=seed):
        new.append(int(tok[0]))
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text
    sys.stdout.write("\n")
    return tokenizer.decode(new)


def load_model(checkpoint_dir):
    """(model, tokenizer, RunConfig) from a checkpoint folder."""
    from . import checkpoint
    from .builder import build_model
    from .config import RunConfig, from_dict
    from .tokenizers import load as load_tokenizer

    directory = checkpoint.verify(checkpoint_dir)
    cfg = from_dict(RunConfig, checkpoint.read_config(directory))
    model = build_model(cfg.model)
    checkpoint.load_weights(directory, model)
    return model.eval(), load_tokenizer(directory), cfg


def cmd_generate(args) -> int:
    model, tokenizer, _ = load_model(Path(args.checkpoint))
    for i in range(args.num_samples):
        if i:
            print("\n---")
        seed = None if args.seed is None else args.seed + i
        _stream_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                     args.top_p, seed)
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_train

    cfg = resolve_config(args)
    bench_train(cfg, steps=args.steps, warmup=args.warmup, peer=not args.no_peer, json_out=args.json,
                nanogpt=args.nanogpt)
    return 0


def cmd_presets(args) -> int:
    from .config import dumps
    from .presets import PRESETS

    for name, fn in PRESETS.items():
        print(f"{name}: {(fn.__doc__ or '').strip()}" if not args.verbose else f"# {name}\n{dumps(fn())}")
    return 0


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfmr", description="Transformers, every concept, real and fast.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a language model")
    _config_flags(p)
    p.add_argument("--out", default="runs/train", help="run folder (checkpoint, metrics, plots)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="sample text from a checkpoint, streamed")
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder (RUN/checkpoint)")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("bench", help="benchmarks")
    bench_sub = p.add_subparsers(dest="what", required=True)
    b = bench_sub.add_parser("train", help="training tokens/s and MFU, beside a peer in the same run")
    _config_flags(b)
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--no-peer", action="store_true", help="skip the Hugging Face GPT-2 peer")
    b.add_argument("--nanogpt", help="path to a nanoGPT checkout: time its GPT in the same run")
    b.add_argument("--json", help="also write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)

    p = sub.add_parser("presets", help="list presets")
    p.add_argument("-v", "--verbose", action="store_true", help="print each preset's full config")
    p.set_defaults(func=cmd_presets)

    try:
        from .tokenizers.bpe_cli import add_parser as add_tokenizer
    except ImportError:  # pragma: no cover
        add_tokenizer = None
    if add_tokenizer is not None:
        add_tokenizer(sub)
    from .g2p import add_parser as add_g2p  # grapheme-to-phoneme: train | eval | predict

    add_g2p(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"tfmr: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
