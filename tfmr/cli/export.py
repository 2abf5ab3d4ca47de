"""`tfmr checkpoint export hf|onnx`: a tfmr checkpoint in another format.

    tfmr checkpoint export hf --checkpoint CKPT --out DIR [--family gpt2|llama]
    tfmr checkpoint export onnx --checkpoint CKPT --out DIR   prefill.onnx + step.onnx (decoder-only),
                                                              encoder.onnx + decoder.onnx (encoder-decoder,
                                                              also a G2P checkpoint)

`export hf` writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json) that
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads with the same logits
(tfmr/interop/hf_export.py); `tfmr checkpoint import hf` reads one back. A model with a setting
no exported family expresses is refused with one line naming the setting. (`tfmr g2p export` is
a different command: an inference copy of a G2P checkpoint.) --out follows tfmr.folders: a new or
empty folder, or an earlier export of the same format with --overwrite; the folder is written
beside and renamed into place once complete.
"""

from __future__ import annotations

import importlib.util
import sys

from ..config import ConfigError
from .common import checkpoint_flags


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="a checkpoint as a Hugging Face folder or ONNX graphs",
        description="tfmr checkpoint export FORMAT --checkpoint CKPT --out DIR",
    )
    formats = p.add_subparsers(dest="to", required=True, metavar="FORMAT")
    hf = formats.add_parser(
        "hf",
        help="a transformers folder (config.json, model.safetensors, tokenizer.json)",
        description="A checkpoint as a Hugging Face folder that transformers loads with the "
        "same logits.",
    )
    _common_flags(hf)
    hf.add_argument(
        "--family",
        default=None,
        help="the family to write (default: the first that fits: "
        "gpt2, llama; llama writes mistral for a sliding window)",
    )
    hf.set_defaults(func=run)
    onnx = formats.add_parser(
        "onnx",
        help="prefill + cached step graphs; encoder + cached decoder step for an encoder-decoder",
        description="A checkpoint as ONNX graphs.",
    )
    _common_flags(onnx)
    onnx.set_defaults(func=run, family=None)


def _common_flags(p) -> None:
    checkpoint_flags(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export of the same format in --out",
    )


def load_for_export(args):
    """(model, tokenizer) of --checkpoint: a language-model checkpoint or a Hugging Face folder
    (load_model); for onnx also a sequence-to-sequence checkpoint (one with vocab.json, such
    as a G2P model), whose tokenizer is its PairVocab."""
    from ..config import RunConfig
    from .common import load_model

    return load_model(
        args.checkpoint, args.allow_pickle, expect=None if args.to == "onnx" else RunConfig
    )[:2]


def run(args) -> int:
    from ..folders import check_output, staged
    from ..interop.hf_export import to_hf_folder

    out = check_output(args.out, args.to, overwrite=args.overwrite, sources=[args.checkpoint])
    if args.to == "onnx":
        from ..interop.onnx_export import export_onnx

        if importlib.util.find_spec("onnx") is None:
            raise ConfigError("export onnx needs the onnx package: pip install 'tfmr[onnx]'")
        model, _ = load_for_export(args)
        with staged(out) as tmp:
            names = [path.name for path in export_onnx(model, tmp)]
        for name in names:
            print(out / name)
        return 0
    model, tokenizer = load_for_export(args)
    with staged(out) as tmp:
        family, wrote_tokenizer = to_hf_folder(model.float(), tokenizer, tmp, args.family)
    print(f"{args.checkpoint} -> {args.out} (Hugging Face {family})")
    if not wrote_tokenizer:
        print(
            f"note: the {getattr(tokenizer, 'kind', '?')} tokenizer has no tokenizer.json form; "
            "none was written",
            file=sys.stderr,
        )
    return 0
