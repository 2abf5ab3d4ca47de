"""`tfmr checkpoint quantize`: a checkpoint with its linear layers' weights in int8 or bf16, for decoding.

    tfmr checkpoint quantize --checkpoint CKPT --to int8 --out DIR [--overwrite]
                                         CKPT: a language model, a G2P model or a Hugging Face folder

Writes a tfmr checkpoint (model.safetensors with the int8 matrices and their per-channel scales,
or the bf16 matrices; config.json with `decode.weights` set; the tokenizer or vocab; the sha256
manifest), which `tfmr lm generate`, `tfmr g2p eval --checkpoint DIR` and the library loaders read
like any other (tfmr/quantize.py), and `tfmr checkpoint export onnx` exports (int8 as
DequantizeLinear, bf16 as Cast). A model that cannot be quantized is refused in one line.
--out follows the folder policy of every writing command (tfmr/folders.py): a new or empty folder,
or an earlier checkpoint with --overwrite; never the source, a folder around or inside it, or a
folder of other files.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .common import checkpoint_flags

TARGETS = ("int8", "bf16")


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="a checkpoint with int8 or bf16 weights for decoding")
    checkpoint_flags(p, "a tfmr checkpoint (language model or G2P)")
    p.add_argument(
        "--to",
        choices=TARGETS,
        required=True,
        help="the weights' type (per-channel scales for int8)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the new checkpoint folder")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint already in --out"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import checkpoint
    from ..config import to_dict
    from ..folders import check_output
    from ..quantize import convert_, saved_weights, weight_bytes
    from .common import load_model

    source = Path(args.checkpoint)
    out = check_output(args.out, "checkpoint", overwrite=args.overwrite, sources=[source])
    model, tokenizer, cfg = load_model(
        source, args.allow_pickle, expect=None
    )  # a G2P checkpoint too
    from ..ensemble import Ensemble

    if isinstance(model, Ensemble):
        raise ConfigError(
            f"{source} is an exported ensemble; quantize each member's checkpoint, then export them "
            "together (tfmr g2p export --checkpoint A --checkpoint B)"
        )
    convert_(model, saved_weights(cfg), args.to)
    cfg.decode.weights = args.to
    checkpoint.save(out, model, to_dict(cfg), tokenizer)
    print(
        f"wrote {out}: linear layers in {args.to} ({weight_bytes(model) / 1e6:.1f} MB of matrices)"
    )
    return 0
