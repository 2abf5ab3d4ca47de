"""G2P speed on CPU: the model's words/s (greedy, beam) and one-word latency, beside CMUdict lookup.

    tfmr bench g2p [--checkpoint DIR] [--threads N] [--limit N] [--beam 5] [--calls 50] [--dtype float16]

Times what `tfmr g2p WORD ...` runs (tasks/g2p.py's Pronouncer), on the words of the test split
(md5 order; --limit N takes the first N): the model pronouncing every word (--model-only) greedily
and with beam search, one word at a time (the median of --calls single-word calls, each a new
word), and the dictionary lookup of the same words, measured in the same run. Then the same
greedy decoding one word at a time through the compiled static-cache step (tasks/g2p.py's
WordDecoder; --no-compiled skips it), after its compile time is reported. The model is the
shipped one unless --checkpoint names another (a training checkpoint or an export); a build that
ships none needs --checkpoint. The WER of each decoding on those words is printed beside its
speed. Goal on 2 CPU cores: one word <= 10 ms, >= 500 words/s greedy.
"""
from __future__ import annotations

import platform
import statistics
import time

import torch

from ..cli.common import count, positive_int
from ..config import ConfigError
from ..metrics import per, wer
from ..seq2seq import load_run


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", help="the model (default: the shipped one); a training checkpoint or an export")
    p.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--limit", type=positive_int, help="only the first N test words (md5 order); default all 6,261")
    p.add_argument("--beam", type=positive_int, default=5, help="the beam size timed beside greedy (default 5)")
    p.add_argument("--calls", type=positive_int, default=50, help="single-word calls for the latency median")
    p.add_argument("--no-compiled", action="store_true",
                   help="skip the compiled one-word decoder (it compiles for tens of seconds first)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="decode in this dtype (float32, as the loader does; float16 to check that choice)")


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _compiled_row(g2p, model, vocab, cfg, singles, greedy, refs_by_word) -> tuple:
    """One word at a time through the compiled static-cache step (tasks/g2p.py's WordDecoder):
    compiled first (one graph per 16-letter bucket of the words timed), then each word timed;
    words/s is one word after another. Its predictions are compared with batched greedy's."""
    seconds, fast = _timed(lambda: g2p.WordDecoder(model, vocab, cfg))
    buckets = {(len(w) - 1) // 16: w for w in singles}
    seconds += _timed(lambda: [fast(w) for w in buckets.values()])[0]
    times, hyps = zip(*(_timed(lambda: fast(w)) for w in singles))
    same = sum(h == greedy[w] for w, h in zip(singles, hyps))
    print(f"compiled one-word decoder: {seconds:.1f} s to build and compile; its predictions equal batched "
          f"greedy's for {same} of {len(singles)} words")
    refs = [[list(p) for p in refs_by_word[w]] for w in singles]
    return ("compiled, 1 word", len(singles) / sum(times), statistics.median(times),
            f"{100 * wer(list(hyps), refs):.2f}%*", f"{100 * per(list(hyps), refs):.2f}%*")


def main(args) -> int:
    from ..presets import G2PConfig
    from ..tasks import g2p

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, vocab, cfg = load_run(args.checkpoint, G2PConfig)
        where = args.checkpoint
    else:
        if not g2p.shipped_model_exists():
            raise ConfigError("no G2P model is shipped in this build of tfmr; give --checkpoint DIR "
                              "(a folder written by `tfmr g2p train` or `tfmr g2p export`)")
        model, vocab, cfg = g2p.load_shipped()
        where = f"the shipped model ({g2p.SHIPPED})"
    model = model.to(getattr(torch, args.dtype))
    data = g2p.load_data(cfg.data.stress)
    refs_by_word = data.splits["test"]
    words = sorted(refs_by_word, key=g2p.md5_key)[:args.limit]
    refs = [[list(p) for p in refs_by_word[w]] for w in words]
    singles = [words[i % len(words)] for i in range(args.calls)]
    lex = g2p.lexicon(cfg.data.stress)
    params = sum(p.numel() for p in model.parameters())
    print(f"G2P speed: {where}, {params / 1e6:.2f}M parameters, {next(model.parameters()).dtype} on CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or 'cpu'}; "
          f"{len(words):,} test words")

    rows, greedy = [], {}
    for beam in (1, args.beam):
        pron = g2p.Pronouncer(lex, (model, vocab, cfg), model_only=True, beam_size=beam)
        pron(singles[:3])  # warm-up
        seconds, entries = _timed(lambda: pron(words))
        hyps = [list(e.phones[0]) for e in entries]
        greedy = greedy or dict(zip(words, hyps))
        latency = statistics.median(_timed(lambda: pron([w]))[0] for w in singles)
        name = "model, greedy" if beam == 1 else f"model, beam {beam}"
        rows.append((name, len(words) / seconds, latency, f"{100 * wer(hyps, refs):.2f}%", f"{100 * per(hyps, refs):.2f}%"))
    if not args.no_compiled:
        rows.append(_compiled_row(g2p, model, vocab, cfg, singles, greedy, refs_by_word))

    lookup = g2p.Pronouncer(lex)
    reps = max(1, 200_000 // len(words))  # a lookup takes about a microsecond: time enough of them
    seconds, _ = _timed(lambda: [lookup(words) for _ in range(reps)])
    latency = statistics.median(_timed(lambda: lookup([w]))[0] for w in singles)
    rows.append(("CMUdict lookup", reps * len(words) / seconds, latency, "-", "-"))  # it holds the references

    print(f"\n{'':<16} {'words/s':>12} {f'one word (median of {args.calls})':>28} {'WER':>8} {'PER':>8}")
    for name, rate, latency, w, p in rows:
        shown = f"{1e3 * latency:.2f} ms" if latency >= 1e-4 else f"{1e6 * latency:.1f} us"
        print(f"{name:<16} {rate:>12,.0f} {shown:>28} {w:>8} {p:>8}")
    if not args.no_compiled:
        print(f"* the compiled decoder's WER / PER are on the {args.calls} words it was timed on")
    print("\ngoal on 2 CPU cores: one word <= 10 ms and >= 500 words/s greedy (the shipped model; the dictionary "
          "answers the words it has, the model the rest)")
    return 0
