"""Decoding speed on CPU: tfmr against Hugging Face `generate` at a small GPT-2 shape, one run.

    python benchmarks/cpu_decode.py --out decode_cpu.md [--rounds 5] [--new-tokens 128]

The comparison benchmarks/gpu_decode.py makes on a GPU, at a CPU-sized shape: a random GPT-2 of
4 layers, width 256, 4 heads, GPT-2's vocabulary (50257) and context (1024), fp32, batch 1,
16-token prompt. Greedy and beam 4, each by HF generate, tfmr eager (decode.py), tfmr-static
(fastdecode.py's static cache, run eagerly) and tfmr-fast (the same step through torch.compile;
no CUDA graphs on CPU). Methods alternate within each round, so drift on a shared machine hits
all of them; medians of --rounds timed runs after a warm-up (which compiles). Only the ratios
measured in one run mean anything on a busy machine. Tokens are checked equal to HF's.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_decode  # noqa: E402


def small_gpt2():
    import transformers

    cfg = transformers.GPT2Config(n_layer=4, n_embd=256, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="decode_cpu.md")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
