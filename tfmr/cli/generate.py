"""`tfmr lm generate`: text from a language-model checkpoint, streamed as it is sampled, or the n
best continuations of beam search with their scores.

    tfmr lm generate --checkpoint RUN/checkpoint [--prompt TEXT | --prompt - | --prompt-file FILE]
                  [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--num-samples N] [--seed S]
                  [--lora DIR]
    tfmr lm generate --checkpoint RUN/checkpoint --beam K [--n-best N] [--length-penalty A]
    tfmr lm generate --checkpoint HF-FOLDER ...      a Hugging Face folder (tfmr.interop.from_pretrained)
    tfmr lm generate --checkpoint MARIAN-FOLDER --prompt TEXT --temperature 0     a translation of TEXT

An encoder-decoder Hugging Face folder (Marian) translates: the prompt is the source, the decoder
starts from the config's decoder_start_token_id (generation_config.json over config.json), stops
after eos_token_id, and with forced_eos_token_id ends at the length limit as transformers does
(the end token takes the last place, so one token fewer is printed). Only the translation is
printed, without the end token.

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
FLAGS = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition": "--repetition-penalty",
    "ngram": "--no-repeat-ngram",
    "beam_size": "--beam",
    "n_best": "--n-best",
    "length_penalty": "--length-penalty",
    "seed": "--seed",
}


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a checkpoint, streamed")
    checkpoint_flags(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prompt",
        default="\n",
        help="the text to continue ('-': read it from stdin; default a newline)",
    )
    source.add_argument(
        "--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 text file"
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help=f"tokens to generate (default {DEFAULT_NEW_TOKENS}; with --beam at most what the context "
        "leaves after the prompt)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"0 means greedy (default {DEFAULT_TEMPERATURE})",
    )
    p.add_argument("--top-k", type=int, default=None, help="keep the K most likely tokens")
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="nucleus: keep the most likely tokens up to mass P, in (0, 1]",
    )
    p.add_argument(
        "--min-p",
        type=float,
        default=None,
        help="keep tokens with p >= min_p * the best p, in [0, 1]",
    )
    p.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already seen"
    )
    p.add_argument(
        "--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram"
    )
    p.add_argument(
        "--beam", type=int, default=1, metavar="K", help="beam search with K beams (K > 1)"
    )
    p.add_argument(
        "--n-best", type=int, default=None, help="with --beam: print the N best, with scores"
    )
    p.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        help="with --beam: score = sum log p / length ** this (> 0 favours long; default 1)",
    )
    p.add_argument(
        "--num-samples", type=int, default=None, help="sampling: how many continuations (default 1)"
    )
    p.add_argument("--seed", type=int, default=None, help="sampling: the random seed")
    p.add_argument(
        "--lora",
        metavar="DIR",
        help="add the LoRA (or adapter) weights of a `tfmr lm finetune` run",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="decode.KEY=VALUE",
        help="a decode setting: decode.weights=fp32|bf16|int8 (weight-only quantization, tfmr/quantize.py)",
    )
    p.set_defaults(func=run)


def check_flags(args) -> None:
    """Refuse (ConfigError, one line) a flag out of range or one the chosen method would ignore."""
    from ..decode import check_decoding

    if args.beam < 1:
        raise ConfigError(
            f"--beam must be an integer >= 1 (1: sampling; K > 1: beam search), got {args.beam}"
        )
    if args.beam > 1:
        ignored = [
            flag
            for flag, value in (
                ("--temperature", args.temperature),
                ("--top-k", args.top_k),
                ("--top-p", args.top_p),
                ("--min-p", args.min_p),
                ("--num-samples", args.num_samples),
                ("--seed", args.seed),
            )
            if value is not None
        ]
        if ignored:
            raise ConfigError(
                f"{', '.join(ignored)}: sampling flag(s) that beam search (--beam {args.beam}) "
                "does not use; drop them, or drop --beam to sample"
            )
    else:
        ignored = [
            flag
            for flag, value in (
                ("--n-best", args.n_best),
                ("--length-penalty", args.length_penalty),
            )
            if value is not None
        ]
        if ignored:
            raise ConfigError(
                f"{', '.join(ignored)}: beam-search flag(s) that sampling does not use; "
                "add --beam K (K > 1) to use them"
            )
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be at least 1, got {args.num_samples}")
    try:
        check_decoding(
            args.max_new_tokens or 0,
            DEFAULT_TEMPERATURE if args.temperature is None else args.temperature,
            args.top_k,
            args.top_p,
            args.min_p,
            args.repetition_penalty,
            args.no_repeat_ngram,
            args.beam,
            args.n_best,
            1.0 if args.length_penalty is None else args.length_penalty,
            name=FLAGS.get,
            seed=args.seed,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def prompt_ids(model, tokenizer, prompt):
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([encode_text(tokenizer, prompt)], dtype=torch.long, device=device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one character")
    return ids


def stream_text(
    model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, **more
) -> str:
    """Generate and print text as it is produced (tfmr.textstream: whole UTF-8 characters only);
    returns the continuation. `more`: min_p, repetition, ngram (see tfmr.decode.stream)."""
    from ..textstream import stream_text as pieces

    ids = prompt_ids(model, tokenizer, prompt)
    sys.stdout.write(prompt)
    text = []
    for piece in pieces(
        model, tokenizer, ids, max_new_tokens, temperature, top_k, top_p, seed=seed, **more
    ):
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
        raise ConfigError(
            f"the prompt ({prompt_len} tokens) fills the model's context ({context} tokens); beam "
            "search keeps the whole sequence in the context: shorten the prompt"
        )
    if room < DEFAULT_NEW_TOKENS:
        print(
            f"note: beam search keeps the whole sequence in the model's context ({context} tokens): at most "
            f"{room} new tokens after the {prompt_len}-token prompt",
            file=sys.stderr,
        )
    return min(room, DEFAULT_NEW_TOKENS)


def beam_text(model, tokenizer, args) -> None:
    """Beam search: print the n best continuations with their scores (nothing to stream)."""
    from ..decode import beam_search

    ids = prompt_ids(model, tokenizer, args.prompt)
    n = args.n_best or 1
    new = beam_length(model, ids.shape[1], args.max_new_tokens)
    penalty = 1.0 if args.length_penalty is None else args.length_penalty
    try:
        best = beam_search(
            model,
            ids,
            args.beam,
            new,
            length_penalty=penalty,
            n_best=n,
            repetition=args.repetition_penalty,
            ngram=args.no_repeat_ngram,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for k in range(n):
        if n > 1:
            print(f"--- beam {k + 1} of {args.beam}, score {float(best.scores[0, k]):.4f}")
        length = int(best.lengths[0, k])
        print(
            args.prompt
            + tokenizer.decode(best.ids[0, k, ids.shape[1] : ids.shape[1] + length].tolist())
        )


def seq2seq_ids(args):
    """(decoder start id, end id, new tokens) of an encoder-decoder Hugging Face folder; a tfmr
    encoder-decoder checkpoint records no decoder start token and is refused."""
    from ..interop import is_hf_folder
    from ..interop.hf_folder import generation_ids

    if not is_hf_folder(args.checkpoint):
        raise ConfigError(
            f"{args.checkpoint}: generate translates with an encoder-decoder Hugging Face folder (its "
            "config names the decoder start token); this tfmr checkpoint records none"
        )
    ids = generation_ids(args.checkpoint)
    if ids.decoder_start is None:
        raise ConfigError(f"{args.checkpoint}: config.json has no decoder_start_token_id")
    new = DEFAULT_NEW_TOKENS if args.max_new_tokens is None else args.max_new_tokens
    if (
        ids.forced_eos is not None and ids.forced_eos == ids.eos
    ):  # the limit's last place is the end token
        new -= 1
    return ids.decoder_start, ids.eos, new


def translate(model, tokenizer, args) -> None:
    """An encoder-decoder: the prompt is the source; print the target text as it is chosen
    (sampling or greedy) or the n best of beam search, each up to its end token."""
    import torch

    start, eos, new = seq2seq_ids(args)
    src = prompt_ids(model, tokenizer, args.prompt)  # (1, S)
    first = torch.full((1, 1), start, dtype=torch.long, device=src.device)
    try:
        if args.beam > 1:
            translate_beam(model, tokenizer, args, first, src, eos, new)
        else:
            translate_stream(model, tokenizer, args, first, src, eos, new)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def translate_stream(model, tokenizer, args, first, src, eos, new) -> None:
    """Sampling (temperature 0: greedy), printed as it is chosen, up to the end token."""
    from ..decode import stream
    from ..textstream import TextPieces

    temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    for i in range(args.num_samples or 1):
        if i:
            print("\n---")
        pieces, seed = TextPieces(tokenizer), None if args.seed is None else args.seed + i
        for tok in stream(
            model,
            first,
            new,
            temperature,
            args.top_k,
            args.top_p,
            args.min_p,
            seed,
            eos,
            src=src,
            repetition=args.repetition_penalty,
            ngram=args.no_repeat_ngram,
        ):
            if int(tok[0]) == eos:
                break
            sys.stdout.write(pieces.add(int(tok[0])))
            sys.stdout.flush()
        sys.stdout.write(pieces.finish() + "\n")


def translate_beam(model, tokenizer, args, first, src, eos, new) -> None:
    """Beam search: the n best translations (with their scores when --n-best is given)."""
    from ..decode import beam_search

    n = args.n_best or 1
    penalty = 1.0 if args.length_penalty is None else args.length_penalty
    best = beam_search(
        model,
        first,
        args.beam,
        max(new, 1),
        eos,
        penalty,
        src=src,
        n_best=n,
        repetition=args.repetition_penalty,
        ngram=args.no_repeat_ngram,
    )
    for k in range(n):
        if args.n_best:
            print(f"--- beam {k + 1} of {args.beam}, score {float(best.scores[0, k]):.4f}")
        ids = best.ids[0, k, 1 : 1 + int(best.lengths[0, k])].tolist()
        print(tokenizer.decode(ids[: ids.index(eos)] if eos in ids else ids))


def read_prompt(args) -> str:
    """The prompt: --prompt TEXT, --prompt - (stdin) or --prompt-file FILE (UTF-8)."""
    if args.prompt_file:
        try:
            return Path(args.prompt_file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"--prompt-file {args.prompt_file}: not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
    if args.prompt == "-":
        return sys.stdin.read()
    return args.prompt


def decode_weights(model, cfg, sets, lora: bool) -> None:
    """Apply --set decode.KEY=VALUE: decode.weights quantizes the loaded model (a fp32 one; a
    quantized checkpoint decodes as what it holds). Other sections are refused."""
    from ..config import apply_override
    from ..quantize import convert_, saved_weights

    stored = saved_weights(cfg)
    for assignment in sets:
        if not assignment.startswith("decode."):
            raise ConfigError(
                f"--set {assignment}: generate takes decode settings only (decode.weights=int8)"
            )
        apply_override(cfg, assignment)
    if lora and cfg.decode.weights != stored:
        raise ConfigError(
            "--lora merges adapter weights into fp32 matrices; quantize the merged model afterwards, "
            "not with --set decode.weights"
        )
    convert_(model, stored, cfg.decode.weights)


def run(args) -> int:
    check_flags(args)
    args.prompt = read_prompt(args)
    model, tokenizer, cfg = load_model(Path(args.checkpoint), args.allow_pickle)
    decode_weights(model, cfg, args.set, lora=bool(args.lora))
    if model.cfg.arch == "encoder-decoder" and not args.lora:
        translate(model, tokenizer, args)
        return 0
    if model.cfg.arch != "decoder":
        raise ConfigError(
            f"{args.checkpoint}: generate continues a prompt with a decoder-only model or translates "
            f"with an encoder-decoder (without --lora); this one is {model.cfg.arch}"
        )
    if args.lora:  # base + LoRA / adapter weights from `tfmr lm finetune`, merged for speed
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
        stream_text(
            model,
            tokenizer,
            args.prompt,
            new,
            temperature,
            args.top_k,
            args.top_p,
            seed,
            min_p=args.min_p,
            repetition=args.repetition_penalty,
            ngram=args.no_repeat_ngram,
        )
    return 0
