"""`tfmr generate`: text from a language-model checkpoint, streamed as it is sampled, or the n
best continuations of beam search with their scores.

    tfmr generate --checkpoint RUN/checkpoint [--prompt TEXT] [--temperature T] [--top-k K] [--top-p P]
                  [--min-p P] [--beam K [--n-best N]] [--lora DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError
from .common import load_model


def add_parser(sub) -> None:
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
    p.set_defaults(func=run)


def prompt_ids(model, tokenizer, prompt):
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    if ids.shape[1] == 0:
        raise ConfigError("the prompt is empty; give at least one character")
    return ids


def stream_text(model, tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, **more) -> str:
    """Generate and print text as it is produced; returns the continuation. `more`: min_p,
    repetition, ngram (see tfmr.decode.stream)."""
    from ..decode import stream

    ids = prompt_ids(model, tokenizer, prompt)
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


def beam_text(model, tokenizer, args) -> None:
    """Beam search: print the n best continuations with their scores (nothing to stream)."""
    from ..decode import beam_search

    ids = prompt_ids(model, tokenizer, args.prompt)
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


def run(args) -> int:
    model, tokenizer, _ = load_model(Path(args.checkpoint))
    if args.lora:  # base + LoRA / adapter weights from `tfmr finetune`, merged for speed
        from ..tasks.finetune import add_finetuned

        add_finetuned(model, args.lora, args.checkpoint).eval()
    if args.beam > 1:
        beam_text(model, tokenizer, args)
        return 0
    for i in range(args.num_samples):
        if i:
            print("\n---")
        seed = None if args.seed is None else args.seed + i
        stream_text(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                    args.top_p, seed, min_p=args.min_p, repetition=args.repetition_penalty,
                    ngram=args.no_repeat_ngram)
    return 0
