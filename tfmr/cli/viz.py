"""`tfmr viz`: pictures (PNG). `positions`: the sinusoidal table, RoPE's rotation and ALiBi's
bias; `attention`: a checkpoint's attention heatmaps per layer and head for a text (an
encoder-decoder's encoder self-attention, the text being the source). The drawing is tfmr/viz.py.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .common import checkpoint_flags, encode_text, load_model, out_folder


def add_parser(sub) -> None:
    p = sub.add_parser("viz", help="pictures: positions, attention heatmaps (PNG)")
    viz_sub = p.add_subparsers(dest="what", required=True)
    v = viz_sub.add_parser("positions", help="sinusoidal table, RoPE rotation, ALiBi bias")
    v.add_argument("--out", default="runs/viz", help="folder for the PNG files")
    v.set_defaults(func=run)
    v = viz_sub.add_parser("attention", help="attention heatmaps per layer and head for a text")
    checkpoint_flags(v)
    v.add_argument(
        "--text", required=True, help="the text to attend over (cut to the model's context)"
    )
    v.add_argument("--out", default="runs/viz", help="folder for the PNG files")
    v.set_defaults(func=run)


def run(args) -> int:
    from .. import viz

    out_folder(args.out)
    if args.what == "positions":
        paths = viz.positions(args.out)
    else:
        import torch

        model, tokenizer, _ = load_model(Path(args.checkpoint), args.allow_pickle)
        ids = encode_text(tokenizer, args.text, "--text")
        if not ids:
            raise ConfigError("the text is empty; give at least one character")
        labels = [tokenizer.decode([i]) for i in ids]
        paths = viz.attention_maps(
            model, torch.tensor([ids[: model.cfg.context]]), args.out, labels
        )
    print("\n".join(str(p) for p in paths))
    return 0
