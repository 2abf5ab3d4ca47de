"""Benchmarks: speed runs that print figures beside a peer measured in the same run.

Each module here exposes `add_arguments(parser)` and `main(args) -> int` and is listed in
`BENCHES`; `tfmr bench NAME` runs it. Benchmarks time the library; they assert nothing (speed
goals live here, never in timed tests). Only ratios measured in one run mean much on a shared
machine.

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
    quant-quality   what weight-only quantization costs in quality: held-out perplexity of a small
                    trained LM and the G2P test WER / PER at fp32, bf16 and int8 (nothing timed)
    tables          one command for the CPU tables of docs/benchmarks.md: runs train, cpu-decode,
                    quant-quality, bpe, hf-load and g2p, each beside its peer, and rewrites each
                    table between its marker comments, headed by the machine and the command
"""

from __future__ import annotations

from . import (
    bpe,
    cpu_decode,
    g2p,
    g2p_compare,
    g2p_lengths,
    g2p_serve,
    g2p_stream,
    gpu,
    gpu_attention,
    gpu_decode,
    hf_load,
    moe_dispatch,
    quant_quality,
    tables,
    train,
)

BENCHES = {
    "train": train,
    "bpe": bpe,
    "cpu-decode": cpu_decode,
    "gpu-decode": gpu_decode,
    "gpu-attention": gpu_attention,
    "g2p": g2p,
    "moe-dispatch": moe_dispatch,
    "gpu": gpu,
    "hf-load": hf_load,
    "g2p-serve": g2p_serve,
    "g2p-lengths": g2p_lengths,
    "g2p-compare": g2p_compare,
    "g2p-stream": g2p_stream,
    "quant-quality": quant_quality,
    "tables": tables,
}
