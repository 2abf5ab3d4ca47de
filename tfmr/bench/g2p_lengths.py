"""G2P by word length: test WER per length bucket before and after the long-word checks (quality, not speed).

`before` is the model as `tfmr g2p` decoded before issue #25 (one max_len of 40 for every word,
nothing checked); `after` is tfmr.tasks.g2p_checks.decode_checked (the length limit tied to the
word, the checks, the repairs: a wider beam, dictionary parts from the train split only, so that
a test word is never read from the dictionary). For `after` it prints the share of words flagged
low-confidence and the WER of the words left unflagged and of the flagged ones: the checks are
worth it when the flagged words are mostly wrong and the rest keep their WER.

    tfmr bench g2p-lengths [--checkpoint DIR] [--beam 1] [--limit N] [--threads N]
"""

from __future__ import annotations

import time

BUCKETS = ((1, 5), (6, 8), (9, 11), (12, 14), (15, 99))


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", help="a G2P checkpoint or export (default: the shipped model)")
    p.add_argument("--beam", type=int, default=1, help="beam size (default 1, greedy)")
    p.add_argument("--limit", type=int, help="only the first N test words (md5 order)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def _row(name: str, words, right, flagged=None) -> str:
    n = len(words)
    wrong = sum(not r for r in right)
    cells = f"{name:<10} {n:>6,} {100 * wrong / max(n, 1):7.2f}%"
    if flagged is not None:
        kept = [r for r, f in zip(right, flagged) if not f]
        marked = [r for r, f in zip(right, flagged) if f]
        cells += (
            f"  {100 * len(marked) / max(n, 1):6.2f}%  {100 * sum(not r for r in kept) / max(len(kept), 1):7.2f}%"
            f"  {100 * sum(not r for r in marked) / max(len(marked), 1):7.2f}%"
        )
    return cells


def main(args) -> int:
    import torch

    from ..tasks import g2p
    from ..tasks.g2p_checks import decode_checked

    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocab, cfg = (
        g2p.TASK.load_model(args.checkpoint) if args.checkpoint else g2p.load_shipped()
    )
    data = g2p.load_data(cfg.data.stress)
    refs = data.splits["test"]
    words = sorted(refs, key=g2p.md5_key)[: args.limit]
    t0 = time.perf_counter()
    before = g2p.predict(
        model, vocab, words, args.beam, 40, cfg.decode.batch_size, cfg.decode.length_penalty
    )
    t1 = time.perf_counter()
    train_lexicon = {w: [tuple(p) for p in prons] for w, prons in data.splits["train"].items()}
    after = decode_checked(
        model,
        vocab,
        cfg,
        words,
        args.beam,
        train_lexicon,
        min(cfg.decode.max_len, cfg.model.context - 1),
    )
    t2 = time.perf_counter()
    right_before = [tuple(h) in set(map(tuple, refs[w])) for w, h in zip(words, before)]
    right_after = [c.phones in set(map(tuple, refs[w])) for w, c in zip(words, after)]
    flagged = [bool(c.problem) for c in after]
    print(
        f"test split, {len(words):,} words, beam {args.beam}; before {t1 - t0:.1f}s, after {t2 - t1:.1f}s "
        f"({sum(bool(c.repair) for c in after)} repaired)"
    )
    print(
        f"{'letters':<10} {'words':>6} {'WER':>8}   | after: {'WER':>7} {'flagged':>8} {'WER unflagged':>14} "
        f"{'WER flagged':>12}"
    )
    for lo, hi in BUCKETS + ((1, 99),):
        idx = [i for i, w in enumerate(words) if lo <= len(w) <= hi]
        name = "all" if (lo, hi) == (1, 99) else f"{lo}-{hi}" if hi < 99 else f"{lo}+"
        b = _row(name, [words[i] for i in idx], [right_before[i] for i in idx])
        a = _row(
            "", [words[i] for i in idx], [right_after[i] for i in idx], [flagged[i] for i in idx]
        )
        print(f"{b}   | {a.split(maxsplit=1)[1]}")
    return 0
