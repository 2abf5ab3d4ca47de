"""`tfmr checkpoint import hf`: a Hugging Face model folder -> a tfmr checkpoint (safetensors + config
+ tokenizer); the mirror of `tfmr checkpoint export hf` (cli/export.py).

    tfmr checkpoint import hf --checkpoint HF-DIR --out CKPT [--allow-pickle] [--dtype float32] [--overwrite]

The folder is read by tfmr.interop.from_pretrained (config.json, safetensors shards,
tokenizer.json; no transformers import). The checkpoint is an ordinary one: `tfmr lm generate`,
`lm eval`, `viz` and `lm finetune` read it, with its sha256 manifest. --out follows tfmr.folders: a new
or empty folder, or an earlier checkpoint with --overwrite (replaced atomically once the
conversion succeeded); never the source, a run, or a folder of other files.
"""

from __future__ import annotations

DTYPES = ("stored", "float32", "bfloat16", "float16")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import",
        help="a model folder of another library -> a tfmr checkpoint",
        description="tfmr checkpoint import FORMAT --checkpoint DIR --out CKPT",
    )
    formats = p.add_subparsers(dest="source_format", required=True, metavar="FORMAT")
    hf = formats.add_parser(
        "hf",
        help="a Hugging Face model folder -> a tfmr checkpoint",
        description="A Hugging Face model folder (config.json + safetensors + tokenizer.json) "
        "-> a tfmr checkpoint.",
    )
    hf.add_argument(
        "--checkpoint",
        required=True,
        metavar="HF-DIR",
        help="the Hugging Face folder to read (config.json + safetensors)",
    )
    hf.add_argument("--out", required=True, metavar="CKPT", help="the checkpoint folder to write")
    hf.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a pytorch_model.bin with torch.load(weights_only=True) (default: refused)",
    )
    hf.add_argument(
        "--dtype", choices=DTYPES, default="stored", help="weight type (stored: as in the folder)"
    )
    hf.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint already in --out"
    )
    hf.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import checkpoint
    from ..config import RunConfig, to_dict
    from ..folders import check_output
    from ..interop import from_pretrained

    out = check_output(args.out, "checkpoint", overwrite=args.overwrite, sources=[args.checkpoint])
    dtype = None if args.dtype == "stored" else getattr(torch, args.dtype)
    model, tokenizer, model_type = from_pretrained(
        args.checkpoint, allow_pickle=args.allow_pickle, dtype=dtype
    )
    checkpoint.save(out, model, to_dict(RunConfig(model=model.cfg)), tokenizer)
    path = args.out
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint} ({model_type}, {n:,} parameters) -> {path}")
    return 0
