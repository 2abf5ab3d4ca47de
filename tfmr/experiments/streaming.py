"""Generating a long stream: decoding memory in use and tokens per second along the way.

Each variant is the experiment's base model (weights as initialised: memory and speed do not
depend on training) generating `--tokens` tokens greedily, one at a time, through tfmr's own
decoding state (`model.start_state` / `model.step`), with no restart at the context:

    full        dense attention, a KV cache of every position so far (grows by one each step)
    sliding     a rolling cache of the last `--window` positions (absolute positions)
    sinks       4 attention sinks + a window (StreamingLLM; positions inside the cache)
    retention   RetNet retention: a recurrent state per layer
    hybrid      retention layers with every third layer attention over sinks + window

Every `--every` tokens it records the bytes of decoding state in use (`used_bytes()` of each
layer's cache: the positions held, or the retention state) and the tokens per second over the
last stretch. Full attention's bytes grow linearly and its steps slow down; sinks and retention
stay flat. Writes results.json, table.md and streaming.png in --out.

    tfmr experiment streaming --out runs/streaming                    # 20,000 tokens per variant
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from ..builder import build_model
from ..config import Choice, ConfigError, RunConfig, to_dict
from ..programs import config_flags, out_folder, positive_int, resolve_config
from .plots import save

VARIANTS = ("full", "sliding", "sinks", "retention", "hybrid")


def add_arguments(p) -> None:
    config_flags(p, preset="exp-streaming", data=False)
    p.add_argument(
        "--out", default="runs/streaming", help="folder for the table, plot and results.json"
    )
    p.add_argument(
        "--tokens", type=positive_int, default=20000, help="tokens to generate per variant"
    )
    p.add_argument(
        "--every", type=positive_int, default=1000, help="record memory and speed every N tokens"
    )
    p.add_argument(
        "--window", type=positive_int, default=252, help="window of sliding and sinks (sinks: + 4)"
    )
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"which to run ({', '.join(VARIANTS)})"
    )


def variant_config(base: RunConfig, name: str, window: int) -> RunConfig:
    cfg = copy.deepcopy(base)
    m = cfg.model
    if name == "sliding":
        m.attention_pattern = Choice("sliding", window=window)
    elif name in ("sinks", "hybrid"):
        m.attention_pattern = Choice("sinks", sinks=4, window=window)
    if name == "retention":
        m.mixer = Choice("retention")
    elif name == "hybrid":
        m.mixer, m.mixer_pattern = Choice("retention"), "retention,retention,attention"
    return cfg


@torch.no_grad()
def generate(model, tokens: int, every: int, device) -> list[dict]:
    """Greedy generation from one token; a record every `every` tokens."""
    model.eval()
    state = model.start_state(1, tokens + 1)
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    records, t0 = [], time.perf_counter()
    for i in range(1, tokens + 1):
        logits, state = model.step(token, state)
        token = logits.argmax(-1, keepdim=True)  # (1, 1)
        if i % every == 0 or i == tokens:
            now = time.perf_counter()
            done = i - (records[-1]["tokens"] if records else 0)
            records.append(
                {
                    "tokens": i,
                    "state_bytes": sum(c.used_bytes() for c in state.cache),
                    "tokens_per_s": round(done / max(now - t0, 1e-9), 1),
                }
            )
            t0 = now
    return records


def write_table(results: dict, path: Path) -> str:
    lines = [
        "| variant | state bytes at start | at end | tokens/s at start | at end |",
        "|---|---|---|---|---|",
    ]
    for name, recs in results["variants"].items():
        a, b = recs[0], recs[-1]
        lines.append(
            f"| {name} | {a['state_bytes']:,} | {b['state_bytes']:,} | {a['tokens_per_s']:.0f} | "
            f"{b['tokens_per_s']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, recs in results["variants"].items():
        n = [r["tokens"] for r in recs]
        left.plot(n, [r["state_bytes"] / 2**20 for r in recs], marker="o", ms=3, label=name)
        right.plot(n, [r["tokens_per_s"] for r in recs], marker="o", ms=3, label=name)
    left.set(xlabel="tokens generated", ylabel="decoding state in use (MiB)", title="Memory")
    right.set(xlabel="tokens generated", ylabel="tokens / s (last stretch)", title="Speed")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def main(args) -> int:
    base = resolve_config(args)
    out = out_folder(args.out)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not names or any(v not in VARIANTS for v in names):
        raise ConfigError(f"--variants takes some of {', '.join(VARIANTS)}; got {args.variants!r}")
    device = torch.device("cuda" if base.train.device == "cuda" else "cpu")
    results = {
        "tokens": args.tokens,
        "every": args.every,
        "window": args.window,
        "variants": {},
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "base": to_dict(base),
    }
    for name in names:
        torch.manual_seed(base.train.seed)
        model = build_model(variant_config(base, name, args.window).model).to(device)
        results["variants"][name] = recs = generate(model, args.tokens, args.every, device)
        print(
            f"{name:>10}: state {recs[0]['state_bytes']:,} -> {recs[-1]['state_bytes']:,} bytes, "
            f"{recs[0]['tokens_per_s']:.0f} -> {recs[-1]['tokens_per_s']:.0f} tokens/s",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = write_table(results, out / "table.md")
    plot(results, out / "streaming.png")
    print(
        "\n"
        + table
        + f"\nwritten: {out / 'results.json'}, {out / 'table.md'}, {out / 'streaming.png'}"
    )
    return 0
