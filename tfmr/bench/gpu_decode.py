"""Decoding speed: tfmr against Hugging Face `generate`, in one run, every figure to one file.

    tfmr bench gpu-decode --out decode_gpu.md            # on a GPU: the issue's figures
    tfmr bench gpu-decode --quick --out /tmp/quick.md    # CPU smoke run of every code path

Cases (GPU defaults: bf16, batch 1, 16-token prompt, 256 new tokens; median of --rounds timed runs
after one warm-up run that also compiles; methods alternate within each round):

  gpt2-124m    a random GPT-2 small (HF GPT2LMHeadModel, loaded into tfmr with from_hf):
               greedy and beam 4, each by HF generate (dynamic cache), tfmr eager (decode.py) and
               tfmr fast (fastdecode.py: static cache + torch.compile, CUDA graphs on a GPU)
  stories110m  gpt-fast's Llama shape (12 layers, dim 768, 12 heads, vocab 32000, SwiGLU 2048),
               random HF LlamaForCausalLM loaded with from_hf: greedy (HF, tfmr eager, tfmr fast)
               and top-k 200 sampling at temperature 0.8 as gpt-fast runs it (HF, tfmr fast)

Beside each figure: tokens/s (new tokens of the returned sequence per second), the speed-up over HF
in the same run, whether greedy tokens agree with HF, and the memory-bandwidth limit: copy
bandwidth measured here divided by the bytes one decode step reads (weights, with a tied
embedding read once as the output head, plus the whole static KV cache the fast step attends
over). Published peer: gpt-fast 1,959 tokens/s at stories110m on an H100 (gpt-fast's README).
A method that fails is reported with its error; the others still run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from .. import decode
from ..config import ConfigError
from ..fastdecode import FastDecoder
from ..interop import FAMILIES, from_hf
from ..programs import positive_int, progress_bar, torch_device
from ..quantize import argmax_agreement, quantize_
from ..quantize import weight_bytes as quantized_bytes

GPT_FAST_STORIES110M_H100 = 1959.0  # tokens/s, gpt-fast's published figure


# ----------------------------------------------------------------------------- models
def hf_gpt2(quick: bool):
    import transformers

    if quick:
        cfg = transformers.GPT2Config(
            vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4
        )
    else:
        cfg = (
            transformers.GPT2Config()
        )  # 124M: 12 layers, 768 wide, 12 heads, vocab 50257, context 1024
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0
    return transformers.GPT2LMHeadModel(cfg)


def hf_stories110m(quick: bool):
    import transformers

    size = (
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
        if quick
        else dict(
            vocab_size=32000,
            hidden_size=768,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_key_value_heads=12,
        )
    )
    cfg = transformers.LlamaConfig(
        **size,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(cfg)


# ----------------------------------------------------------------------------- measuring
def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device, dtype) -> float:
    """Bytes per second a device-to-device copy moves (read + write)."""
    n = (256 if device.type == "cuda" else 16) * 2**20
    x = torch.ones(n, dtype=dtype, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync(device)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        y.copy_(x)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * x.numel() * x.element_size() / statistics.median(times)


def bytes_per_step(model, batch: int, max_len: int) -> tuple[int, int]:
    """(weight bytes, KV cache bytes) one decode step reads. Embedding tables are read one row
    per token, except a tied embedding, which the output head reads whole."""
    seen, weights = set(), 0
    tables = {id(model.tok_emb.weight)} | {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)
    }
    head = id(model.lm_head.weight)
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in tables and id(p) != head:
            continue
        weights += p.numel() * p.element_size()
    weights += quantized_bytes(
        model
    )  # int8 / bf16 matrices (and scales) are buffers, not parameters
    a = model.blocks[0].attn
    p = next(model.parameters())
    cache = 2 * len(model.blocks) * batch * a.kv_heads * a.head_dim * max_len * p.element_size()
    return weights, cache


class Bench:
    """Methods timed in alternating rounds; failures recorded, not raised. The timed rounds show a
    progress bar named `name` (programs.progress_bar: on a terminal), after each warm-up's line."""

    def __init__(self, device, rounds: int, name: str = "timing"):
        self.device, self.rounds, self.name = device, rounds, name
        self.methods: dict = {}
        self.results: dict = {}

    def add(self, name: str, fn) -> None:
        self.methods[name] = fn

    def run(self, log=print) -> dict:
        for name, fn in self.methods.items():  # warm-up: compiles, fills caches
            t0 = time.perf_counter()
            try:
                out = fn()
                sync(self.device)
                self.results[name] = {"warmup_s": time.perf_counter() - t0, "times": [], "out": out}
                log(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001 - a benchmark reports what broke and goes on
                self.results[name] = {
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                }
                log(f"  {name} FAILED: {self.results[name]['error']}")
        timed = [name for name in self.methods if "error" not in self.results[name]]
        with progress_bar(self.rounds * len(timed), self.name, "run") as bar:
            for _ in range(self.rounds):
                for name in timed:
                    r = self.results[name]
                    sync(self.device)
                    t0 = time.perf_counter()
                    r["out"] = self.methods[name]()
                    sync(self.device)
                    r["times"].append(time.perf_counter() - t0)
                    bar.update(1)
        for r in self.results.values():
            if "times" in r:
                r["seconds"] = statistics.median(r["times"])
        return self.results


def new_ids(out, prompt_len: int) -> torch.Tensor:
    ids = out.sequences if hasattr(out, "sequences") else out
    return ids[0, prompt_len:].cpu()


# ----------------------------------------------------------------------------- cases
def fast_decoders(model, batch: int, max_len: int, args) -> dict:
    """tfmr-fast: static cache + torch.compile (unless --no-compile); with args.static_too also
    tfmr-static: the same static-cache step run eagerly."""
    decs = {
        "tfmr-fast": FastDecoder(model, batch, max_len, compile=not args.no_compile, mode=args.mode)
    }
    if getattr(args, "static_too", False):
        decs["tfmr-static"] = FastDecoder(model, batch, max_len)
    return decs


def quantized_decoders(models: dict, batch: int, max_len: int, args) -> dict:
    """tfmr-fast-{bf16,int8}: the fast step (compiled unless --no-compile) over each weight-only
    quantized copy of the model (tfmr/quantize.py)."""
    return {
        w: FastDecoder(m, batch, max_len, compile=not args.no_compile, mode=args.mode)
        for w, m in models.items()
        if w != "fp32"
    }


def case(name, hf, args, device, dtype, strategies, log=print) -> list[dict]:
    """Time HF generate and tfmr (eager and fast) on one model for each strategy."""
    import transformers  # noqa: F401 - the peer

    hf = hf.to(device=device, dtype=dtype).eval()
    model = from_hf(hf).to(device)
    P, N = args.prompt_len, args.new_tokens
    ids = torch.randint(
        0, hf.config.vocab_size, (1, P), generator=torch.Generator().manual_seed(0)
    ).to(device)
    mask = torch.ones_like(ids)
    hf_common = dict(
        attention_mask=mask, max_new_tokens=N, min_new_tokens=N, eos_token_id=None, pad_token_id=0
    )
    rows = []
    models = {
        "fp32": model,
        **{w: quantize_(copy.deepcopy(model), w) for w in getattr(args, "weights", ())},
    }
    agreement = {}
    for strategy in strategies:
        bench = Bench(device, args.rounds, f"{strategy}: timed rounds")
        if strategy == "greedy":
            bench.add("hf", lambda: hf.generate(ids, do_sample=False, num_beams=1, **hf_common))
            bench.add("tfmr-eager", lambda: decode.greedy(model, ids, N))
            for label, dec in fast_decoders(model, 1, P + N, args).items():
                bench.add(label, lambda dec=dec: dec.generate(ids, N))
            for w, dec in quantized_decoders(models, 1, P + N, args).items():
                bench.add(f"tfmr-fast-{w}", lambda dec=dec: dec.generate(ids, N))
        elif strategy == "beam4":
            bench.add("hf", lambda: hf.generate(ids, do_sample=False, num_beams=4, **hf_common))
            bench.add("tfmr-eager", lambda: decode.beam_search(model, ids, 4, N))
            for label, dec in fast_decoders(model, 4, P + N, args).items():
                bench.add(label, lambda dec=dec: dec.beam_search(ids, 4, N))
            for w, dec in quantized_decoders(models, 4, P + N, args).items():
                bench.add(f"tfmr-fast-{w}", lambda dec=dec: dec.beam_search(ids, 4, N))
        else:  # gpt-fast's sampling: top-k 200, temperature 0.8
            bench.add(
                "hf",
                lambda: hf.generate(ids, do_sample=True, top_k=200, temperature=0.8, **hf_common),
            )
            for label, dec in fast_decoders(model, 1, P + N, args).items():
                bench.add(label, lambda dec=dec: dec.generate(ids, N, temperature=0.8, top_k=200))
        log(f"{name} / {strategy}")
        results = bench.run(log)
        batch = 4 if strategy == "beam4" else 1
        hf_s = results["hf"].get("seconds")
        ref = new_ids(results["hf"]["out"], P) if "out" in results["hf"] else None
        if (
            strategy == "greedy" and "out" in results["tfmr-eager"]
        ):  # fp32 greedy, read by each precision
            fp32 = results["tfmr-eager"]["out"]
            agreement = {
                w: argmax_agreement(model, m, fp32, P) for w, m in models.items() if w != "fp32"
            }
        for method, r in results.items():
            precision = method.rsplit("-", 1)[1] if method.startswith("tfmr-fast-") else "fp32"
            row = {"model": name, "strategy": strategy, "method": method, "weights": precision}
            if "error" in r:
                rows.append({**row, "error": r["error"]})
                continue
            weights, cache = bytes_per_step(models[precision], batch, P + N)
            got = new_ids(r["out"], P)
            row.update(
                seconds=r["seconds"],
                tokens_per_s=len(got) / r["seconds"],
                warmup_s=r["warmup_s"],
                speedup_vs_hf=(hf_s / r["seconds"]) if hf_s else None,
                weights_mb=weights / 1e6,
                kv_cache_mb=cache / 1e6,
                same_tokens_as_hf=(
                    None
                    if strategy == "sample" or ref is None
                    else int((got[: len(ref)] == ref[: len(got)]).sum())
                ),
                new_tokens=len(got),
                argmax_agreement_fp32=agreement.get(precision),
            )
            rows.append(row)
            log(
                f"    {method:11s} {row['tokens_per_s']:9.1f} tokens/s  ({row['seconds'] * 1e3:8.1f} ms, "
                f"x{row['speedup_vs_hf'] or float('nan'):.2f} vs HF)"
            )
        if args.check and strategy == "greedy":
            eager, fastest = (
                new_ids(results["tfmr-eager"]["out"], P),
                new_ids(results["tfmr-fast"]["out"], P),
            )
            assert torch.equal(eager, fastest), "fast greedy differs from eager greedy"
            assert torch.equal(eager, ref), "tfmr greedy differs from HF generate"
            log("    check: tfmr fast == tfmr eager == HF generate (greedy tokens)")
        if args.check and strategy == "beam4":
            assert torch.equal(
                new_ids(results["tfmr-eager"]["out"], P), new_ids(results["tfmr-fast"]["out"], P)
            )
            assert torch.equal(new_ids(results["tfmr-eager"]["out"], P), ref), (
                "tfmr beam differs from HF"
            )
            log("    check: tfmr fast == tfmr eager == HF generate (beam 4 tokens)")
        del bench, results
    return rows


def markdown(rows: list[dict], env: dict, bandwidth: float) -> str:
    lines = [
        f"# Decoding benchmark ({env['device']}, {env['dtype']})",
        "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in env.items() if k != "WARNING"),
        "",
    ]
    if env.get("WARNING"):
        lines += [
            f"**WARNING: {env['WARNING']}; the figures below are shared with other work.**",
            "",
        ]
    lines += [
        "| model | strategy | method | weights | tokens/s | ms / run | x HF (same run) | same tokens as HF | "
        "next token as fp32 (teacher-forced) | bytes read / token (MB) | bandwidth limit tokens/s | "
        "share of limit | first run (compile) s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['strategy']} | {r['method']} | {r.get('weights', '')} | "
                f"failed: {r['error']} | | | | | | | | |"
            )
            continue
        limit = bandwidth / ((r["weights_mb"] + r["kv_cache_mb"]) * 1e6)  # one step = one token
        same = (
            "" if r["same_tokens_as_hf"] is None else f"{r['same_tokens_as_hf']}/{r['new_tokens']}"
        )
        sp = "" if r["speedup_vs_hf"] is None else f"{r['speedup_vs_hf']:.2f}"
        agree = (
            "" if r.get("argmax_agreement_fp32") is None else f"{r['argmax_agreement_fp32']:.1%}"
        )
        lines.append(
            f"| {r['model']} | {r['strategy']} | {r['method']} | {r.get('weights', 'fp32')} | "
            f"{r['tokens_per_s']:.1f} | {r['seconds'] * 1e3:.1f} | {sp} | {same} | {agree} | "
            f"{r['weights_mb'] + r['kv_cache_mb']:.1f} | {limit:.0f} | {r['tokens_per_s'] / limit:.1%} | "
            f"{r['warmup_s']:.1f} |"
        )
    lines += [
        "",
        f"copy bandwidth measured: {bandwidth / 1e9:.1f} GB/s; peer: gpt-fast {GPT_FAST_STORIES110M_H100:.0f} "
        "tokens/s at stories110m on an H100 (static cache + torch.compile).",
        "",
        "environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
    ]
    return "\n".join(lines) + "\n"


def need_transformers() -> None:
    if importlib.util.find_spec("transformers") is None:
        raise ConfigError(
            "the decoding benchmarks time Hugging Face generate beside tfmr: pip install transformers"
        )


def add_arguments(ap) -> None:
    ap.add_argument(
        "--out", default="decode_bench.md", help="markdown table; JSON beside it (.json)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny shapes on CPU, fp32: proves every code path runs"
    )
    ap.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: cuda if there is one)"
    )
    ap.add_argument("--prompt-len", type=positive_int, default=None)
    ap.add_argument("--new-tokens", type=positive_int, default=None)
    ap.add_argument("--rounds", type=positive_int, default=None)
    ap.add_argument(
        "--mode", default=None, help="torch.compile mode (default: reduce-overhead on CUDA)"
    )
    ap.add_argument(
        "--no-compile", action="store_true", help="the static-cache path without torch.compile"
    )
    ap.add_argument("--only", choices=["gpt2-124m", "stories110m"], default=None)


def main(args) -> int:
    need_transformers()
    device = torch_device(
        args.device or ("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    )
    dtype = torch.float32 if args.quick or device.type == "cpu" else torch.bfloat16
    args.prompt_len = args.prompt_len or (8 if args.quick else 16)
    args.new_tokens = args.new_tokens or (16 if args.quick else 256)
    args.rounds = args.rounds or (1 if args.quick else 3)
    context = 64 if args.quick else 1024  # the GPT-2 model's (the Llama one has 2048)
    if args.prompt_len + args.new_tokens > context:
        raise ConfigError(
            f"--prompt-len + --new-tokens must fit the model's context ({context}), got "
            f"{args.prompt_len + args.new_tokens}"
        )
    args.check = dtype == torch.float32  # token equality is only promised in fp32
    for name in (
        "cache_size_limit",
        "recompile_limit",
    ):  # one compiled step per FastDecoder and setting
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    torch.manual_seed(0)
    import transformers

    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "compile": "off"
        if args.no_compile
        else (args.mode or ("reduce-overhead" if device.type == "cuda" else "default")),
        "prompt": args.prompt_len,
        "new tokens": args.new_tokens,
        "rounds": args.rounds,
    }
    print("environment:", env)
    bandwidth = copy_bandwidth(device, dtype)
    rows = []
    todo = [
        ("gpt2-124m", "gpt2-tiny", hf_gpt2, ["greedy", "beam4"]),
        ("stories110m", "llama-tiny", hf_stories110m, ["greedy", "sample"]),
    ]
    for name, quick_name, make, strategies in todo:
        if args.only not in (None, name):
            continue
        if name == "stories110m" and "llama" not in FAMILIES:
            rows.append(
                {
                    "model": name,
                    "strategy": "sample",
                    "method": "all",
                    "error": "skipped: tfmr.interop.from_hf has no Llama mapping in this checkout",
                }
            )
            continue
        try:
            rows += case(
                quick_name if args.quick else name,
                make(args.quick),
                args,
                device,
                dtype,
                strategies,
            )
        except Exception as e:  # noqa: BLE001 - report it and go on to the next case
            if args.quick:
                raise
            rows.append(
                {
                    "model": name,
                    "strategy": ",".join(strategies),
                    "method": "all",
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                }
            )
    write_report(args.out, rows, env, bandwidth)
    return 0


def write_report(path: str, rows: list, env: dict, bandwidth, quality: dict | None = None) -> None:
    """The table as markdown at `path` and everything as JSON beside it; print the table. With
    `quality` (quant_quality.lm_quality) its perplexity table follows."""
    from .quant_quality import lm_lines

    text = markdown(rows, env, bandwidth)
    if quality:
        text += "\n" + "\n".join(lm_lines(quality)) + "\n"
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(
            {"env": env, "copy_bandwidth": bandwidth, "rows": rows, "quality": quality}, indent=2
        )
    )
    print("\n" + text + f"\nwritten: {out} and {out.with_suffix('.json')}")
