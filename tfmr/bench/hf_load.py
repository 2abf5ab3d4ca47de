"""Loading a Hugging Face folder: tfmr.from_pretrained beside transformers' from_pretrained.

    tfmr bench hf-load                    # a GPT-2 124M-shaped random folder (about 500 MB fp32)
    tfmr bench hf-load --quick            # a tiny GPT-2 shape (a smoke run, for tests)

The folder is written by this run itself (a random tfmr model in GPT-2 shape, exported with
tfmr.interop.hf_export, no download), then each loader reads it in turn for --rounds rounds (tfmr,
transformers, tfmr, ...), so that a shared machine's noise hits both alike; the figure is each
one's median seconds, and the ratio transformers / tfmr. Both build the model and load every
weight; neither moves it to a GPU. Without transformers installed only tfmr's time is printed.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..programs import positive_int, short, shortening

SHAPES = {
    "gpt2-124m": dict(vocab_size=50257, dim=768, layers=12, heads=12, context=1024),
    "quick": dict(vocab_size=512, dim=64, layers=2, heads=4, context=128),
}


def add_arguments(p) -> None:
    p.add_argument(
        "--quick", action="store_true", help="a tiny GPT-2 shape instead of 124M (a smoke run)"
    )
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="rounds of (tfmr, transformers) loads (default 3)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def write_folder(directory: Path, shape: str) -> int:
    """A random GPT-2-shaped model written as a Hugging Face folder; its parameter count."""
    from ..builder import build_model
    from ..config import Choice, ModelConfig
    from ..interop.hf_export import to_hf_folder

    torch.manual_seed(0)
    cfg = ModelConfig(
        **SHAPES[shape],
        pos=Choice("learned"),
        norm=Choice("layernorm"),
        bias=True,
        tie_embeddings=True,
        ffn=Choice("mlp", activation="gelu_tanh"),
    )
    model = build_model(cfg)
    to_hf_folder(model, None, directory, family="gpt2", check=False)
    return sum(p.numel() for p in model.parameters())


def _tfmr_load(directory: Path) -> None:
    from ..interop import from_pretrained

    from_pretrained(directory)


def _hf_load(directory: Path) -> None:
    import transformers

    transformers.AutoModelForCausalLM.from_pretrained(directory)


def main(args) -> int:
    try:
        import transformers  # noqa: F401

        loaders = {"tfmr": _tfmr_load, "transformers": _hf_load}
    except ImportError:
        loaders = {"tfmr": _tfmr_load}
    args.rounds = short("repeats", args.rounds)  # TFMR_DOCS_SHORT: one round of the tiny shape
    shape = "quick" if args.quick or shortening() else "gpt2-124m"
    times: dict[str, list[float]] = {name: [] for name in loaders}
    with tempfile.TemporaryDirectory() as tmp:
        n = write_folder(Path(tmp), shape)
        print(f"hf-load: a random {shape} folder ({n:,} parameters), {args.rounds} round(s)")
        for _ in range(args.rounds):
            for name, load in loaders.items():
                t0 = time.perf_counter()
                load(Path(tmp))
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:<13} {seconds:8.3f} s  (median of {len(times[name])})")
    if "transformers" in medians:
        print(f"  ratio transformers / tfmr: {medians['transformers'] / medians['tfmr']:.2f}")
    else:
        print("  transformers is not installed: no comparison")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"shape": shape, "parameters": n, "seconds": medians, "rounds": times}, indent=2
            )
        )
    return 0
