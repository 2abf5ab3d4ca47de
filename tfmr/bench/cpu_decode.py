"""Decoding speed on CPU: tfmr against Hugging Face `generate` at a small GPT-2 shape, one run.

    tfmr bench cpu-decode --out decode_cpu.md [--rounds 5] [--new-tokens 128]

The comparison `tfmr bench gpu-decode` (gpu_decode.py) makes on a GPU, at a CPU-sized shape: a random GPT-2 of
4 layers, width 256, 4 heads, GPT-2's vocabulary (50257) and context (1024), fp32, batch 1,
16-token prompt. Greedy and beam 4, each by HF generate, tfmr eager (decode.py), tfmr-static
(fastdecode.py's static cache, run eagerly) and tfmr-fast (the same step through torch.compile;
no CUDA graphs on CPU). Methods alternate within each round, so drift on a shared machine hits
all of them; medians of --rounds timed runs after a warm-up (which compiles). Only the ratios
measured in one run mean anything on a busy machine. Tokens are checked equal to HF's.
"""
from __future__ import annotations

import platform

import torch

from ..cli.common import count, positive_int
from ..config import ConfigError
from . import gpu_decode


def small_gpt2():
    import transformers

    cfg = transformers.GPT2Config(n_layer=4, n_embd=256, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def add_arguments(ap) -> None:
    ap.add_argument("--out", default="decode_cpu.md", help="markdown table; JSON beside it (.json)")
    ap.add_argument("--rounds", type=positive_int, default=5)
    ap.add_argument("--prompt-len", type=positive_int, default=16)
    ap.add_argument("--new-tokens", type=positive_int, default=128)
    ap.add_argument("--threads", type=count, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--no-compile", action="store_true")


def main(args) -> int:
    if args.prompt_len + args.new_tokens > 1024:
        raise ConfigError(f"--prompt-len + --new-tokens must fit GPT-2's context (1024), got "
                          f"{args.prompt_len + args.new_tokens}")
    gpu_decode.need_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.mode, args.check, args.static_too = None, True, True
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    torch.manual_seed(0)
    import transformers

    device = torch.device("cpu")
    env = {"device": platform.processor() or "cpu", "threads": torch.get_num_threads(), "dtype": "float32",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "compile": "off" if args.no_compile else "default (inductor C++)", "prompt": args.prompt_len,
           "new tokens": args.new_tokens, "rounds": args.rounds}
    print("environment:", env)
    bandwidth = gpu_decode.copy_bandwidth(device, torch.float32)
    rows = gpu_decode.case("gpt2-small-cpu (4x256)", small_gpt2(), args, device, torch.float32, ["greedy", "beam4"])
    gpu_decode.write_report(args.out, rows, env, bandwidth)
    return 0
