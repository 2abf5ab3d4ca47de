"""Mixture of experts vs dense at equal active parameters: quality and training tokens/s.

    tfmr experiment moe --out runs/moe          # dim 128, 4 layers, 400 steps
    tfmr experiment moe --set model.dim=256 --set train.steps=1000 --experts 16 --only dense top2

The base run is the preset `exp-moe` through the common --preset / --config / --set flags; only
model.ffn varies (sized from model.dim). The speed of one MoE layer alone is the benchmark
`tfmr bench moe-dispatch`. Three char-level LMs on the embedded corpus, same seed, data order and schedule:

    dense      MLP, hidden = 4 * dim
    top2       8 experts of hidden 2 * dim, top-2, dropless (Mixtral style): same active size
    switch     8 experts of hidden 4 * dim, top-1, capacity 1.25 (Switch): same active size

Each MoE token meets as many FFN multiply-adds as a dense one (plus the router), while the MoE
holds 4x (top2) or 8x (switch) the FFN parameters. Writes OUT/moe.png, OUT/results.json and each
run's metrics.jsonl (with the experts' load). Validation loss is the plain cross entropy (the
balance and z losses are training-only). Tokens/s is the trainer's own, median over log windows.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

from ..config import Choice, RunConfig, to_dict
from ..programs import Parser, config_flags, guarded, out_folder, positive_int, resolve_config
from ..train import Trainer
from .norm_depth import plot


def variants(dim: int, experts: int) -> dict[str, Choice]:
    return {
        "dense": Choice("mlp", hidden=4 * dim),
        "top2": Choice("moe", experts=experts, top_k=2, hidden=2 * dim),
        "switch": Choice("moe", experts=experts, top_k=1, hidden=4 * dim, capacity_factor=1.25),
    }


def config(ffn: Choice, base: RunConfig) -> RunConfig:
    """The base run with model.ffn set to `ffn`; nothing else changes."""
    cfg = copy.deepcopy(base)
    cfg.model.ffn = ffn
    return cfg


def active_ffn_params(model) -> int:
    """FFN parameters one token uses: the dense FFN, or the router plus k experts."""
    return sum(block.ffn.active_parameters() for block in model.blocks)


def run_one(name: str, ffn: Choice, base: RunConfig, out: Path) -> dict:
    cfg = config(ffn, base)
    trainer = Trainer(
        cfg, out / name, progress=False, log=lambda *a: None, overwrite=True
    )  # a re-run replaces it
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    history = trainer.history
    evals = [r for r in history if "val_loss" in r]
    speeds = [r["tokens_per_s"] for r in history if "tokens_per_s" in r]
    speeds = speeds[1:] or speeds  # the first window warms up
    loads = [r["moe_max_load"] for r in history if "moe_max_load" in r]
    dropped = [r["moe_dropped"] for r in history if "moe_dropped" in r]
    ffn_total = sum(p.numel() for b in trainer.model.blocks for p in b.ffn.parameters())
    return {
        "name": name,
        "ffn": ffn.to_dict(),
        "history": [{k: r[k] for k in ("step", "loss")} for r in history],
        "evals": [{k: r[k] for k in ("step", "train_loss", "val_loss")} for r in evals],
        "final_val": evals[-1]["val_loss"],
        "final_train": evals[-1]["train_loss"],
        "tokens_per_s": statistics.median(speeds) if speeds else float("nan"),
        "wall_s": seconds,
        "params": trainer.model.num_params(),
        "ffn_params": ffn_total,
        "active_ffn_params": active_ffn_params(trainer.model),
        "max_load_last": loads[-1] if loads else None,
        "dropped_mean": statistics.mean(dropped) if dropped else None,
    }


def table(results: list[dict]) -> str:
    dense = next((r for r in results if r["name"] == "dense"), results[0])
    rows = [
        "| model | FFN params (total) | FFN params (active) | final train loss | final val loss | tokens/s | "
        "vs dense | busiest expert x E (last window) | dropped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        load = "-" if r["max_load_last"] is None else f"{r['max_load_last']:.2f}"
        drop = "-" if r["dropped_mean"] is None else f"{100 * r['dropped_mean']:.1f}%"
        rows.append(
            f"| {r['name']} | {r['ffn_params']:,} | {r['active_ffn_params']:,} | {r['final_train']:.4f} | "
            f"{r['final_val']:.4f} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s'] / dense['tokens_per_s']:.2f}x | "
            f"{load} | {drop} |"
        )
    return "\n".join(rows)


def add_arguments(p) -> None:
    config_flags(p, preset="exp-moe")
    p.add_argument("--out", default="runs/moe", help="report folder (table, plot, runs)")
    p.add_argument("--experts", type=positive_int, default=8, help="experts of the MoE variants")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        choices=("dense", "top2", "switch"),
        help="a subset of: dense top2 switch",
    )


def main(args) -> int:
    base = resolve_config(args)
    m, t = base.model, base.train
    out = out_folder(args.out)
    chosen = {
        k: v
        for k, v in variants(m.dim, args.experts).items()
        if args.only is None or k in args.only
    }
    results = []
    for name, ffn in chosen.items():
        print(f"training {name} ({ffn}) ...", flush=True)
        results.append(run_one(name, ffn, base, out))
        print(table(results).splitlines()[-1], flush=True)
    title = f"dense vs MoE, {m.layers} layers x dim {m.dim}, {t.steps} steps, lr {t.lr}"
    png = plot(results, out / "moe.png", title)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    (out / "results.json").write_text(
        json.dumps({"args": settings, "base": to_dict(base), "results": results}, indent=1)
    )
    print(f"\n{title}\n{table(results)}\nplot: {png}")
    return 0


if __name__ == "__main__":
    parser = Parser(description="MoE vs dense at equal active parameters")
    add_arguments(parser)
    raise SystemExit(guarded(main, parser.parse_args()))
