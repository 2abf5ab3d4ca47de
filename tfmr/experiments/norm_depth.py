"""Depth vs norm placement: Post-LN, Pre-LN and DeepNorm on a deep, thin stack, same learning rate.

    tfmr experiment norm-depth --out runs/norm-depth            # 24 layers, dim 64
    tfmr experiment norm-depth --set model.layers=48 --set train.steps=200 --set train.lr=5e-4 \
                               --set train.min_lr=5e-5 --set train.warmup=100

The base run is the preset `exp-norm-depth` through the common --preset / --config / --set flags.
Each placement trains the same char-level LM on the embedded corpus (Python's reference docs)
with the same seed, data order, learning rate and warmup; only `model.residual` changes. Writes
OUT/norm_depth.png (training loss per step, smoothed, and validation loss), OUT/results.json and
OUT/<placement>/metrics.jsonl. What the paper claims (DeepNet, https://arxiv.org/abs/2203.00555):
Post-LN grows unstable with depth, Pre-LN is stable but leaves quality on the table, DeepNorm
keeps Post-LN's placement and trains stably. At this toy size, read the figures, not the claim.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

from ..config import Choice, RunConfig, to_dict
from ..programs import Parser, config_flags, guarded, out_folder, resolve_config, short
from ..train import Trainer
from .plots import save

PLACEMENTS = ("post", "pre", "deepnorm")


def config(placement: str, base: RunConfig) -> RunConfig:
    """The base run with model.residual set to `placement`; nothing else changes."""
    cfg = copy.deepcopy(base)
    cfg.model.residual = Choice(placement)
    return cfg


def run_one(placement: str, base: RunConfig, out: Path) -> dict:
    cfg = config(placement, base)
    trainer = Trainer(
        cfg, out / placement, progress=False, log=lambda *a: None, overwrite=True
    )  # a re-run replaces it
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    history = trainer.history
    evals = [r for r in history if "val_loss" in r]
    losses = [r["loss"] for r in history]
    return {
        "name": placement,
        "history": [{k: r[k] for k in ("step", "loss")} for r in history],
        "evals": [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in evals],
        "final_val": evals[-1]["val_loss"],
        "best_val": min(r["val_loss"] for r in evals),
        "final_train": evals[-1]["train_loss"],
        "max_loss": max(losses),
        "finite": all(math.isfinite(v) for v in losses),
        "s_per_step": seconds / cfg.train.steps,
        "params": trainer.model.num_params(),
    }


def smooth(values: list[float], beta: float = 0.9) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None else beta * avg + (1 - beta) * v
        out.append(avg)
    return out


def plot(results: list[dict], path: Path, title: str) -> Path:
    """Smoothed training loss and validation points of each run (`name`, `history`, `evals`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, r in enumerate(results):
        color = f"C{i}"
        steps = [h["step"] for h in r["history"]]
        ax.plot(
            steps,
            smooth([h["loss"] for h in r["history"]]),
            color=color,
            lw=1.2,
            label=f"{r['name']} (train)",
        )
        ax.plot(
            [e["step"] for e in r["evals"]],
            [e["val_loss"] for e in r["evals"]],
            "o--",
            color=color,
            ms=4,
            lw=0.8,
            label=f"{r['name']} (val)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8)
    save(fig, path)
    return path


def table(results: list[dict]) -> str:
    rows = [
        "| placement | final train loss | final val loss | best val loss | highest batch loss | s/step |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['name']} | {r['final_train']:.4f} | {r['final_val']:.4f} | {r['best_val']:.4f} | "
            f"{r['max_loss']:.3f} | {r['s_per_step']:.2f} |"
        )
    return "\n".join(rows)


def add_arguments(p) -> None:
    config_flags(p, preset="exp-norm-depth")
    p.add_argument("--out", default="runs/norm-depth", help="report folder (table, plot, runs)")
    p.add_argument(
        "--placements",
        nargs="+",
        default=list(PLACEMENTS),
        choices=PLACEMENTS,
        help="the residual placements to compare",
    )


def main(args) -> int:
    base = resolve_config(args)
    m, t = base.model, base.train
    out = out_folder(args.out)
    results = []
    for placement in args.placements[: short("variants", len(args.placements))]:
        print(
            f"training {placement} ({m.layers} layers x dim {m.dim}, {t.steps} steps, lr {t.lr}) ...",
            flush=True,
        )
        results.append(run_one(placement, base, out))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    title = f"{m.layers} layers x dim {m.dim}, lr {t.lr}, warmup {t.warmup}, batch {t.batch_size}x{m.context}"
    png = plot(results, out / "norm_depth.png", title)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    (out / "results.json").write_text(
        json.dumps({"args": settings, "base": to_dict(base), "results": results}, indent=1)
    )
    print(f"\n{title}\n{table(results)}\nplot: {png}")
    return 0


if __name__ == "__main__":
    parser = Parser(description="Post-LN vs Pre-LN vs DeepNorm on a deep thin stack")
    add_arguments(parser)
    raise SystemExit(guarded(main, parser.parse_args()))
