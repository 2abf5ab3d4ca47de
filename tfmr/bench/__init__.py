"""Benchmarks: speed runs that print figures beside a peer measured in the same run.

Each module here exposes `add_arguments(parser)` and `main(args) -> int` and is listed in
`MODULES` (`BENCHES` holds them imported); `tfmr bench NAME` runs it. Benchmarks time the
library; they assert nothing (speed goals live here, never in timed tests). Only ratios measured
in one run mean much on a shared machine.

    train           training tokens/s and MFU: tfmr's Trainer beside Hugging Face GPT-2 and nanoGPT
    bpe             BPE training and encoding: tfmr beside Hugging Face tokenizers and tiktoken
    cpu-decode      decoding tokens/s on CPU at a small GPT-2 shape, beside Hugging Face generate
    gpu-decode      decoding tokens/s on a GPU (GPT-2 124M, stories110M), beside HF generate and gpt-fast
    gpu-attention   attention kernels, forward + backward, beside SDPA flash (--quick: CPU smoke run)
    g2p             G2P on CPU: the model's words/s (greedy, beam 5) and one-word latency, beside CMUdict
                    lookup (the shipped model, or --checkpoint); --peer phonetisaurus trains Phonetisaurus
                    on the same split in the same run (peers/) and breaks down where each loses words
                    (g2p_breakdown.py)
    g2p-serve       `tfmr g2p serve` under concurrent clients: requests/s and latency for one word
    g2p-stream      `tfmr g2p -` on 100,000 words: peak memory and time to the first line
    g2p-lengths     G2P test WER by word length, before and after the long-word checks (quality)
    g2p-compare     tfmr g2p beside espeak-ng and g2p_en on the same sentences (IPA side by side)
    moe-dispatch    one MoE layer vs a dense FFN of the same active size (the quality comparison is
                    `tfmr experiment moe`)
    gpu             all of the GPU figures in one time-boxed run (training at GPT-2 / Llama 124M,
                    decoding, attention, MoE): one JSON and one markdown table (--quick: CPU smoke run)
    hf-load         loading a Hugging Face folder (GPT-2 124M shape): tfmr.from_pretrained beside
                    transformers' from_pretrained
    startup         `tfmr --help`, `--version`, `presets`, `g2p hello` as fresh processes, beside
                    `python -c "import torch"` (goal: 0.3 s)
    quant-quality   what weight-only quantization costs in quality: held-out perplexity of a small
                    trained LM and the G2P test WER / PER at fp32, bf16 and int8 (nothing timed)
    tables          one command for the CPU tables of docs/benchmarks.md: runs train, cpu-decode,
                    quant-quality, bpe, hf-load and g2p, each beside its peer, and rewrites each
                    table between its marker comments, headed by the machine and the command
"""

from __future__ import annotations

import importlib

# name -> its module. `tfmr bench NAME` imports NAME's module only (tfmr.programs.lazy_commands
# reads the help lines from the files), so `tfmr --help` and `tfmr bench --help` load no torch;
# BENCHES (name -> module, every one imported) is made on first use.
MODULES = {
    "train": "tfmr.bench.train",
    "bpe": "tfmr.bench.bpe",
    "cpu-decode": "tfmr.bench.cpu_decode",
    "gpu-decode": "tfmr.bench.gpu_decode",
    "gpu-attention": "tfmr.bench.gpu_attention",
    "g2p": "tfmr.bench.g2p",
    "moe-dispatch": "tfmr.bench.moe_dispatch",
    "gpu": "tfmr.bench.gpu",
    "hf-load": "tfmr.bench.hf_load",
    "g2p-serve": "tfmr.bench.g2p_serve",
    "g2p-lengths": "tfmr.bench.g2p_lengths",
    "g2p-compare": "tfmr.bench.g2p_compare",
    "g2p-stream": "tfmr.bench.g2p_stream",
    "startup": "tfmr.bench.startup",
    "quant-quality": "tfmr.bench.quant_quality",
    "tables": "tfmr.bench.tables",
}


def __getattr__(name: str):
    """BENCHES: name -> module, each imported (and kept) on first use."""
    if name != "BENCHES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    benches = {key: importlib.import_module(dotted) for key, dotted in MODULES.items()}
    globals()["BENCHES"] = benches
    return benches
