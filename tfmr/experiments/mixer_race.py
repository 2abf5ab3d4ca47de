"""Transformer vs retention vs hybrid at equal parameters and equal training time.

Three language models train on the same text (the embedded corpus unless --data) for the same
wall-clock budget (`--minutes`, which sets train.max_minutes: the schedule decays over the time
and each run does the steps it can), with the same batches and seed:

    transformer   every layer attention
    retention     every layer RetNet retention (`model.mixer=retention`)
    hybrid        `model.mixer_pattern=retention,retention,attention` (a third of the layers attention)

Retention layers hold more parameters than attention layers (values and gate at value_factor x
dim), so each model's FFN width is chosen (`model.ffn.mult`) to bring its total parameter count
to the transformer's; the table shows both. Reported: validation loss at the end, parameters,
steps and tokens trained. Writes results.json, table.md and mixers.png in --out.

    tfmr experiment mixers --out runs/mixers --minutes 5
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from ..config import Choice, ConfigError, RunConfig, to_dict
from ..data import prepare
from ..memory import count_parameters
from ..programs import config_flags, out_folder, positive_float, resolve_config
from .plots import save

MODELS = {
    "transformer": ("attention", ""),
    "retention": ("retention", ""),
    "hybrid": ("retention", "retention,retention,attention"),
}


def add_arguments(p) -> None:
    config_flags(p, preset="exp-mixers")
    p.add_argument("--out", default="runs/mixers", help="folder for models, table and plot")
    p.add_argument(
        "--minutes",
        type=positive_float,
        default=5.0,
        help="training time per model (train.max_minutes)",
    )
    p.add_argument(
        "--models", default=",".join(MODELS), help=f"which to train ({', '.join(MODELS)})"
    )


def with_mixer(base: RunConfig, name: str) -> RunConfig:
    cfg = copy.deepcopy(base)
    mixer, pattern = MODELS[name]
    cfg.model.mixer, cfg.model.mixer_pattern = Choice(mixer), pattern
    return cfg


def with_hidden(cfg: RunConfig, hidden: int) -> RunConfig:
    """cfg with an FFN `hidden` units wide (model.ffn.mult = hidden / dim; other options kept)."""
    trial = copy.deepcopy(cfg)
    trial.model.ffn = Choice(
        cfg.model.ffn.kind, **{**cfg.model.ffn.options, "mult": hidden / cfg.model.dim}
    )
    return trial


def match_parameters(cfg: RunConfig, target: int) -> RunConfig:
    """Set model.ffn.mult so the model's parameter count is as close to `target` as a whole FFN
    width allows. The count is linear in the width: solved from two widths, then the nearest
    whole widths are counted exactly."""
    dim = cfg.model.dim
    a, b = (
        count_parameters(with_hidden(cfg, dim).model),
        count_parameters(with_hidden(cfg, 2 * dim).model),
    )
    guess = dim + round((target - a) * dim / (b - a))
    widths = [h for h in range(guess - 2, guess + 3) if h >= 1]
    if not widths:
        raise ConfigError(
            f"no FFN width brings model.mixer={cfg.model.mixer.kind} down to {target:,} parameters; "
            "use a smaller model.mixer.value_factor or more layers"
        )
    return min(
        (with_hidden(cfg, h) for h in widths), key=lambda c: abs(count_parameters(c.model) - target)
    )


def write_table(results: dict, path: Path) -> str:
    lines = [
        "| model | parameters | FFN width | steps | tokens | val loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        lines.append(
            f"| {name} | {r['params']:,} | {r['ffn_hidden']} | {r['steps']} | {r['tokens']:,} | "
            f"{r['val_loss']:.4f} |"
        )
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results["models"].items():
        curve = [(h["minutes"], h["val_loss"]) for h in r["history"] if "val_loss" in h]
        ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, label=name)
    ax.set(
        xlabel="training minutes", ylabel="validation loss", title="Equal parameters, equal time"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def main(args) -> int:
    from ..train import Trainer

    base = resolve_config(args)
    out = out_folder(args.out)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names or any(m not in MODELS for m in names):
        raise ConfigError(f"--models takes some of {', '.join(MODELS)}; got {args.models!r}")
    base.train.max_minutes = args.minutes
    base.data.cache_dir = base.data.cache_dir or str(out / "data")
    base.model.vocab_size = prepare(
        base.data, base.data.cache_dir, log=lambda *a: None
    ).tokenizer.vocab_size
    target = count_parameters(with_mixer(base, "transformer").model)
    results = {
        "minutes": args.minutes,
        "target_params": target,
        "models": {},
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "base": to_dict(base),
    }
    for name in names:
        cfg = with_mixer(base, name)
        if name != "transformer":
            cfg = match_parameters(cfg, target)
        t0 = time.perf_counter()
        trainer = Trainer(cfg, out / name, log=lambda *a: None, progress=False, overwrite=True)
        last = trainer.fit()
        history = [
            {"minutes": h["seconds"] / 60, "val_loss": h["val_loss"]}
            for h in trainer.history
            if "val_loss" in h
        ]
        t = cfg.train
        results["models"][name] = {
            "params": count_parameters(cfg.model),
            "ffn_hidden": round(cfg.model.ffn.options.get("mult", 4) * cfg.model.dim),
            "steps": trainer.step,
            "tokens": trainer.step * t.batch_size * t.grad_accum * cfg.model.context,
            "val_loss": last.get("val_loss"),
            "seconds": round(time.perf_counter() - t0, 1),
            "history": history,
        }
        print(
            f"{name:>12}: {results['models'][name]['params']:,} parameters, {trainer.step} steps, "
            f"val loss {last.get('val_loss'):.4f}",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = write_table(results, out / "table.md")
    plot(results, out / "mixers.png")
    print(
        "\n"
        + table
        + f"\nwritten: {out / 'results.json'}, {out / 'table.md'}, {out / 'mixers.png'}"
    )
    return 0
