"""Test WER / PER of a G2P model before and after RL fine-tuning with SCST and with MRT.

    tfmr experiment g2p-rl --out runs/g2p-rl                          # the shipped model
    tfmr experiment g2p-rl --checkpoint runs/g2p/checkpoint --reward per --set train.steps=200

The model is --checkpoint (a training checkpoint or an export), by default the shipped one (none
shipped: one-line error). Each objective fine-tunes a copy of it with `tfmr g2p finetune`'s
defaults (tfmr.tasks.g2p.FINETUNE_DEFAULTS: 100 steps at lr 3e-5 on batches of 64 words), then
each --set; both are tested on the test split, greedy and with the model's beam, beside the model
before. Writes OUT/table.md, OUT/results.json, OUT/g2p-rl.png and the runs OUT/scst, OUT/mrt.
"""
from __future__ import annotations

from ..cli.common import out_folder
from ..config import ConfigError
from ..presets import G2PConfig
from ..seq2seq import load_run
from ..tasks import g2p
from .g2p_common import figure, markdown, pct, save, write

OBJECTIVES = ("scst", "mrt")


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", default=None, help="the model to fine-tune (default the shipped one)")
    p.add_argument("--reward", default="exact", help="per | exact | bleu (default exact)")
    p.add_argument("--only", nargs="+", default=None, choices=OBJECTIVES, help="a subset of: scst mrt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a fine-tuning setting, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("--out", default="runs/g2p-rl", help="where the runs, table.md, results.json and the plot go")
    p.add_argument("--limit", type=int, default=None, help="test on the first N test words only; default all")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def plot(rows: dict, path, title: str):
    plt, fig, ax = figure()
    names, decoders = list(rows), list(next(iter(rows.values())))
    width = 0.8 / len(decoders)
    for j, dec in enumerate(decoders):
        ax.bar([i + (j - (len(decoders) - 1) / 2) * width for i in range(len(names))],
               [100 * rows[n][dec]["wer"] for n in names], width, label=dec)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test WER (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    return save(fig, path)


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    chosen = [o for o in OBJECTIVES if args.only is None or o in args.only]
    for objective in chosen:
        g2p.finetune_overrides(objective, args.reward)  # unknown reward: one line before any work
    if args.checkpoint is None:
        g2p.load_shipped()
        args.checkpoint = str(g2p.SHIPPED)
    model, vocab, cfg = load_run(args.checkpoint, G2PConfig)
    out = out_folder(args.out)
    data = g2p.load_data(cfg.data.stress)
    data = g2p.G2PData(data.splits, vocab, data.stress)
    beams = sorted({1, cfg.decode.beam_size})
    print(f"testing {args.checkpoint} ...", flush=True)
    before = g2p.test_results(model, data, cfg, beams, args.limit)
    rows, records = {"before": before}, {}
    for objective in chosen:
        print(f"fine-tuning with {objective} on {args.reward} ...", flush=True)
        record = g2p.finetune(args.checkpoint, objective, args.reward, out / objective, args.set, overwrite=True,
                              limit=args.limit, beams=beams, progress=not args.no_progress,
                              log=lambda *a, **k: None, before=before)
        rows[f"after {objective.upper()}"] = record["after"]
        records[objective] = record
    decoders = list(before)
    header = ["model", *(f"{d} {m}" for d in decoders for m in ("WER", "PER"))]
    table = markdown(header, [[name, *(pct(r[d][m]) for d in decoders for m in ("wer", "per"))]
                              for name, r in rows.items()])
    steps = {o: r["steps"] for o, r in records.items()}
    title = (f"RL fine-tuning of {args.checkpoint} on reward {args.reward}, steps {steps}, "
             f"{before['greedy']['words']:,} test words")
    plot(rows, out / "g2p-rl.png", title)
    write(out, "g2p-rl", title, table, {"rows": rows, "runs": records}, args, None)
    return 0
