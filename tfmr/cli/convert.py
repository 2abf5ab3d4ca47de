"""`tfmr convert`: a Hugging Face model folder -> a tfmr checkpoint (safetensors + config + tokenizer).

    tfmr convert --from-hf DIR --out CKPT [--allow-pickle] [--dtype float32] [--overwrite]

The folder is read by tfmr.interop.from_pretrained (config.json, safetensors shards,
tokenizer.json; no transformers import). The checkpoint is an ordinary one: `tfmr generate`,
`eval`, `viz` and `finetune` read it, with its sha256 manifest. --out follows tfmr.folders: a new
or empty folder, or an earlier checkpoint with --overwrite (replaced atomically once the
conversion succeeded); never the source, a run, or a folder of other files.
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
    p.add_argument("--overwrite", action="store_true", help="replace the checkpoint already in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import checkpoint
    from ..config import RunConfig, to_dict
    from ..folders import check_output
    from ..interop import from_pretrained

    out = check_output(args.out, "checkpoint", overwrite=args.overwrite, sources=[args.from_hf])
    dtype = None if args.dtype == "stored" else getattr(torch, args.dtype)
    model, tokenizer, model_type = from_pretrained(args.from_hf, allow_pickle=args.allow_pickle, dtype=dtype)
    checkpoint.save(out, model, to_dict(RunConfig(model=model.cfg)), tokenizer)
    path = args.out
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.from_hf} ({model_type}, {n:,} parameters) -> {path}")
    return 0
