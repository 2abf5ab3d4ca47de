"""`tfmr lm eval decoding`: decode held-out prompts of a checkpoint's own data with several
strategies; a table (markdown, JSON) and a plot of the degeneration metrics (repetition,
self-BLEU, Zipf, distinct-n; Holtzman et al. 2019, Table 1). The metrics are tfmr/degeneration.py.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..programs import short
from .common import checkpoint_flags, encode_text, load_model, out_folder


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint")
    eval_sub = p.add_subparsers(dest="what", required=True)
    e = eval_sub.add_parser(
        "decoding", help="compare decoding strategies: repetition, self-BLEU, Zipf, distinct-n"
    )
    checkpoint_flags(e)
    e.add_argument(
        "--strategy",
        action="append",
        metavar="SPEC",
        help="'greedy' or key=value,... with beam_size, temperature, top_k, top_p, min_p, repetition, "
        "ngram (repeatable; default: the rows of Holtzman et al.'s Table 1)",
    )
    e.add_argument("--prompts", type=int, default=100, help="held-out prompts to continue")
    e.add_argument(
        "--prompt-len",
        type=int,
        default=None,
        help="tokens per prompt (default min(32, context/4))",
    )
    e.add_argument(
        "--new-tokens",
        type=int,
        default=None,
        help="tokens to generate (default: fill the context)",
    )
    e.add_argument(
        "--data",
        help="text to draw prompts from (default: the run's data; its held-out tail is used)",
    )
    e.add_argument(
        "--seed", type=int, default=0, help="the seed of the prompts drawn and of sampling"
    )
    e.add_argument("--out", help="report folder (default RUN/eval_decoding)")
    e.set_defaults(func=run_decoding)


def run_decoding(args) -> int:
    """Decode held-out prompts with several strategies; table (md, json) and plot of the
    degeneration metrics (Holtzman et al. 2019, Table 1)."""
    import numpy as np

    from ..data import read_text
    from ..degeneration import (
        DEFAULT_STRATEGIES,
        compare_strategies,
        held_out_windows,
        markdown_table,
        parse_strategy,
        write_report,
    )

    try:
        strategies = [parse_strategy(s) for s in (args.strategy or DEFAULT_STRATEGIES)]
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model, tokenizer, cfg = load_model(Path(args.checkpoint), args.allow_pickle)
    if model.cfg.arch != "decoder":
        raise ConfigError(
            f"{args.checkpoint}: eval decoding continues held-out text with a language model; this one "
            f"is {model.cfg.arch}"
        )
    out = out_folder(
        args.out if args.out else Path(args.checkpoint).resolve().parent / "eval_decoding"
    )
    ids = np.asarray(
        encode_text(tokenizer, read_text(args.data or cfg.data.path), "the prompt text")
    )
    held_out = ids[-max(1, int(len(ids) * cfg.data.val_fraction)) :]  # the split training held out
    context = cfg.model.context
    prompt_len = args.prompt_len or min(32, context // 4)
    new = short("tokens", args.new_tokens or min(200, context - prompt_len))
    args.prompts = short("words", args.prompts)  # TFMR_DOCS_SHORT: a few short continuations
    if prompt_len + new > context:
        raise ConfigError(
            f"--prompt-len {prompt_len} + --new-tokens {new} exceeds the model's context ({context})"
        )
    try:
        windows = held_out_windows(held_out, args.prompts, prompt_len + new, args.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(f"{args.prompts} held-out prompts of {prompt_len} tokens, {new} new tokens each")
    cmp = compare_strategies(
        model, windows, prompt_len, strategies, decode_text=tokenizer.decode, seed=args.seed
    )
    files = write_report(cmp, out)
    print("\n" + markdown_table(cmp.rows) + "\n")
    print(f"table: {files['table']}\njson:  {files['json']}\nplot:  {files['plot']}")
    return 0
