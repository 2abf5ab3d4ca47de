"""Test WER / PER of a G2P model before and after RL fine-tuning with SCST and with MRT.

    tfmr experiment g2p-rl --out runs/g2p-rl                          # the shipped model
    tfmr experiment g2p-rl --checkpoint runs/g2p/checkpoint --reward per --set train.steps=200

The model is --checkpoint (a training checkpoint or an export), by default the shipped one (none
shipped: one-line error). Each objective fine-tunes a copy of it with `tfmr g2p finetune`'s
defaults (tfmr.tasks.g2p.FINETUNE_DEFAULTS: 100 steps at lr 3e-5 on batches of 64 words), then
each --set; the weights of its lowest dev WER (evaluated every 25 steps and at the start, so
possibly the model itself) are tested on the test split, greedy and with the model's beam, beside
the model before. Writes OUT/table.md, OUT/results.json, OUT/g2p-rl.png and the runs OUT/scst, OUT/mrt.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError
from ..programs import out_folder, short
from ..tasks import g2p
from .g2p_common import figure, markdown, pct, save, write

OBJECTIVES = ("scst", "mrt")


def add_arguments(p) -> None:
    p.add_argument(
        "--checkpoint", default=None, help="the model to fine-tune (default the shipped one)"
    )
    p.add_argument("--reward", default="exact", help="per | exact | bleu (default exact)")
    p.add_argument(
        "--only", nargs="+", default=None, choices=OBJECTIVES, help="a subset of: scst mrt"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fine-tuning setting, e.g. --set train.steps=200 (repeatable)",
    )
    p.add_argument(
        "--out",
        default="runs/g2p-rl",
        help="where the runs, table.md, results.json and the plot go",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="test on the first N test words only; default all"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def dev_curve(run: Path) -> list[tuple[int, float]]:
    """(step, dev WER) at each evaluation of a fine-tuning run (step 0: the starting weights)."""
    points = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("dev_wer") is not None:
            points.append((record["step"], record["dev_wer"]))
    return points


def plot(rows: dict, curves: dict, kept: dict, path, title: str):
    """Left: dev WER per step of each run, the kept weights circled; right: the change in test WER."""
    plt, fig, (left, right) = figure(2, width=5.0)
    for name, points in curves.items():
        (line,) = left.plot([s for s, _ in points], [100 * w for _, w in points], "o-", label=name)
        if name in kept:
            left.plot(
                [kept[name]["step"]],
                [100 * kept[name]["value"]],
                "o",
                ms=14,
                mfc="none",
                color=line.get_color(),
            )
    left.set_xlabel("fine-tuning step")
    left.set_ylabel("dev WER (%)")
    left.set_title("dev WER (circled: the weights kept)", fontsize=9)
    left.legend()
    names, decoders = [n for n in rows if n != "before"], list(rows["before"])
    width = 0.8 / len(decoders)
    for j, dec in enumerate(decoders):
        change = [100 * (rows[n][dec]["wer"] - rows["before"][dec]["wer"]) for n in names]
        right.bar(
            [i + (j - (len(decoders) - 1) / 2) * width for i in range(len(names))],
            change,
            width,
            label=dec,
        )
    right.axhline(0, color="black", lw=0.8)
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("test WER change (points, < 0: better)")
    right.set_title(title, fontsize=9)
    right.legend()
    return save(fig, path)


def kept_column(best: dict | None) -> str:
    return "-" if best is None else f"step {best['step']} (dev WER {pct(best['value'])})"


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    chosen = [o for o in OBJECTIVES if args.only is None or o in args.only]
    args.limit = short("words", args.limit)  # TFMR_DOCS_SHORT: a few test words
    for objective in chosen:
        g2p.finetune_overrides(objective, args.reward)  # unknown reward: one line before any work
    shipped = args.checkpoint is None
    if shipped:
        g2p.load_shipped()
        args.checkpoint = str(g2p.SHIPPED)
    model, vocab, cfg = g2p.TASK.load_model(args.checkpoint)
    out = out_folder(args.out)
    data = g2p.load_data(cfg.data.stress)
    data = g2p.G2PData(data.splits, vocab, data.stress)
    beams = sorted({1, cfg.decode.beam_size})
    print(f"testing {args.checkpoint} ...", flush=True)
    before = g2p.test_results(model, data, cfg, beams, args.limit)
    records = {}
    for objective in chosen:
        print(f"fine-tuning with {objective} on {args.reward} ...", flush=True)
        records[objective] = g2p.finetune(
            args.checkpoint,
            objective,
            args.reward,
            out / objective,
            args.set,
            overwrite=True,
            limit=args.limit,
            beams=beams,
            progress=not args.no_progress,
            log=lambda *a, **k: None,
            before=before,
        )
    rows = {"before": before, **{f"after {o.upper()}": r["after"] for o, r in records.items()}}
    kept = {o.upper(): r["best"] for o, r in records.items() if r.get("best")}
    decoders = list(before)
    header = ["model", *(f"{d} {m}" for d in decoders for m in ("WER", "PER")), "weights tested"]
    table = markdown(
        header,
        [
            [
                name,
                *(pct(r[d][m]) for d in decoders for m in ("wer", "per")),
                kept_column(kept.get(name.split()[-1])),
            ]
            for name, r in rows.items()
        ],
    )
    steps = {o.upper(): r["steps"] for o, r in records.items()}
    model = "the shipped model" if shipped else args.checkpoint
    title = (
        f"RL fine-tuning of {model} on reward {args.reward}, steps {steps}, "
        f"{before['greedy']['words']:,} test words"
    )
    curves = {o.upper(): dev_curve(out / o) for o in records}
    plot(rows, curves, kept, out / "g2p-rl.png", title)
    write(out, "g2p-rl", title, table, {"rows": rows, "runs": records}, args, None)
    return 0
