"""G2P on CPU: the model's words/s and one-word latency beside CMUdict lookup (--peer: and Phonetisaurus).

    tfmr bench g2p [--checkpoint DIR] [--threads N] [--limit N] [--beam 5] [--calls 50] [--dtype float16]

Times what `tfmr g2p WORD ...` runs (tfmr.g2p.G2P, its engine), on the words of the test split
(md5 order; --limit N takes the first N): the model pronouncing every word (--model-only) greedily
and with beam search, with the long-word checks and repairs `tfmr g2p` applies; then `tfmr g2p`
itself with the train split as its dictionary, so that each test word is an unknown word to it
(the model, and the possessives and inflections composed from train entries: docs/g2p.md); one word at a
time (the median of --calls single-word calls, each a
new word), and the dictionary lookup of the same words, measured in the same run. Then the same
greedy decoding one word at a time through the compiled static-cache step (tasks/g2p.py's
WordDecoder; --no-compiled skips it), after its compile time is reported. The model is the
shipped one unless --checkpoint names another (a training checkpoint or an export); a build that
ships none needs --checkpoint. A quantized checkpoint (`tfmr checkpoint quantize`) is timed
as it holds its weights (its kind in the header); --dtype float16 would cast them and is
refused. The WER of each decoding on those words is printed beside its
speed. Goal on 2 CPU cores: one word <= 10 ms, >= 2,000 words/s greedy (about Phonetisaurus' rate).
Each engine is warmed up first, as a process that pronounces many words is: its dictionary read
whole (a flagged word's repair looks up its parts; about 1.4 s once per process, which a 3-word
warm-up left inside the first timed row) and one batch of words decoded; the warm-up's seconds
are printed.

    tfmr bench g2p --peer phonetisaurus [--peer-train-limit N] [--out DIR]

--peer NAME (repeatable; tfmr/bench/peers/) trains another G2P program on the same train split
(every pronunciation of every train word, as tfmr's model is trained; --peer-train-limit N takes
the first N train words in md5 order, for a quick check) and pronounces the same test words.
Its row joins the table, with a training column (a peer's training time in this run; tfmr's
from its training checkpoint's state.json, none for an export), then an error breakdown of
tfmr's beam decoding, and of what `tfmr g2p` says, beside the peer (tfmr/bench/g2p_breakdown.py):
WER with and without an apostrophe and by word length, the words only one of them misses and those both miss. A peer
that is not installed is refused with one line before anything runs. --out DIR writes the table
and the breakdown as g2p_bench.json and g2p_bench.md, every system's predictions as
predictions.tsv, a plot of WER by group per peer, and keeps the peers' work files in
DIR/peers/NAME/ (without --out they go to a temporary folder, removed at the end).
"""

from __future__ import annotations

import contextlib
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..config import ConfigError
from ..metrics import per, wer
from ..programs import count, out_folder, positive_int, short, shortening
from ..quantize import WeightOnlyLinear
from . import g2p_breakdown
from .peers import PEERS


def add_arguments(p) -> None:
    p.add_argument(
        "--checkpoint",
        help="the model (default: the shipped one); a training checkpoint or an export",
    )
    p.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    p.add_argument(
        "--limit",
        type=positive_int,
        help="only the first N test words (md5 order); default all 6,261",
    )
    p.add_argument(
        "--beam", type=positive_int, default=5, help="the beam size timed beside greedy (default 5)"
    )
    p.add_argument(
        "--calls", type=positive_int, default=50, help="single-word calls for the latency median"
    )
    p.add_argument(
        "--no-compiled",
        action="store_true",
        help="skip the compiled one-word decoder (it compiles for tens of seconds first)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="decode in this dtype (float32, as the loader does; float16 to check that choice)",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=sorted(PEERS),
        help="also train this G2P program on the train split and score it beside tfmr, with an "
        "error breakdown (repeatable; phonetisaurus needs `pip install 'tfmr[bench]'`)",
    )
    p.add_argument(
        "--peer-train-limit",
        type=positive_int,
        help="train the peers on the first N train words (md5 order) only; default all 112,400",
    )
    p.add_argument(
        "--out",
        help="write g2p_bench.json, g2p_bench.md, predictions.tsv and the breakdown plots "
        "here; the peers' work files go to OUT/peers/NAME/ (default: a temporary folder)",
    )


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _warm_up(pron, words: list[str], cfg) -> None:
    """What a process pays once before its first words: the whole dictionary, then one batch."""
    len(pron.lexicon)
    pron(words[: cfg.decode.batch_size])


def _row(
    name: str,
    rate: float,
    latency: float | None,
    w: float | None,
    p: float | None,
    mark: str = "",
    training: float | None = None,
) -> dict:
    """One line of the table: words/s, one-word seconds, WER and PER (0-1; `mark` flags a subset), training seconds."""
    return {
        "name": name,
        "words_per_s": rate,
        "one_word_s": latency,
        "wer": w,
        "per": p,
        "mark": mark,
        "training_s": training,
    }


def _compiled_row(g2p, model, vocab, cfg, singles, refs_by_word, training) -> dict:
    """One word at a time through the compiled static-cache step (tasks/g2p.py's WordDecoder):
    compiled first (one graph per 16-letter bucket of the words timed), then each word timed;
    words/s is one word after another. Its predictions are compared with batched greedy's."""
    seconds, fast = _timed(lambda: g2p.WordDecoder(model, vocab, cfg))
    buckets = {(len(w) - 1) // 16: w for w in singles}
    seconds += _timed(lambda: [fast(w) for w in buckets.values()])[0]
    times, hyps = zip(*(_timed(lambda w=w: fast(w)) for w in singles))
    hyps = [list(g2p.strip_stress(h)) for h in hyps]  # scored without stress, as the table is
    batched = [
        list(g2p.strip_stress(h)) for h in g2p.predict(model, vocab, singles, 1, cfg.decode.max_len)
    ]
    same = sum(h == b for h, b in zip(hyps, batched))
    print(
        f"compiled one-word decoder: {seconds:.1f} s to build and compile; its predictions equal batched "
        f"greedy's for {same} of {len(singles)} words"
    )
    refs = [[list(p) for p in refs_by_word[w]] for w in singles]
    return _row(
        "compiled, 1 word",
        len(singles) / sum(times),
        statistics.median(times),
        wer(list(hyps), refs),
        per(list(hyps), refs),
        "*",
        training,
    )


def _trained_seconds(checkpoint_dir) -> float | None:
    """The seconds a training checkpoint was trained (its state.json); None for an export or the shipped model."""
    from .. import checkpoint

    if not checkpoint_dir:
        return None
    seconds = checkpoint.saved_state(checkpoint.resolve(checkpoint_dir)).get("seconds")
    return float(seconds) if seconds else None


def _pct(x, mark: str = "") -> str:
    return "-" if x is None else f"{100 * x:.2f}%{mark}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cells(r: dict) -> tuple[str, str, str, str]:
    latency = r["one_word_s"]
    shown = (
        "-"
        if latency is None
        else f"{1e3 * latency:.2f} ms"
        if latency >= 1e-4
        else f"{1e6 * latency:.1f} us"
    )
    return f"{r['words_per_s']:,.0f}", shown, _pct(r["wer"], r["mark"]), _pct(r["per"], r["mark"])


def _print_table(rows: list[dict], calls: int, training: bool) -> None:
    """The table; with `training` (peers in the run) a training-time column at the end."""
    last = f" {'training':>10}" if training else ""
    print(
        f"\n{'':<16} {'words/s':>12} {f'one word (median of {calls})':>28} {'WER':>8} {'PER':>8}{last}"
    )
    for r in rows:
        rate, shown, w, p = _cells(r)
        last = f" {_duration(r['training_s']):>10}" if training else ""
        print(f"{r['name']:<16} {rate:>12} {shown:>28} {w:>8} {p:>8}{last}")


def _markdown(rows: list[dict], calls: int, header: str, breakdowns: dict) -> str:
    md = [
        header,
        "",
        f"| | words/s | one word (median of {calls}) | WER | PER | training |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['name']} | " + " | ".join(_cells(r)) + f" | {_duration(r['training_s'])} |"
        for r in rows
    ]
    for b in breakdowns.values():
        md += [
            "",
            f"## {b['names'][0]} beside {b['names'][1]}: where each loses words",
            "",
            g2p_breakdown.markdown(b, b["names"]),
        ]
    return "\n".join(md) + "\n"


def _peer_train_split(train: dict, limit: int | None, key) -> dict:
    """The train split in md5 order (`key`; every pronunciation of each word), its first `limit` words when given."""
    return {w: train[w] for w in sorted(train, key=key)[:limit]}


def _run_peers(peers, train: dict, words: list[str], args, out: Path | None) -> list:
    """Each peer trained on `train` and pronouncing `words`, in OUT/peers/NAME or a temporary folder."""
    runs = []
    with contextlib.ExitStack() as stack:
        root = (
            out / "peers"
            if out
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tfmr-peers-")))
        )
        for peer in peers:
            print()
            runs.append(peer.run(train, words, root / peer.NAME, args.calls))
    return runs


def _write(
    out: Path, report: dict, rows: list[dict], words: list[str], systems: dict, header: str
) -> None:
    """OUT/g2p_bench.json, OUT/g2p_bench.md, OUT/predictions.tsv and one plot per peer."""
    (out / "g2p_bench.json").write_text(json.dumps(report, indent=1))
    (out / "g2p_bench.md").write_text(_markdown(rows, report["calls"], header, report["breakdown"]))
    lines = ["word\t" + "\t".join(systems)]
    lines += [
        w + "\t" + "\t".join(" ".join(hyps[i]) for hyps in systems.values())
        for i, w in enumerate(words)
    ]
    (out / "predictions.tsv").write_text("\n".join(lines) + "\n")
    for name, b in report["breakdown"].items():
        g2p_breakdown.plot(b, b["names"], out / f"g2p_wer_by_group_{name}.png")
    print(
        f"\nwritten: {out}/g2p_bench.json, g2p_bench.md, predictions.tsv"
        + "".join(f", g2p_wer_by_group_{n}.png" for n in report["breakdown"])
    )


def main(args) -> int:
    from ..g2p import G2P
    from ..tasks import g2p

    peers = [PEERS[name] for name in dict.fromkeys(args.peer)]
    for peer in peers:
        peer.tools()  # a missing peer is refused now, in one line, before anything is loaded
    if shortening():  # TFMR_DOCS_SHORT: a few words, a small peer, no compiling
        args.limit, args.calls = short("words", args.limit), short("repeats", args.calls)
        args.peer_train_limit = short("train_words", args.peer_train_limit)
        args.no_compiled = True
    out = out_folder(args.out) if args.out else None
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, vocab, cfg = g2p.TASK.load_model(args.checkpoint)
        where = args.checkpoint
    else:
        if not g2p.shipped_model_exists():
            raise ConfigError(
                "no G2P model is shipped in this build of tfmr; give --checkpoint DIR "
                "(a folder written by `tfmr g2p train` or `tfmr g2p export`)"
            )
        model, vocab, cfg = g2p.load_shipped()
        where = f"the shipped model ({g2p.SHIPPED})"
    trained = _trained_seconds(args.checkpoint)
    kind = getattr(model, "quantized", "fp32")  # a quantized checkpoint's weights (quantize.py)
    if args.dtype != "float32":  # a cast would also turn a quantized model's scales to floats
        if kind != "fp32":
            raise ConfigError(
                f"--dtype {args.dtype} casts the weights; this checkpoint holds "
                f"{kind} weights: leave --dtype out"
            )
        model = model.to(getattr(torch, args.dtype))
    data = g2p.load_data(
        False
    )  # scored without stress (a model that predicts it has its digits removed), as
    refs_by_word = data.splits["test"]  # the peers are trained and as published G2P results are
    train_entries = g2p.load_data(True).splits["train"]  # with stress, as `tfmr g2p`'s dictionary
    words = sorted(refs_by_word, key=g2p.md5_key)[: args.limit]
    refs = [[list(p) for p in refs_by_word[w]] for w in words]
    singles = [words[i % len(words)] for i in range(args.calls)]
    params = sum(p.numel() for p in model.parameters())
    if kind != "fp32":  # the quantized matrices are buffers, not parameters
        params += sum(m.weight.numel() for m in model.modules() if isinstance(m, WeightOnlyLinear))
    weights = f"{next(model.parameters()).dtype}" + (
        f", linear layers {kind}" if kind != "fp32" else ""
    )
    header = (
        f"G2P speed: {where}, {params / 1e6:.2f}M weights, {weights} on CPU, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or 'cpu'}; "
        f"{len(words):,} test words, scored without stress"
    )
    print(header)

    rows, decoded = [], {}
    loaded = (model, vocab, cfg)
    engines = {
        "model, greedy": G2P(beam=1, model_only=True, loaded=loaded),
        f"model, beam {args.beam}": G2P(beam=args.beam, model_only=True, loaded=loaded),
        # what `tfmr g2p` says of a word its dictionary lacks: the model, possessives and inflections
        f"tfmr g2p, beam {args.beam}": G2P(beam=args.beam, loaded=loaded, lexicon=train_entries),
    }
    for name, pron in engines.items():
        print(f"{name}: warm-up {_timed(lambda p=pron: _warm_up(p, words, cfg))[0]:.1f} s")
        seconds, said = _timed(lambda pron=pron: pron(words))
        decoded[name] = hyps = [list(w.phones[0]) for w in said]  # stress left out (the default)
        latency = statistics.median(_timed(lambda p=pron, w=w: p([w]))[0] for w in singles)
        rows.append(
            _row(
                name,
                len(words) / seconds,
                latency,
                wer(hyps, refs),
                per(hyps, refs),
                training=trained,
            )
        )
    from ..ensemble import Ensemble

    if isinstance(model, Ensemble):  # WordDecoder compiles one model's step
        print(
            "compiled, 1 word: left out (the model is an ensemble; the compiled step is one model's)"
        )
    elif not args.no_compiled:
        rows.append(_compiled_row(g2p, model, vocab, cfg, singles, refs_by_word, trained))

    lookup = G2P()  # every test word is in CMUdict: no model is loaded
    reps = max(1, 200_000 // len(words))  # a lookup takes about a microsecond: time enough of them
    seconds, _ = _timed(lambda: [lookup(words) for _ in range(reps)])
    latency = statistics.median(_timed(lambda w=w: lookup([w]))[0] for w in singles)
    lookup_row = _row(
        "CMUdict lookup", reps * len(words) / seconds, latency, None, None
    )  # it holds the references

    train = _peer_train_split(data.splits["train"], args.peer_train_limit, g2p.md5_key)
    runs = _run_peers(peers, train, words, args, out)
    for r in runs:
        rows.append(
            _row(
                r.name,
                len(words) / r.decode_seconds,
                r.one_word,
                wer(r.predictions, refs),
                per(r.predictions, refs),
                training=r.train_seconds,
            )
        )
    rows.append(lookup_row)

    _print_table(rows, args.calls, training=bool(runs))
    if any(r["mark"] for r in rows):
        print(f"* the compiled decoder's WER / PER are on the {args.calls} words it was timed on")
    for r in runs:
        print(f"{r.name}: {r.settings}; trained on {r.train_words:,} train words in this run")
        for note in r.notes:
            print(note)
    if runs and trained is None:
        print(
            "training: an export (the shipped model too) does not record tfmr's training time (docs/g2p.md)"
        )
    print(
        "\ngoal on 2 CPU cores: one word <= 10 ms and >= 2,000 words/s greedy (the shipped model; the dictionary "
        "answers the words it has, the model the rest)"
    )

    # the model's beam decoding and what `tfmr g2p` says, each beside each peer
    mine = {"model": f"model, beam {args.beam}", "tfmr-g2p": f"tfmr g2p, beam {args.beam}"}
    breakdowns = {}
    for r in runs:
        for key, system in mine.items():
            names = [system if system.startswith("tfmr") else f"tfmr {system}", r.name]
            b = g2p_breakdown.breakdown(words, refs, decoded[system], r.predictions)
            breakdowns[f"{key}-{r.name}"] = {"names": names, **b}
            print(f"\n{names[0]} beside {r.name} on the same {len(words):,} test words:")
            print("\n".join(g2p_breakdown.lines(b, names)))
    if out is not None:
        report = {
            "bench": "g2p",
            "model": where,
            "parameters": params,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.processor() or "cpu",
            "test_words": len(words),
            "calls": args.calls,
            "rows": rows,
            "breakdown": breakdowns,
            "peers": {
                r.name: {
                    "settings": r.settings,
                    "train_words": r.train_words,
                    "train_seconds": r.train_seconds,
                    "steps": r.steps,
                    "decode_seconds": r.decode_seconds,
                    "notes": r.notes,
                }
                for r in runs
            },
        }
        systems = {
            **{n if n.startswith("tfmr") else f"tfmr {n}": decoded[n] for n in mine.values()},
            **{r.name: r.predictions for r in runs},
        }
        _write(out, report, rows, words, systems, header)
    return 0
