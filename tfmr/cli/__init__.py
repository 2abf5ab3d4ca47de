"""The `tfmr` command line: train, generate, finetune, eval, bench, tokenizer, experiment, viz.

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


def _prompt_ids(model, tokenizer, prompt):
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one character")
    return ids


def _stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, **more) -> str:
    """Generate and print text as it is produced; returns the continuation. `more`: min_p,
    repetition, ngram (see tfmr.decode.stream)."""
    from .decode import stream

    ids = _prompt_ids(model, tokenizer, prompt)
    sys.stdout.write(prompt)
    new: list[int] = []
    shown = ""
    for tok in stream(model, ids, max_new_tokens, temperature, top_k, top_p, seed=seed, **more):
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


def _beam_text(model, tokenizer, args) -> None:
    """Beam search: print the n best continuations with their scores (nothing to stream)."""
    from .decode import beam_search

    ids = _prompt_ids(model, tokenizer, args.prompt)
    n = args.n_best or 1
    try:
        best = beam_search(model, ids, args.beam, args.max_new_tokens, length_penalty=args.length_penalty,
                           n_best=n, repetition=args.repetition_penalty, ngram=args.no_repeat_ngram)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for k in range(n):
        if n > 1:
            print(f"--- beam {k + 1} of {args.beam}, score {float(best.scores[0, k]):.4f}")
        length = int(best.lengths[0, k])
        print(args.prompt + tokenizer.decode(best.ids[0, k, ids.shape[1]:ids.shape[1] + length].tolist()))


def cmd_generate(args) -> int:
    model, tokenizer, _ = load_model(Path(args.checkpoint))
    if args.lora:  # base + LoRA / adapter weights from `tfmr finetune`, merged for speed
        from .finetune import add_finetuned

        add_finetuned(model, args.lora, args.checkpoint).eval()
    if args.beam > 1:
        _beam_text(model, tokenizer, args)
        return 0
    for i in range(args.num_samples):
        if i:
            print("\n---")
        seed = None if args.seed is None else args.seed + i
        _stream_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                     args.top_p, seed, min_p=args.min_p, repetition=args.repetition_penalty,
                     ngram=args.no_repeat_ngram)
    return 0


def cmd_eval_decoding(args) -> int:
    """Decode held-out prompts with several strategies; table (md, json) and plot of the
    degeneration metrics (Holtzman et al. 2019, Table 1)."""
    import numpy as np

    from .data import read_text
    from .degeneration import (DEFAULT_STRATEGIES, compare_strategies, held_out_windows, markdown_table,
                               parse_strategy, write_report)

    try:
        strategies = [parse_strategy(s) for s in (args.strategy or DEFAULT_STRATEGIES)]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model, tokenizer, cfg = load_model(Path(args.checkpoint))
    ids = np.asarray(tokenizer.encode(read_text(args.data or cfg.data.path)))
    held_out = ids[-max(1, int(len(ids) * cfg.data.val_fraction)):]  # the split training held out
    context = cfg.model.context
    prompt_len = args.prompt_len or min(32, context // 4)
    new = args.new_tokens or min(200, context - prompt_len)
    if prompt_len + new > context:
        raise ConfigError(f"--prompt-len {prompt_len} + --new-tokens {new} exceeds the model's context ({context})")
    try:
        windows = held_out_windows(held_out, args.prompts, prompt_len + new, args.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(f"{args.prompts} held-out prompts of {prompt_len} tokens, {new} new tokens each")
    cmp = compare_strategies(model, windows, prompt_len, strategies, decode_text=tokenizer.decode, seed=args.seed)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval_decoding"
    files = write_report(cmp, out)
    print("\n" + markdown_table(cmp.rows) + "\n")
    print(f"table: {files['table']}\njson:  {files['json']}\nplot:  {files['plot']}")
    return 0


def cmd_finetune(args) -> int:
    from .finetune import FinetuneTrainer, finetune_config, spec_options

    method, spec = ("lora", args.lora) if args.lora else ("adapter", args.adapter)
    cfg = finetune_config(args.checkpoint, args.data, args.set)
    trainer = FinetuneTrainer(cfg, args.out, args.checkpoint, method, spec_options(spec),
                              progress=not args.no_progress)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    print(f"{method} weights: {trainer.save()}\nmetrics: {args.out}/metrics.jsonl\n"
          f"use: tfmr generate --checkpoint {args.checkpoint} --lora {args.out}")
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


def cmd_viz(args) -> int:
    from . import viz

    if args.what == "positions":
        paths = viz.positions(args.out)
    else:
        import torch

        model, tokenizer, _ = load_model(Path(args.checkpoint))
        ids = tokenizer.encode(args.text)
        if not ids:
            raise ConfigError("the text is empty; give at least one character")
        labels = [tokenizer.decode([i]) for i in ids]
        paths = viz.attention_maps(model, torch.tensor([ids[: model.cfg.context]]), args.out, labels)
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_average(args) -> int:
    from . import checkpoint

    sources = [Path(p) for p in args.checkpoints]
    if args.last:
        if len(sources) != 1 or not sources[0].is_dir():
            raise ConfigError("--last N takes one folder of snapshots (RUN/snapshots)")
        found = sorted(p for p in sources[0].iterdir() if p.is_dir() and not p.name.endswith((".tmp", ".old")))
        if len(found) < args.last:
            raise ConfigError(f"{sources[0]} holds {len(found)} checkpoints; --last {args.last} asks for more")
        sources = found[-args.last:]
    out = checkpoint.average(sources, args.out)
    print(f"averaged {len(sources)} checkpoints ({', '.join(p.name for p in sources)}) -> {out}")
    return 0


def add_experiment_parser(sub) -> None:
    from .experiments import EXPERIMENTS

    p = sub.add_parser("experiment", help="research experiments that write a table and a plot")
    exp = p.add_subparsers(dest="name", required=True)
    for name, module in EXPERIMENTS.items():
        e = exp.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(e)
        e.set_defaults(func=module.main)


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
    p.add_argument("--min-p", type=float, default=None, help="keep tokens with p >= min_p * the best p")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already seen")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="beam search with K beams (K > 1)")
    p.add_argument("--n-best", type=int, default=None, help="with --beam: print the N best, with scores")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="with --beam: score = sum log p / length ** this (> 0 favours long)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lora", metavar="DIR", help="add the LoRA (or adapter) weights of a `tfmr finetune` run")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("finetune", help="fine-tune a checkpoint with LoRA or adapters (only they train)")
    p.add_argument("--checkpoint", required=True, help="the base checkpoint folder (RUN/checkpoint)")
    method = p.add_mutually_exclusive_group(required=True)
    method.add_argument("--lora", metavar="SPEC", help="e.g. rank=8,alpha=16,targets=q_proj,v_proj[,dropout=0.05]")
    method.add_argument("--adapter", metavar="SPEC", help="e.g. bottleneck=32,targets=out_proj,w2")
    p.add_argument("--data", required=True, help="the text to fine-tune on (file or folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the base run, e.g. --set train.steps=200")
    p.add_argument("--out", default="runs/finetune", help="run folder (adaptation weights, metrics)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    eval_sub = p.add_subparsers(dest="what", required=True)
    e = eval_sub.add_parser("decoding", help="compare decoding strategies: repetition, self-BLEU, Zipf, distinct-n")
    e.add_argument("--checkpoint", required=True, help="a checkpoint folder (RUN/checkpoint)")
    e.add_argument("--strategy", action="append", metavar="SPEC",
                   help="'greedy' or key=value,... with beam_size, temperature, top_k, top_p, min_p, repetition, "
                        "ngram (repeatable; default: the rows of Holtzman et al.'s Table 1)")
    e.add_argument("--prompts", type=int, default=100, help="held-out prompts to continue")
    e.add_argument("--prompt-len", type=int, default=None, help="tokens per prompt (default min(32, context/4))")
    e.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default: fill the context)")
    e.add_argument("--data", help="text to draw prompts from (default: the run's data; its held-out tail is used)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="report folder (default RUN/eval_decoding)")
    e.set_defaults(func=cmd_eval_decoding)

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

    p = sub.add_parser("average", help="average the weights of checkpoints of one run (checkpoint averaging)",
                       description="tfmr average --out RUN/averaged CKPT CKPT ... | "
                                   "tfmr average --out RUN/averaged --last 5 RUN/snapshots "
                                   "(runs keep snapshots with --set train.keep_last=N)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders, or one folder of snapshots with --last")
    p.add_argument("--last", type=int, default=0, help="average the newest N snapshots of the folder given")
    p.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("presets", help="list presets")
    p.add_argument("-v", "--verbose", action="store_true", help="print each preset's full config")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("viz", help="pictures: positions, attention heatmaps (PNG)")
    viz_sub = p.add_subparsers(dest="what", required=True)
    v = viz_sub.add_parser("positions", help="sinusoidal table, RoPE rotation, ALiBi bias")
    v.add_argument("--out", default="runs/viz", help="folder for the PNG files")
    v.set_defaults(func=cmd_viz)
    v = viz_sub.add_parser("attention", help="attention heatmaps per layer and head for a text")
    v.add_argument("--checkpoint", required=True, help="a checkpoint folder (RUN/checkpoint)")
    v.add_argument("--text", required=True, help="the text to attend over (cut to the model's context)")
    v.add_argument("--out", default="runs/viz", help="folder for the PNG files")
    v.set_defaults(func=cmd_viz)
    add_experiment_parser(sub)

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
