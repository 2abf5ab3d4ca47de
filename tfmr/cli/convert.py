"""`tfmr convert`: a Hugging Face model folder -> a tfmr checkpoint (safetensors + config + tokenizer).

    tfmr convert --from-hf DIR --out CKPT [--allow-pickle] [--dtype float32]

The folder is read by tfmr.interop.from_pretrained (config.json, safetensors shards,
tokenizer.json; no transformers import). The checkpoint is an ordinary one: `tfmr generate`,
`eval`, `viz` and `finetune` read it, with its sha256 manifest.
"""
from __future__ import annotations

DTYPES = ("stored", "float32", "bfloat16", "float16")


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="a Hugging Face model folder -> a tfmr checkpoint")
    p.add_argument("--from-hf", required=True, metavar="DIR", help="Hugging Face folder (config.json + safetensors)")
    p.add_argument("--out", required=True, metavar="CKPT", help="the checkpoint folder to write")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a pytorch_model.bin with torch.load(weights_only=True) (default: refused)")
    p.add_argument("--dtype", choices=DTYPES, default="stored", help="weight type (default: as stored)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import checkpoint
    from ..config import RunConfig, to_dict
    from ..interop import from_pretrained
    from .common import out_folder

    dtype = None if args.dtype == "stored" else getattr(torch, args.dtype)
    model, tokenizer, model_type = from_pretrained(args.from_hf, allow_pickle=args.allow_pickle, dtype=dtype)
    out_folder(args.out)
    path = checkpoint.save(args.out, model, to_dict(RunConfig(model=model.cfg)), tokenizer)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.from_hf} ({model_type}, {n:,} parameters) -> {path}")
    return 0
