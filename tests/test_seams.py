"""The seams, written down and kept (tfmr issue #27, items 5 and 6):

- every registry entry is built through the one hook, `cls.from_config(ctx, **options)`, from one
  `variant.BuildContext`; what a class takes from it is declared (`receives`), never read from
  its parameter names by the builder (which has no `inspect` and no `*_FIXED` tuples left);
- every registry entry is an instance of its axis's base class and answers its seam at the
  seam's shapes (positions, kernels, patterns, mixers, FFNs, norms, residual placements, heads);
- what a mixer decodes with is a `cache.LayerCache`, what attention stores keys in a
  `cache.KeyStore`, which only stores: the keys it hands back end with the keys it was handed;
- the model families and the pointer-generator are `decode.Decodable`;
- lists of kinds printed to users (unknown-kind errors, the pointer-generator's refusal, the
  alignment experiment's runs and --help) come from the registries: MoChA is in every one.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from tfmr import Choice, ModelConfig, build_model
from tfmr.alignment import ALIGNMENT_KERNELS, CROSS_KERNELS, Monotonic
from tfmr.builder import build_copy_model, context
from tfmr.cache import KeyStore, KVCache, LayerCache, RetentionState, SegmentMemory, SinkCache
from tfmr.cli import main
from tfmr.config import ConfigError
from tfmr.decode import Decodable, greedy
from tfmr.fastdecode import StaticCache
from tfmr.ffn import FFN, FFNS
from tfmr.heads import HEADS, Head
from tfmr.kernels import KERNELS, Eager, Kernel, weight_giving
from tfmr.masks import Bias, Mask
from tfmr.mixers import MIXERS, Attention, Mixer
from tfmr.model import RESIDUALS, Residual
from tfmr.norms import NORMS, Norm
from tfmr.patterns import PATTERNS, Pattern
from tfmr.positions import POSITIONS, Position, Where
from tfmr.variant import BuildContext, Variant

ROOT = Path(__file__).resolve().parents[1]
B, T, DIM, H, HKV, V = 2, 6, 16, 4, 2, 11
D = DIM // H
CTX = BuildContext(
    dim=DIM,
    heads=H,
    kv_heads=HKV,
    context=16,
    vocab_size=V,
    bias=True,
    dropout=0.0,
    layers=2,
    encoder_layers=3,
    role="decoder-only",
    new_kernel=Eager,
)

# axis -> (its registry, the base class every entry is an instance of)
AXES = {
    "pos": (POSITIONS, Position),
    "kernel": (KERNELS, Kernel),
    "cross_kernel": (CROSS_KERNELS, Kernel),
    "attention_pattern": (PATTERNS, Pattern),
    "mixer": (MIXERS, Mixer),
    "ffn": (FFNS, FFN),
    "norm": (NORMS, Norm),
    "residual": (RESIDUALS, Residual),
    "head": (HEADS, Head),
}
ENTRIES = [(axis, kind) for axis, (registry, _) in AXES.items() for kind in registry]
# options that make a default-sized pattern act at these tiny lengths (rolling and sink caches)
SMALL = {
    "sliding": dict(window=3),
    "sinks": dict(sinks=1, window=3),
    "longformer": dict(window=3),
    "bigbird": dict(window=3, block=2, random_blocks=1),
}


def _built(axis: str, kind: str):
    registry, base = AXES[axis]
    torch.manual_seed(0)
    made = registry[kind].from_config(CTX, **SMALL.get(kind, {})).eval()
    assert isinstance(made, base) and isinstance(made, nn.Module) and isinstance(made, Variant)
    return made


def _randn(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


# ----------------------------------------------------------------------------- what a variant receives
def test_the_builder_reads_no_parameter_names():
    source = (ROOT / "tfmr" / "builder.py").read_text()
    assert "inspect" not in source and "signature" not in source
    fixed = [
        p.name
        for p in (ROOT / "tfmr").rglob("*.py")
        if re.search(r"\b[A-Z_]+_FIXED\b", p.read_text())
    ]
    assert fixed == []


@pytest.mark.parametrize("axis, kind", ENTRIES, ids=[f"{a}-{k}" for a, k in ENTRIES])
def test_every_entry_declares_what_it_receives(axis, kind):
    """`receives` names constructor arguments (so the rest are the options check_options lists),
    each a BuildContext field unless the class writes its own hook."""
    cls = AXES[axis][0][kind]
    params = list(inspect.signature(cls).parameters)
    assert set(cls.receives) <= set(params), (cls.receives, params)
    own_hook = cls.from_config.__func__ is not Variant.from_config.__func__
    fields = {f.name for f in dataclasses.fields(BuildContext)} | {"head_dim"}
    assert own_hook or set(cls.receives) <= fields


def test_the_build_context_reaches_each_variant():
    """DeepNorm's constants follow the role and depths of the stack it was built for; RoPE gets
    head_dim, not dim; an alignment kernel gets the heads; every attention gets its own kernel."""
    from tfmr.model import deepnorm_constants

    cfg = ModelConfig(dim=48, heads=6, kv_heads=2, encoder_layers=None)
    ctx = context(cfg, "encoder")
    assert (ctx.dim, ctx.heads, ctx.kv_heads, ctx.head_dim, ctx.role, ctx.encoder_layers) == (
        48,
        6,
        2,
        8,
        "encoder",
        cfg.layers,
    )
    for role in ("encoder", "decoder"):
        made = RESIDUALS["deepnorm"].from_config(dataclasses.replace(CTX, role=role))
        assert (made.alpha, made.beta) == deepnorm_constants(role, CTX.layers, CTX.encoder_layers)
    assert POSITIONS["rope"].from_config(CTX).rotary_dim == D
    assert CROSS_KERNELS["monotonic"].from_config(CTX).r.shape == (H,)
    model = build_model(
        ModelConfig(
            vocab_size=V,
            dim=DIM,
            layers=2,
            heads=H,
            arch="encoder-decoder",
            encoder_layers=3,
            residual=Choice("deepnorm"),
            cross_kernel=Choice("mocha", chunk=2),
        )
    )
    assert model.encoder[0].residual.alpha == deepnorm_constants("encoder", 2, 3)[0]
    assert model.blocks[0].residual.alpha == deepnorm_constants("decoder", 2, 3)[0]
    kernels = [b.attn.kernel for b in model.blocks] + [b.cross.kernel for b in model.blocks]
    assert len({id(k) for k in kernels}) == len(kernels)  # each attention its own kernel
    assert model.blocks[1].cross.kernel.chunk == 2 and model.blocks[1].cross.kernel.r.shape == (H,)


# ----------------------------------------------------------------------------- every entry, its seam
@pytest.mark.parametrize("axis, kind", ENTRIES, ids=[f"{a}-{k}" for a, k in ENTRIES])
def test_every_registry_entry_answers_its_seam(axis, kind):
    made = _built(axis, kind)
    {
        "pos": _position,
        "kernel": _kernel,
        "cross_kernel": _kernel,
        "attention_pattern": _pattern,
        "mixer": _mixer,
        "ffn": _ffn,
        "norm": _norm,
        "residual": _residual,
        "head": _head,
    }[axis](made)


def _position(pos: Position):
    x = _randn(B, T, DIM)
    assert pos.embed(x, 0).shape == (B, T, DIM)
    where = Where(torch.arange(T).repeat(B, 1), torch.arange(T))
    assert pos.embed(x, where).shape == (B, T, DIM)
    q, k = _randn(B, H, T, D).half(), _randn(B, HKV, T, D).half()
    for start in (0, 3, Where(torch.arange(T).repeat(B, 1), torch.arange(T))):
        rq, rk = pos.rotate(q, k, start)
        assert (rq.shape, rk.shape, rq.dtype, rk.dtype) == (q.shape, k.shape, q.dtype, k.dtype)
    bias = pos.bias(T, T, 0)
    assert bias is None or bias.dense(Mask(causal=True), T, T, "cpu", torch.float32).shape == (
        H,
        T,
        T,
    )
    assert bias is None or isinstance(bias, Bias)
    limit = type(pos).max_len(CTX.context)
    assert limit is None or limit >= CTX.context
    assert all(isinstance(p, nn.Parameter) for p in pos.embedding_weights())


def _kernel(kernel: Kernel):
    q, k, v = _randn(B, H, T, D), _randn(B, H, T + 1, D), _randn(B, H, T + 1, D)
    mask = Mask(causal=False)
    out, weights = kernel(q, k, v, mask, None)
    assert out.shape == (B, H, T, D)
    assert (weights is not None) == kernel.gives_weights
    assert weights is None or weights.shape == (B, H, T, T + 1)
    state = kernel.start_state(B, T + 1, "cpu")
    assert (state is not None) == kernel.stateful
    if kernel.stateful:  # step by step from the state equals the full forward's rows
        rows = [kernel(q[:, :, i : i + 1], k, v, mask, None, state)[0] for i in range(T)]
        torch.testing.assert_close(torch.cat(rows, dim=2), out, atol=1e-5, rtol=1e-5)


def _pattern(pattern: Pattern):
    assert isinstance(pattern.mask(True, 2), Mask) and isinstance(pattern.constant_state, bool)
    attn = Attention.from_config(CTX)
    cache = pattern.new_cache(B, HKV, 2 * T, D, torch.float32, "cpu")
    assert isinstance(cache, KeyStore) and isinstance(cache, LayerCache)
    start = 0
    for chunk in (T, 1, 1):  # a prefill, then steps
        x, k, v = _randn(B, chunk, DIM), _randn(B, HKV, chunk, D), _randn(B, HKV, chunk, D)
        held_k, held_v, mask = cache.store(attn, x, k, v, start, pattern.mask(True, start))
        assert held_k.shape[:2] == (B, HKV) and held_k.shape[2] >= chunk and isinstance(mask, Mask)
        assert torch.equal(held_k[:, :, -chunk:], k) and torch.equal(
            held_v[:, :, -chunk:], v
        )  # stored as handed
        start += chunk
    assert cache.bytes() > 0


def _mixer(mixer: Mixer):
    pos = POSITIONS["rope"].from_config(CTX)
    x, mask = _randn(B, T, DIM), PATTERNS["dense"]().mask(True)
    y, weights = mixer(x, pos, mask)
    assert y.shape == (B, T, DIM) and (weights is None or weights.shape == (B, H, T, T))
    cache = mixer.new_cache(PATTERNS["dense"](), B, T, torch.float32, "cpu")
    assert isinstance(cache, LayerCache)
    first, _ = mixer(x[:, :4], pos, PATTERNS["dense"]().mask(True, 0), cache, 0)
    rest, _ = mixer(x[:, 4:], pos, PATTERNS["dense"]().mask(True, 4), cache, 4)
    torch.testing.assert_close(
        torch.cat([first, rest], 1), y, atol=1e-5, rtol=1e-5
    )  # the cache only stores
    assert isinstance(mixer.new_memory(4), LayerCache)
    assert isinstance(mixer.constant_state(PATTERNS["dense"]()), bool)
    assert mixer.activation_floats(T) > 0
    assert (
        all(isinstance(p, nn.Linear) for p in mixer.residual_projections())
        and mixer.residual_projections()
    )
    decays = mixer.decays()
    assert decays is None or decays.shape == (H,)
    assert (decays is None) == (
        weights is not None
    )  # (eager kernel) a layer without weights declares its decay


def _ffn(ffn: FFN):
    y, aux = ffn(_randn(B, T, DIM))
    assert y.shape == (B, T, DIM) and (aux is None or aux.dim() == 0)
    assert ffn.residual_projections() and all(
        isinstance(p, nn.Linear) for p in ffn.residual_projections()
    )


def _norm(norm: Norm):
    x = _randn(B, T, DIM) * 5 + 3
    y = norm(x)
    assert y.shape == x.shape
    assert y.float().pow(2).mean(-1).sub(1).abs().max() < 0.1  # unit scale at init


def _residual(residual: Residual):
    x = _randn(B, T, DIM)
    y, extra = residual(x, lambda h: h, lambda h: (2 * h, "extra"))
    assert y.shape == x.shape and extra == "extra"
    assert isinstance(residual.needs_final_norm, bool)


def _head(head: Head):
    logits = head(_randn(B, T, DIM))
    assert logits.shape == (B, T, V) and head.weight.shape == (V, DIM)


# ----------------------------------------------------------------------------- caches and decoders
def test_attention_rotates_and_the_caches_store_what_it_hands_them():
    """RoPE keys reach a KV cache rotated at their absolute positions (stored as they come); a
    sinks cache and a segment memory, whose positions live inside them, hold them unrotated."""
    torch.manual_seed(0)
    attn, pos = Attention.from_config(CTX).eval(), POSITIONS["rope"].from_config(CTX)
    x = _randn(1, T, DIM)
    mask = PATTERNS["dense"]().mask(True, 3)
    with torch.no_grad():
        q = attn.q_proj(x).view(1, T, H, D).transpose(1, 2)  # (1, H, T, D)
        k, v = attn.project_kv(x)
        _, rotated = pos.rotate(q, k, 3)
        cache = KVCache(1, HKV, 2 * T, D, torch.float32, "cpu")
        cache.update(torch.zeros(1, HKV, 3, D), torch.zeros(1, HKV, 3, D), 0)
        attn(x, pos, mask, cache, 3)
        torch.testing.assert_close(cache.k[:, :, 3 : 3 + T], rotated, atol=0, rtol=0)
        torch.testing.assert_close(cache.v[:, :, 3 : 3 + T], v, atol=0, rtol=0)
        sinks = SinkCache(
            1, HKV, T, 2, D, torch.float32, "cpu"
        )  # every position a sink: slot = position
        attn(x, pos, PATTERNS["sinks"](T, 2).mask(True, 0), sinks, 0)
        torch.testing.assert_close(sinks.k[:, :, :T], k, atol=0, rtol=0)
        assert not torch.equal(rotated, k)
    assert (
        not KVCache.positions_inside
        and SinkCache.positions_inside
        and SegmentMemory.positions_inside
    )


def test_every_cache_is_a_layer_cache_and_every_key_store_a_key_store():
    stores = [
        KVCache(1, 1, 4, 2, torch.float32, "cpu"),
        SinkCache(1, 1, 1, 2, 2, torch.float32, "cpu"),
        SegmentMemory(3),
        StaticCache(1, 1, 4, 2, torch.float32, "cpu"),
    ]
    assert all(isinstance(s, KeyStore) for s in stores)
    assert all(
        isinstance(c, LayerCache)
        for c in stores[:3] + [RetentionState(1, 2, 2, 2, torch.float32, "cpu")]
    )
    assert not isinstance(
        RetentionState(1, 2, 2, 2, torch.float32, "cpu"), KeyStore
    )  # retention stores no keys
    assert not isinstance(object(), LayerCache)


def test_the_model_families_and_the_pointer_generator_are_decodable():
    tiny = dict(vocab_size=V, dim=DIM, layers=2, heads=H, context=16, kernel=Choice("eager"))
    models = [
        build_model(ModelConfig(**tiny)),
        build_model(ModelConfig(arch="encoder-decoder", **tiny)),
        build_copy_model(ModelConfig(arch="encoder-decoder", **tiny)),
    ]
    src = torch.randint(0, V, (B, 5), generator=torch.Generator().manual_seed(0))
    for model in models:
        assert isinstance(model, Decodable)
        out = greedy(
            model.eval(),
            torch.ones(B, 1, dtype=torch.long),
            3,
            src=src if model.needs_source else None,
        )
        assert out.shape == (B, 4)
    assert not isinstance(build_model(ModelConfig(**tiny)).blocks[0], Decodable)
    assert (
        models[0].new_cache.__func__ is models[1].new_cache.__func__
    )  # one new_cache, not two copies


# ----------------------------------------------------------------------------- lists printed from the registries
@pytest.mark.parametrize("axis", list(AXES))
def test_an_unknown_kind_lists_every_kind_of_its_registry(axis):
    registry = AXES[axis][0]
    fields = {axis: Choice("nope")} | (
        {"arch": "encoder-decoder"} if axis == "cross_kernel" else {}
    )
    with pytest.raises(ConfigError, match=f"unknown model.{axis} kind 'nope'") as e:
        build_model(ModelConfig(**fields))
    assert f"valid kinds: {', '.join(registry)}" in str(e.value)
    assert axis != "cross_kernel" or "mocha" in str(e.value)


def test_the_pointer_generators_refusal_lists_every_kernel_that_gives_weights():
    with pytest.raises(ConfigError) as e:
        build_copy_model(
            ModelConfig(arch="encoder-decoder", kernel=Choice("sdpa"), dim=DIM, heads=H, layers=1)
        )
    message = str(e.value)
    assert weight_giving(CROSS_KERNELS) == ["eager", *ALIGNMENT_KERNELS]
    assert (
        f"model.cross_kernel={' | '.join(weight_giving(CROSS_KERNELS))})" in message
        and "mocha" in message
    )
    assert f"model.kernel={' | '.join(weight_giving(KERNELS))}," in message


def test_the_alignment_experiment_runs_every_alignment_kernel(capsys):
    from tfmr.experiments import g2p_alignment

    runs = g2p_alignment.variants()
    assert (
        list(runs) == list(g2p_alignment.KINDS) == ["plain", *ALIGNMENT_KERNELS] and "mocha" in runs
    )
    for (
        kind,
        cls,
    ) in ALIGNMENT_KERNELS.items():  # monotonic attention and its subclass MoChA decode hard
        assert runs[kind].kind == kind and runs[kind].options.get("hard", False) == issubclass(
            cls, Monotonic
        )
    with pytest.raises(SystemExit):
        main(["experiment", "g2p-alignment", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"a subset of: {' '.join(g2p_alignment.KINDS)}" in help_text


def test_model_config_names_a_registry_for_every_axis_instead_of_listing_kinds():
    """Each Choice field of ModelConfig carries a comment naming the registry of its kinds (a
    dict that exists), on its line or the comment line above, and no hand-written `a | b` list."""
    source = (ROOT / "tfmr" / "config.py").read_text().splitlines()
    tree = ast.parse("\n".join(source))
    config = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelConfig")
    checked = 0
    for node in config.body:
        if not (isinstance(node, ast.AnnAssign) and "Choice" in ast.unparse(node.annotation)):
            continue
        line, above = source[node.lineno - 1], source[node.lineno - 2]
        comment = line.split("#", 1)[1] if "#" in line else above.split("#", 1)[1]
        named = re.findall(r"\b([a-z]+)\.([A-Z_]+)\b", comment)
        assert named, (node.target.id, comment)
        for module, name in named:
            assert isinstance(getattr(importlib.import_module(f"tfmr.{module}"), name), dict)
        assert " | " not in comment, comment
        checked += 1
    assert checked == len(AXES)
