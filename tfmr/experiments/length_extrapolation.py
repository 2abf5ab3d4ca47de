"""Train short, test long: perplexity at L, 2L, 4L, 8L, 16L for each position scheme.

Every scheme trains with the same budget (model shape, steps, batches, seed, optimizer) at context
L on one text, then is evaluated on the held-out split in non-overlapping windows of f * L tokens,
over the same tokens at every length (so each length scores the same characters; longer windows
give later tokens more context). The RoPE model is also evaluated zero-shot (no fine-tuning) with
the two length-extension rules of `Rope`, set to the length factor f:
NTK-aware base scaling (`rope+ntk`) and linear position interpolation (`rope+pi`).
Learned positions have no vector past L, so their longer lengths are n/a.

    tfmr experiment length-extrapolation --data PATH/tinyshakespeare.txt --out runs/lenx
    tfmr experiment length-extrapolation --set model.context=128 --set train.steps=1000 --schemes rope,alibi

The base run is the preset `exp-length-extrapolation` (char LM, 2 x 128, context L = 64, 600
steps) through the common --preset / --config / --set / --data flags; model.context is L and
model.pos is what varies. Writes results.json, table.md and perplexity.png in --out. The published
reference (ALiBi paper, https://arxiv.org/abs/2108.12409, WikiText-103, trained at 1024, tested at 16k): sinusoidal
19.3 -> 453, rotary 19.3 -> 107, ALiBi 18.7 -> 18.0.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch

from ..config import Choice, ConfigError, RunConfig, to_dict
from ..positions import Rope
from ..programs import config_flags, out_folder, positive_int, resolve_config, short
from .plots import save

# position kind -> its options here. Sinusoidal scales token embeddings by sqrt(dim) as in
# Vaswani et al. and fairseq (the ALiBi paper's baseline); unscaled, the table swamps embeddings
# initialised at std 0.02 and the model barely learns in this budget.
SCHEMES = {
    "sinusoidal": {"scale": True},
    "learned": {},
    "rope": {},
    "xpos": {},
    "alibi": {},
    "none": {},
}


def add_arguments(p) -> None:
    config_flags(p, preset="exp-length-extrapolation")
    p.add_argument(
        "--out", default="runs/length-extrapolation", help="folder for models, table and plot"
    )
    p.add_argument(
        "--factors",
        default="1,2,4,8,16",
        help="evaluation lengths as multiples of L (model.context)",
    )
    p.add_argument(
        "--schemes",
        default=",".join(SCHEMES),
        help=f"position kinds to train ({', '.join(SCHEMES)})",
    )
    p.add_argument(
        "--eval-windows",
        type=positive_int,
        default=8,
        help="windows of the longest length to score",
    )


def run_config(base: RunConfig, scheme: str, out: Path) -> RunConfig:
    """The same budget for every scheme; only model.pos differs. Token ids are cached in OUT/data
    unless data.cache_dir is set."""
    cfg = copy.deepcopy(base)
    cfg.model.pos = Choice(scheme, **SCHEMES.get(scheme, {}))
    cfg.data.cache_dir = cfg.data.cache_dir or str(out / "data")
    return cfg


@torch.no_grad()
def perplexity(model, ids, length: int, n_tokens: int, batch: int = 8) -> float:
    """exp(mean next-token loss) over the first `n_tokens` targets of `ids`, in windows of `length`."""
    model.eval()
    data = torch.as_tensor(ids[: n_tokens + 1].astype("int64"))
    windows = n_tokens // length
    x = data[: windows * length].view(windows, length)  # (N, L)
    y = data[1 : windows * length + 1].view(windows, length)
    total = 0.0
    for i in range(0, windows, batch):
        total += model(x[i : i + batch], y[i : i + batch]).loss.item() * len(x[i : i + batch])
    return math.exp(total / windows)


def evaluate(
    model, scheme: str, val, cfg: RunConfig, factors: list[int], eval_windows: int
) -> dict:
    """{row name: [perplexity per factor or None]} for one trained model (and RoPE's variants)."""
    context = cfg.model.context
    n_tokens = eval_windows * context * max(factors)
    if len(val) <= n_tokens:
        raise ValueError(
            f"the validation split has {len(val)} tokens; {n_tokens + 1} needed "
            f"(lower --eval-windows, --factors or model.context, or give more text)"
        )
    rows = {scheme: []}
    variants = {}
    if scheme == "rope":
        variants = {"rope+ntk": "ntk_factor", "rope+pi": "interpolation"}
        rows.update({name: [] for name in variants})
    original = model.pos
    head_dim = cfg.model.dim // cfg.model.heads
    for f in factors:
        length = f * context
        limit = type(original).max_len(context)  # learned positions stop at the training context
        rows[scheme].append(
            None
            if limit is not None and length > limit
            else perplexity(model, val, length, n_tokens)
        )
        for name, option in variants.items():
            model.pos = Rope(head_dim, context, **{option: float(f)})
            rows[name].append(perplexity(model, val, length, n_tokens))
            model.pos = original
    return rows


def write_table(results: dict, factors: list[int], context: int, path: Path) -> str:
    head = "| scheme | " + " | ".join(f"{f * context} ({f}L)" for f in factors) + " |"
    lines = [head, "|---" * (len(factors) + 1) + "|"]
    for name, ppl in results["perplexity"].items():
        cells = ["n/a" if p is None else f"{p:.2f}" for p in ppl]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table


def plot(results: dict, factors: list[int], context: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lengths = [f * context for f in factors]
    for name, ppl in results["perplexity"].items():
        pts = [(n, p) for n, p in zip(lengths, ppl) if p is not None]
        ax.plot(
            [n for n, _ in pts],
            [p for _, p in pts],
            marker="o",
            label=name,
            ls="--" if "+" in name else "-",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.axvline(context, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"evaluation length (trained at {context})")
    ax.set_ylabel("validation perplexity (char)")
    ax.set_title("Train short, test long")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, path)


def main(args) -> int:
    from ..train import Trainer

    base = resolve_config(args)
    out = out_folder(args.out)
    try:
        factors = [int(f) for f in args.factors.split(",")]
    except ValueError:
        raise ConfigError(
            f"--factors takes whole numbers separated by commas, got {args.factors!r}"
        ) from None
    if not factors or min(factors) < 1:
        raise ConfigError(f"--factors must be positive, got {args.factors!r}")
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not schemes:
        raise ConfigError(f"--schemes: give one or more position kinds ({', '.join(SCHEMES)})")
    context = base.model.context
    args.eval_windows = short("batches", args.eval_windows)  # TFMR_DOCS_SHORT: 2 windows a length
    results = {
        "context": context,
        "factors": factors,
        "perplexity": {},
        "train": {},
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "base": to_dict(base),
    }
    for scheme in schemes:
        cfg = run_config(base, scheme, out)
        t0 = time.perf_counter()
        trainer = Trainer(
            cfg, out / scheme, log=lambda *a: None, progress=False, overwrite=True
        )  # a re-run replaces it
        last = trainer.fit()
        seconds = time.perf_counter() - t0
        try:
            rows = evaluate(
                trainer.model, scheme, trainer.data.val, cfg, factors, args.eval_windows
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
        results["perplexity"].update(rows)
        results["train"][scheme] = {
            "seconds": round(seconds, 1),
            "val_loss": last.get("val_loss"),
            "train_loss": last.get("train_loss"),
        }
        for name, ppl in rows.items():
            shown = ", ".join("n/a" if p is None else f"{p:.2f}" for p in ppl)
            print(f"{name:>12}: {shown}   (trained in {seconds:.0f}s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = write_table(results, factors, context, out / "table.md")
    plot(results, factors, context, out / "perplexity.png")
    print(
        "\n"
        + table
        + f"\nwritten: {out / 'results.json'}, {out / 'table.md'}, {out / 'perplexity.png'}"
    )
    return 0
