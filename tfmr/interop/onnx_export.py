"""Export a tfmr model to ONNX: a decoder-only model as a prefill graph and a one-token cached step
graph; an encoder-decoder model as an encoder graph and a cached decoder-step graph.

    from tfmr.interop.onnx_export import export_onnx
    export_onnx(model, "out/")     # decoder-only: out/prefill.onnx, out/step.onnx
                                   # encoder-decoder: out/encoder.onnx, out/decoder.onnx

    prefill.onnx  in:  input_ids (batch, seq)
                  out: logits (batch, seq, vocab),
                       present.{i}.key / .value (batch, kv_heads, seq, head_dim)
    step.onnx     in:  input_ids (batch, 1), past.{i}.key / .value (batch, kv_heads, past, head_dim)
                  out: logits (batch, 1, vocab), present.{i}.key / .value (..., past + 1, ...)

    encoder.onnx  in:  src_ids (batch, src)
                  out: memory (batch, src, dim), src_mask (batch, src) bool,
                       cross.{i}.key / .value (batch, kv_heads, src, head_dim)
    decoder.onnx  in:  input_ids (batch, seq), src_mask, cross.{i}.key / .value,
                       past.{i}.key / .value (past may be 0 long)
                  out: logits (batch, seq, vocab), present.{i}.key / .value (..., past + seq, ...)

batch, seq, past and src are dynamic axes. The graphs run the model's own forward: a `ConcatCache`
stands in for the KV cache (same `update` protocol as cache.KVCache, but it appends to the past it
was given), so nothing here re-implements the model. The encoder computes each decoder layer's
cross-attention keys and values once (EncoderDecoder.memory_kvs); the decoder graph starts from
an empty past (length 0) with the decoder start token. The exporter is torch's TorchScript-based
`torch.onnx.export(dynamo=False)`, which needs no network and no onnxscript; the dynamo exporter
also works but takes minutes on a small CPU. After export, when onnxruntime is installed, the
graphs are run at another batch size and length and compared with the model (atol 1e-4); a
mismatch (a variant whose shape logic the trace froze, such as a sliding-window mask) removes the
files and says so. The warnings torch's tracer always gives (a Python bool taken from a tensor,
TracerWarning; the legacy exporter's deprecation) are filtered, since that check is what tells
whether the trace holds; any other warning passes.

A weight-only quantized model (tfmr/quantize.py) is exported with its matrices as stored: each
quantized layer's class declares the ONNX operator that makes floats of them (`onnx`), int8 as
`DequantizeLinear` (the int8 matrix, one fp32 scale per output row, axis 0) and bf16 as `Cast`,
feeding an fp32 `MatMul` (constant folding is off for such a model, or the exporter would fold
the Cast into an fp32 matrix). The traced copy computes exactly what the graph does, x times the
dequantized matrix in fp32, so the check holds at atol 1e-4; tfmr's own int8 kernel rounds the
activations to bf16, so its logits differ from the graph's by that rounding. onnxruntime fuses
DequantizeLinear + MatMul into MatMulNBits and by default runs it with 8-bit activations
(`session.qdq_matmulnbits_accuracy_level` 4); the check sets it to 1 (fp32 activations).
Left out: encoder-only models, stateful cross-attention kernels (`alignment.ALIGNMENT_KERNELS`),
a static-cache graph for GPUs.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import warnings
from pathlib import Path

import torch

from ..cache import AbsoluteStore
from ..config import ConfigError
from ..quantize import WeightOnlyLinear


class ConcatCache(AbsoluteStore):
    """A KV cache over given past keys / values: `update` appends the new ones (B, H_kv, T, D);
    `store` (cache.AbsoluteStore) keeps keys rotated at absolute positions, as the model's own cache does."""

    key_start = 0

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    def update(self, k: torch.Tensor, v: torch.Tensor, start):
        self.k, self.v = (
            torch.cat([self.k, k], 2),
            torch.cat([self.v, v], 2),
        )  # (B, H_kv, past + T, D)
        return self.k, self.v


class _Graph(torch.nn.Module):
    """forward(input_ids, *past) -> (logits, *present), past and present flattened (k0, v0, k1, v1, ...)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        attn = model.blocks[0].attn
        self.kv_heads, self.head_dim = attn.kv_heads, attn.head_dim

    def forward(self, input_ids, *past):
        if not past:  # prefill: an empty past, sized from the input so the batch stays dynamic
            empty = self.model.tok_emb.weight.new_zeros(
                input_ids.shape[0], self.kv_heads, 0, self.head_dim
            )
            past = (empty,) * (2 * len(self.model.blocks))
        caches = [ConcatCache(past[2 * i], past[2 * i + 1]) for i in range(len(self.model.blocks))]
        logits = self.model(input_ids, cache=caches, start=past[0].shape[2]).logits
        return (logits, *[t for c in caches for t in (c.k, c.v)])


@contextlib.contextmanager
def quiet_trace():
    """torch.onnx.export(dynamo=False) without the warnings it always gives: TracerWarning on every
    Python bool the trace freezes (the graphs are checked at other shapes instead) and the
    DeprecationWarnings of the TorchScript exporter itself. Other warnings are shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        yield


def session(path, activations: str = "1"):
    """An onnxruntime CPU session of the graph at `path`; `activations` is the accuracy level of
    its fused quantized matmuls (MatMulNBits): "1" fp32 (the graph's own arithmetic), "4" int8
    (onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", activations)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- quantized weights
class _DequantizedMatmul(torch.autograd.Function):
    """x W^T with W = DequantizeLinear(q, scale, zero, axis=0): Int8Linear's int8 matrix (out, in)
    and one scale per output row (fp32, exact from its bf16), stored as they are in the graph."""

    stored = ("weight", "scale", "zero")

    @staticmethod
    def tensors(layer) -> tuple:
        return layer.weight, layer.scale.float(), torch.zeros_like(layer.weight[:, 0])

    @staticmethod
    def forward(ctx, x, q, scale, zero):
        return x @ (q.float() * scale[:, None]).t()  # (N, out)

    @staticmethod
    def symbolic(g, x, q, scale, zero):
        w = g.op("DequantizeLinear", q, scale, zero, axis_i=0)  # (out, in) float
        return g.op("MatMul", x, g.op("Transpose", w, perm_i=[1, 0]))


class _CastMatmul(torch.autograd.Function):
    """x W^T with W = Cast(bf16 matrix, float): Bf16Linear's matrix stored in bfloat16 in the graph."""

    stored = ("weight",)

    @staticmethod
    def tensors(layer) -> tuple:
        return (layer.weight.to(torch.bfloat16),)

    @staticmethod
    def forward(ctx, x, w):
        return x @ w.float().t()  # (N, out)

    @staticmethod
    def symbolic(g, x, w):
        f = g.op("Cast", w, to_i=1)  # to onnx.TensorProto.FLOAT
        return g.op("MatMul", x, g.op("Transpose", f, perm_i=[1, 0]))


ONNX_OPS = {"DequantizeLinear": _DequantizedMatmul, "Cast": _CastMatmul}


class _ExportedLinear(torch.nn.Module):
    """A quantized linear layer as the graph computes it: its stored matrix made float by the
    operator its class declares, then an fp32 MatMul, then the bias."""

    def __init__(self, layer: WeightOnlyLinear):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.op = ONNX_OPS[layer.onnx]
        for name, t in zip(self.op.stored, self.op.tensors(layer)):
            self.register_buffer(name, t)
        self.bias = layer.bias

    def forward(self, x):
        flat = x.reshape(-1, self.in_features)  # (N, in)
        y = self.op.apply(flat, *[getattr(self, n) for n in self.op.stored])  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)  # (..., out)


def _quantized_layers(model) -> list:
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, WeightOnlyLinear)
    ]


def quantized(model) -> bool:
    """Whether `model` holds quantized layers as the graph computes them (`exportable`'s copy)."""
    return any(isinstance(m, _ExportedLinear) for m in model.modules())


def exportable(model):
    """`model` in fp32, ready to trace: the model itself (converted in place) when it holds no
    quantized layer; else a copy whose quantized layers compute as the graph will (_ExportedLinear).
    A kind that declares no ONNX operator is refused in one line."""
    layers = _quantized_layers(model)
    if not layers:
        return model.float()
    for _, name, layer in layers:
        if layer.onnx not in ONNX_OPS:
            raise ConfigError(
                f"ONNX export of {layer.weights} weights ({name}) is not supported: ONNX has no "
                "operator for them here; export the fp32 checkpoint"
            )
    twin = copy.deepcopy(model).float()  # bf16 -> fp32 is exact; _ExportedLinear stores bf16 again
    for parent, name, layer in _quantized_layers(twin):
        setattr(parent, name, _ExportedLinear(layer))
    return twin


def _names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def export_onnx(model, out, check: bool = True) -> list[Path]:
    """The graphs of `model` in the folder `out`: decoder-only or encoder-decoder (ConfigError otherwise)."""
    exporters = {"decoder": export_decoder, "encoder-decoder": export_encoder_decoder}
    if model.cfg.arch not in exporters:
        raise ConfigError(
            f"ONNX export covers decoder-only and encoder-decoder models; this one is {model.cfg.arch}"
        )
    return exporters[model.cfg.arch](model, out, check)


def export_decoder(model, out, check: bool = True) -> list[Path]:
    """Write prefill.onnx and step.onnx for a decoder-only `model` into the folder `out`."""
    if model.cfg.arch != "decoder":
        raise ConfigError(f"ONNX export covers decoder-only models; this one is {model.cfg.arch}")
    graph = _Graph(
        exportable(model)
    ).eval()  # a wrapper left in train mode: export restores it, dropout and all
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layers = len(model.blocks)
    present = _names(layers, "present")
    kv_axes = {0: "batch", 2: "past"}
    ids = torch.zeros(2, 4, dtype=torch.long)
    past = [torch.zeros(2, graph.kv_heads, 4, graph.head_dim) for _ in range(2 * layers)]
    paths = [out / "prefill.onnx", out / "step.onnx"]
    with torch.no_grad(), quiet_trace():
        torch.onnx.export(
            graph,
            (ids,),
            str(paths[0]),
            dynamo=False,
            do_constant_folding=not quantized(graph.model),
            input_names=["input_ids"],
            output_names=["logits", *present],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "logits": {0: "batch", 1: "seq"},
                **{n: {0: "batch", 2: "seq"} for n in present},
            },
        )
        torch.onnx.export(
            graph,
            (ids[:, :1], *past),
            str(paths[1]),
            dynamo=False,
            do_constant_folding=not quantized(graph.model),
            input_names=["input_ids", *_names(layers, "past")],
            output_names=["logits", *present],
            dynamic_axes={
                "input_ids": {0: "batch"},
                "logits": {0: "batch"},
                **{n: kv_axes for n in _names(layers, "past")},
                **{n: kv_axes for n in present},
            },
        )
    if check:
        _check(graph, paths)
    return paths


@torch.no_grad()
def _check(graph, paths: list[Path]) -> None:
    """Run both graphs with onnxruntime at a batch and length other than the traced ones."""
    if importlib.util.find_spec("onnxruntime") is None:
        return
    ids = torch.arange(3 * 7).remainder(graph.model.cfg.vocab_size).view(3, 7)  # (B, T)
    ref = graph(ids)
    prefill = session(paths[0])
    got = prefill.run(None, {"input_ids": ids.numpy()})
    step = session(paths[1])
    names = [i.name for i in step.get_inputs()]
    nxt = ids[:, -1:]
    ref_step = graph(nxt, *ref[1:])
    got_step = step.run(None, dict(zip(names, [nxt.numpy(), *[t.numpy() for t in ref[1:]]])))
    _compare([(ref, got), (ref_step, got_step)], paths)


def _compare(pairs, paths: list[Path]) -> None:
    """Each (torch outputs, onnxruntime outputs) pair equal at atol 1e-4; else remove `paths`."""
    for ours, theirs in pairs:
        if not all(
            a.shape == b.shape
            and torch.allclose(a.float(), torch.from_numpy(b).float(), atol=1e-4, rtol=1e-4)
            for a, b in zip(ours, theirs)
        ):
            for p in paths:
                p.unlink(missing_ok=True)
            raise ConfigError(
                "the ONNX graphs do not reproduce the model at another batch size and length "
                "(a setting the trace froze); the files were removed"
            )


# ----------------------------------------------------------------------------- encoder-decoder
class _Encoder(torch.nn.Module):
    """forward(src_ids) -> (memory, src_mask, k0, v0, k1, v1, ...): the cross keys / values of every
    decoder layer. The padding mask is always computed (src_ids != pad_id), so no branch is traced."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src_ids):
        pad = self.model.cfg.pad_id
        src_mask = (
            src_ids != pad if pad is not None else torch.ones_like(src_ids, dtype=torch.bool)
        )  # (B, S)
        memory, src_mask = self.model.encode(src_ids, src_mask)
        return (memory, src_mask, *[t for kv in self.model.memory_kvs(memory) for t in kv])


class _DecoderStep(torch.nn.Module):
    """forward(input_ids, src_mask, *past, *cross) -> (logits, *present), flattened per layer (k, v)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, src_mask, *tensors):
        layers = len(self.model.blocks)
        past, cross = tensors[: 2 * layers], tensors[2 * layers :]
        caches = [ConcatCache(past[2 * i], past[2 * i + 1]) for i in range(layers)]
        kvs = [(cross[2 * i], cross[2 * i + 1]) for i in range(layers)]
        out = self.model.decode(
            input_ids, None, src_mask, cache=caches, start=past[0].shape[2], memory_kvs=kvs
        )
        return (out.logits, *[t for c in caches for t in (c.k, c.v)])


def _refuse_stateful(model) -> None:
    for block in model.blocks:
        if block.cross.kernel.stateful:
            raise ConfigError(
                f"ONNX export of a stateful cross-attention kernel ({type(block.cross.kernel).__name__}) "
                "is not supported; export a model with model.cross_kernel=sdpa or eager"
            )


def export_encoder_decoder(model, out, check: bool = True) -> list[Path]:
    """Write encoder.onnx and decoder.onnx for an encoder-decoder `model` into the folder `out`."""
    if model.cfg.arch != "encoder-decoder":
        raise ConfigError(
            f"this exporter covers encoder-decoder models; this one is {model.cfg.arch}"
        )
    _refuse_stateful(model)
    model = exportable(model).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder, step = _Encoder(model).eval(), _DecoderStep(model).eval()  # (see export_decoder)
    layers, attn = len(model.blocks), model.blocks[0].attn
    cross, past, present = (
        _names(layers, "cross"),
        _names(layers, "past"),
        _names(layers, "present"),
    )
    src = torch.ones(2, 5, dtype=torch.long)  # traced shapes; every axis below is dynamic
    ids = torch.ones(2, 2, dtype=torch.long)
    kv = [torch.zeros(2, attn.kv_heads, 3, attn.head_dim) for _ in range(2 * layers)]
    paths = [out / "encoder.onnx", out / "decoder.onnx"]
    with torch.no_grad(), quiet_trace():
        memory, src_mask, *cross_kv = encoder(src)
        torch.onnx.export(
            encoder,
            (src,),
            str(paths[0]),
            dynamo=False,
            do_constant_folding=not quantized(model),
            input_names=["src_ids"],
            output_names=["memory", "src_mask", *cross],
            dynamic_axes={n: {0: "batch", 1: "src"} for n in ("src_ids", "memory", "src_mask")}
            | {n: {0: "batch", 2: "src"} for n in cross},
        )
        torch.onnx.export(
            step,
            (ids, src_mask, *kv, *cross_kv),
            str(paths[1]),
            dynamo=False,
            do_constant_folding=not quantized(model),
            input_names=["input_ids", "src_mask", *past, *cross],
            output_names=["logits", *present],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "seq"},
                "logits": {0: "batch", 1: "seq"},
                "src_mask": {0: "batch", 1: "src"},
                **{n: {0: "batch", 2: "src"} for n in cross},
                **{n: {0: "batch", 2: "past"} for n in past},
                **{n: {0: "batch", 2: "total"} for n in present},
            },
        )
    if check:
        _check_encoder_decoder(model, paths)
    return paths


def empty_past(model, batch: int) -> list[torch.Tensor]:
    """The decoder graph's past at the first step: zero positions per layer (keys, values)."""
    attn = model.blocks[0].attn
    return [
        torch.zeros(batch, attn.kv_heads, 0, attn.head_dim) for _ in range(2 * len(model.blocks))
    ]


@torch.no_grad()
def _check_encoder_decoder(model, paths: list[Path]) -> None:
    """Encode a padded batch of another size and length, then run three decoder steps from an
    empty past (the first feeds two tokens), each compared with the model's own cached decoding."""
    if importlib.util.find_spec("onnxruntime") is None:
        return
    src = (
        torch.arange(3 * 7).remainder(model.cfg.src_vocab_size or model.cfg.vocab_size).view(3, 7)
    )  # (B, S)
    if model.cfg.pad_id is not None:
        src = torch.where(
            src == model.cfg.pad_id, src.new_tensor(1 if model.cfg.pad_id != 1 else 2), src
        )
        src[1, 5:] = model.cfg.pad_id  # one padded row
    enc = _Encoder(model).eval()
    ref_enc = enc(src)
    sessions = [session(p) for p in paths]
    got_enc = sessions[0].run(None, {"src_ids": src.numpy()})
    pairs = [(ref_enc, got_enc)]
    layers = len(model.blocks)
    names = [i.name for i in sessions[1].get_inputs()]
    state = model.start_state(3, 16, src=src)
    past = empty_past(model, 3)
    for tokens in (
        torch.tensor([[1, 2], [3, 4], [5, 6]]),
        torch.tensor([[7], [8], [9]]),
        torch.tensor([[2], [1], [0]]),
    ):
        tokens = tokens.remainder(model.cfg.vocab_size)
        ref, state = model.step(tokens, state)
        feed = [tokens, ref_enc[1], *past, *ref_enc[2:]]
        got = sessions[1].run(None, dict(zip(names, [t.numpy() for t in feed])))
        pairs.append(((ref,), (got[0][:, -1],)))
        past = [torch.from_numpy(t) for t in got[1 : 1 + 2 * layers]]
    _compare(pairs, paths)
