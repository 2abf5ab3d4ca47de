"""`tfmr generate`: text from a language-model checkpoint, streamed as it is sampled, or the n
best continuations of beam search with their scores.

    tfmr generate --checkpoint RUN/checkpoint [--prompt TEXT | --prompt - | --prompt-file FILE]
                  [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--num-samples N] [--seed S]
                  [--lora DIR]
    tfmr generate --checkpoint RUN/checkpoint --beam K [--n-best N] [--length-penalty A]
    tfmr generate --checkpoint HF-FOLDER ...      a Hugging Face folder (tfmr.interop.from_pretrained)

Streaming prints whole characters only (tfmr.textstream), also when a byte-level token ends
inside a multi-byte UTF-8 character.

Every flag is checked before the model is loaded (`tfmr.decode.check_decoding`), and a flag the
chosen method would ignore is refused: sampling flags with --beam, beam flags without it. Beam
search keeps the whole sequence in the model's context, so without --max-new-tokens it generates
at most what the context leaves after the prompt (with a note); sampling slides its window.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError
from .common import checkpoint_flags, encode_text, load_model

DEFAULT_NEW_TOKENS = 200
DEFAULT_TEMPERATURE = 0.8
FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_k": "--top-k",
         "top_p": "--top-p", "min_p": "--min-p", "repetition": "--repetition-penalty", "ngram": "--no-repeat-ngram",
         "beam_size": "--beam", "n_best": "--n-best", "length_penalty": "--length-penalty"}


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a checkpoint, streamed")
    checkpoint_flags(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prompt", default="\n", help="the text to continue ('-': read it from stdin; default a newline)")
    source.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 text file")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"tokens to generate (default {DEFAULT_NEW_TOKENS}; with --beam at most what the context "
                        "leaves after the prompt)")
    p.add_argument("--temperature", type=float, default=None, help=f"0 means greedy (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--top-k", type=int, default=None, help="keep the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus: keep the most likely tokens up to mass P, in (0, 1]")
    p.add_argument("--min-p", type=float, default=None, help="keep tokens with p >= min_p * the best p, in [0, 1]")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already seen")
    p.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="beam search with K beams (K > 1)")
    p.add_argument("--n-best", type=int, default=None, help="with --beam: print the N best, with scores")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="with --beam: score = sum log p / length ** this (> 0 favours long; default 1)")
    p.add_argument("--num-samples", type=int, default=None, help="sampling: how many continuations (default 1)")
    p.add_argument("--seed", type=int, default=None, help="sampling: the random seed")
    p.add_argument("--lora", metavar="DIR", help="add the LoRA (or adapter) weights of a `tfmr finetune` run")
    p.set_defaults(func=run)


def check_flags(args) -> None:
    """Refuse (ConfigError, one line) a flag out of range or one the chosen method would ignore."""
    from ..decode import check_decoding

    if args.beam < 1:
        raise ConfigError(f"--beam must be an integer >= 1 (1: sampling; K > 1: beam search), got {args.beam}")
    if args.beam > 1:
        ignored = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                            ("--top-p", args.top_p), ("--min-p", args.min_p),
                                            ("--num-samples", args.num_samples), ("--seed", args.seed))
                   if value is not None]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: sampling flag(s) that beam search (--beam {args.beam}) "
                              "does not use; drop them, or drop --beam to sample")
    else:
        ignored = [flag for flag, value in (("--n-best", args.n_best), ("--length-penalty", args.length_penalty))
                   if value is not None]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: beam-search flag(s) that sampling does not use; "
                              "add --beam K (K > 1) to use them")
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {args.num_samples}")
    try:
        check_decoding(args.max_new_tokens or 0, DEFAULT_TEMPERATURE if args.temperature is None else args.temperature,
                       args.top_k, args.top_p, args.min_p, args.repetition_penalty, args.no_repeat_ngram,
                       args.beam, args.n_best, 1.0 if args.length_penalty is None else args.length_penalty,
                       name=FLAGS.get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def prompt_ids(model, tokenizer, prompt):
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([encode_text(tokenizer, prompt)], dtype=torch.long, device=device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one character")
    return ids


def stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, **more) -> str:
    """Generate and print text as it is produced (tfmr.textstream: whole UTF-8 characters only);
    returns the continuation. `more`: min_p, repetition, ngram (see tfmr.decode.stream)."""
    from ..textstream import stream_text as pieces

    ids = prompt_ids(model, tokenizer, prompt)
    sys.stdout.write(prompt)
    text = []
    for piece in pieces(model, tokenizer, ids, max_new_tokens, temperature, top_k, top_p, seed=seed, **more):
        text.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(text)


def beam_length(model, prompt_len: int, asked: int | None) -> int:
    """New tokens for beam search: `asked`, or by default as many as the context leaves after the
    prompt, up to DEFAULT_NEW_TOKENS (with a note when the context is what limits it)."""
    if asked is not None:
        return asked
    context = model.cfg.context
    room = context - prompt_len
    if room < 1:
        raise ConfigError(f"the prompt ({prompt_len} tokens) fills the model's context ({context} tokens); beam "
                          "search keeps the whole sequence in the context: shorten the prompt")
    if room < DEFAULT_NEW_TOKENS:
        print(f"note: beam search keeps the whole sequence in the model's context ({context} tokens): at most "
              f"{room} new tokens after the {prompt_len}-token prompt", file=sys.stderr)
    return min(room, DEFAULT_NEW_TOKENS)


def beam_text(model, tokenizer, args) -> None:
    """Beam search: print the n best continuations with their scores (nothing to stream)."""
    from ..decode import beam_search

    ids = prompt_ids(model, tokenizer, args.prompt)
    n = args.n_best or 1
    new = beam_length(model, ids.shape[1], args.max_new_tokens)
    penalty = 1.0 if args.length_penalty is None else args.length_penalty
    try:
        best = beam_search(model, ids, args.beam, new, length_penalty=penalty, n_best=n,
                           repetition=args.repetition_penalty, ngram=args.no_repeat_ngram)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for k in range(n):
        if n > 1:
            print(f"--- beam {k + 1} of {args.beam}, score {float(best.scores[0, k]):.4f}")
        length = int(best.lengths[0, k])
        print(args.prompt + tokenizer.decode(best.ids[0, k, ids.shape[1]:ids.shape[1] + length].tolist()))


def read_prompt(args) -> str:
    """The prompt: --prompt TEXT, --prompt - (stdin) or --prompt-file FILE (UTF-8)."""
    if args.prompt_file:
        try:
            return Path(args.prompt_file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"--prompt-file {args.prompt_file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if args.prompt == "-":
        return sys.stdin.read()
    return args.prompt


def run(args) -> int:
    check_flags(args)
    args.prompt = read_prompt(args)
    model, tokenizer, _ = load_model(Path(args.checkpoint), args.allow_pickle)
    if model.cfg.arch != "decoder":
        raise ConfigError(f"{args.checkpoint}: generate continues a prompt with a decoder-only model; this one is "
                          f"{model.cfg.arch}")
    if args.lora:  # base + LoRA / adapter weights from `tfmr finetune`, merged for speed
        from ..tasks.finetune import add_finetuned

        add_finetuned(model, args.lora, args.checkpoint).eval()
    if args.beam > 1:
        beam_text(model, tokenizer, args)
        return 0
    new = DEFAULT_NEW_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    for i in range(args.num_samples or 1):
        if i:
            print("\n---")
        seed = None if args.seed is None else args.seed + i
        stream_text(model, tokenizer, args.prompt, new, temperature, args.top_k, args.top_p, seed, min_p=args.min_p,
                    repetition=args.repetition_penalty, ngram=args.no_repeat_ngram)
    return 0
