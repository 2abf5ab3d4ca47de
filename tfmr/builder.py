"""Builder: ModelConfig -> Model. The only reader of the registries (POSITIONS, KERNELS, ...).

Each module gets its own slice of config: the builder checks every Choice against its registry
(unknown kind or option -> ConfigError listing the valid ones) and builds every registry entry
through one hook, `cls.from_config(ctx, **choice.options)`, with one `BuildContext` of the
model's shape and the stack being built (variant.py); what a class takes from the context it
declares (`receives`). What a kind can do is declared on its class and read from there
(`needs_final_norm` on residual placements, `max_len` on position schemes), never from the kind
string or a parameter name.

    build_model(cfg)          a freshly initialised Model or EncoderDecoder
    context(cfg, role)        the BuildContext every variant of cfg is built from
    build_copy_model(cfg)     an encoder-decoder wrapped in a pointer-generator (pointer.py)
    max_positions(cfg)        the longest sequence cfg's position scheme can place (None: any)
    relative_positions(cfg)   whether cfg's position scheme is relative (sinks, segment memory)
"""

from __future__ import annotations

import dataclasses
import functools
import math

from torch import nn
from torch.overrides import TorchFunctionMode

from .alignment import CROSS_KERNELS
from .config import Choice, ConfigError, ModelConfig, check_options
from .ffn import FFNS
from .heads import HEADS
from .kernels import KERNELS
from .mixers import MIXERS, Attention
from .model import RESIDUALS, Block, EncoderDecoder, Model, init_weights
from .norms import NORMS
from .patterns import PATTERNS
from .pointer import PointerGenerator
from .positions import POSITIONS
from .variant import BuildContext

ARCHS = ("decoder", "encoder", "encoder-decoder")


def _make(choice: Choice, registry: dict, axis: str, ctx: BuildContext):
    """The registry entry `choice` names, built by its class's hook from `ctx` and the options."""
    check_options(choice, registry, axis)
    try:
        return registry[choice.kind].from_config(ctx, **choice.options)
    except ConfigError:  # a part built inside the hook (attention's kernel) said what is wrong
        raise
    except (TypeError, ValueError) as e:  # torch's own messages run on with a C++ stack
        raise ConfigError(f"{axis} {choice.kind!r}: {str(e).splitlines()[0]}") from None


def context(cfg: ModelConfig, role: str = "decoder-only") -> BuildContext:
    """What every variant of `cfg` is built from, for a block of the stack `role`."""
    return BuildContext(
        dim=cfg.dim,
        heads=cfg.heads,
        kv_heads=cfg.kv_heads or cfg.heads,
        context=cfg.context,
        vocab_size=cfg.vocab_size,
        bias=cfg.bias,
        dropout=cfg.dropout,
        layers=cfg.layers,
        encoder_layers=cfg.encoder_layers or cfg.layers,
        role=role,
        new_kernel=functools.partial(_kernel, cfg),
        new_pos_part=functools.partial(_pos_part, cfg),
    )


_LARGEST_SIZE = 2**31 - 1  # one tensor dimension (or a layer count) past this is a wrong config


def validate(cfg: ModelConfig) -> None:
    """Check the shape and every axis before any tensor is allocated."""
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown model.arch {cfg.arch!r}; valid: {', '.join(ARCHS)}")
    for name in ("vocab_size", "dim", "layers", "heads", "context"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name} must be at least 1, got {getattr(cfg, name)}")
        if getattr(cfg, name) > _LARGEST_SIZE:
            raise ConfigError(
                f"model.{name} {getattr(cfg, name):,} is past the largest tfmr builds "
                f"({_LARGEST_SIZE:,}); the config is likely wrong"
            )
    if cfg.dim % cfg.heads:
        raise ConfigError(f"model.dim ({cfg.dim}) must be divisible by model.heads ({cfg.heads})")
    kv = cfg.kv_heads or cfg.heads
    if kv < 1 or cfg.heads % kv:
        raise ConfigError(f"model.heads ({cfg.heads}) must be a multiple of model.kv_heads ({kv})")
    if cfg.encoder_layers is not None and not 1 <= cfg.encoder_layers <= _LARGEST_SIZE:
        raise ConfigError(
            f"model.encoder_layers must be 1 to {_LARGEST_SIZE:,}, got {cfg.encoder_layers}"
        )
    _check_finite(cfg)
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.init_std < 0:
        raise ConfigError(f"model.init_std must be 0 or more, got {cfg.init_std}")
    if not 0.0 <= cfg.label_smoothing <= 1.0:
        raise ConfigError(f"model.label_smoothing must be in [0, 1], got {cfg.label_smoothing}")
    if cfg.loss_chunk < 0:
        raise ConfigError(
            f"model.loss_chunk must be 0 (off) or a number of tokens, got {cfg.loss_chunk}"
        )
    _check_option_ranges(cfg)
    check_options(cfg.pos, POSITIONS, "model.pos")
    if getattr(CROSS_KERNELS.get(cfg.kernel.kind), "stateful", False):  # declared on the class
        raise ConfigError(
            f"model.kernel {cfg.kernel.kind!r} is a stateful cross-attention kernel; set "
            f"model.cross_kernel={cfg.kernel.kind} on an encoder-decoder (model.kernel: "
            f"{', '.join(KERNELS)})"
        )
    check_options(cfg.kernel, KERNELS, "model.kernel")
    if cfg.cross_kernel is not None:
        if cfg.arch != "encoder-decoder":
            raise ConfigError(
                f"model.cross_kernel needs model.arch=encoder-decoder (a {cfg.arch} model has no "
                f"cross-attention); use model.kernel for self-attention"
            )
        check_options(cfg.cross_kernel, CROSS_KERNELS, "model.cross_kernel")
    check_options(cfg.attention_pattern, PATTERNS, "model.attention_pattern")
    _check_mixers(cfg)
    if PATTERNS[cfg.attention_pattern.kind].positions_in_cache and POSITIONS[cfg.pos.kind].absolute:
        raise ConfigError(
            f"model.attention_pattern={cfg.attention_pattern.kind} places positions inside its cache; "
            f"model.pos={cfg.pos.kind} adds absolute vectors to the input (use rope, xpos, alibi or none)"
        )
    check_options(cfg.ffn, FFNS, "model.ffn")
    check_options(cfg.norm, NORMS, "model.norm")
    check_options(cfg.residual, RESIDUALS, "model.residual")
    check_options(cfg.head, HEADS, "model.head")
    if cfg.type_vocab_size < 0:
        raise ConfigError(
            f"model.type_vocab_size must be 0 (none) or more, got {cfg.type_vocab_size}"
        )


def mixer_kinds(cfg: ModelConfig) -> list[str]:
    """The mixer kind of each layer: model.mixer_pattern repeated over model.layers, or model.mixer."""
    kinds = mixer_pattern(cfg)
    return [kinds[i % len(kinds)] for i in range(cfg.layers)]


def mixer_kind_set(cfg: ModelConfig) -> set[str]:
    """The mixer kinds the layers use, without a list as long as model.layers (a config's layer
    count is checked against memory after this)."""
    kinds = mixer_pattern(cfg)
    return set(kinds[: min(cfg.layers, len(kinds))])


def mixer_pattern(cfg: ModelConfig) -> list[str]:
    """The mixer kinds of one period of the stack (model.mixer_pattern, or model.mixer alone)."""
    return [k.strip() for k in cfg.mixer_pattern.split(",") if k.strip()] or [cfg.mixer.kind]


def _mixer_choice(cfg: ModelConfig, kind: str) -> Choice:
    return cfg.mixer if kind == cfg.mixer.kind else Choice(kind)


def _check_mixers(cfg: ModelConfig) -> None:
    check_options(cfg.mixer, MIXERS, "model.mixer")
    for kind in sorted(mixer_kind_set(cfg)):
        if kind not in MIXERS:
            raise ConfigError(
                f"model.mixer_pattern: unknown mixer kind {kind!r}; valid kinds: {', '.join(MIXERS)}"
            )
        if MIXERS[kind].causal_only and cfg.arch == "encoder":
            raise ConfigError(
                f"model.mixer {kind!r} is causal; it runs in decoders (model.arch=decoder, or the "
                f"decoder of an encoder-decoder), not in an encoder"
            )


POSITIVE_OPTIONS = ("eps", "base", "ntk_factor", "mult", "hidden", "experts", "top_k")
MAX_EXPERTS = (
    1024  # more experts than any published MoE; building (or estimating) 100,000 takes minutes
)


def _check_option_ranges(cfg: ModelConfig) -> None:
    """Options that are sizes, scales or epsilons are numbers > 0 (a negative norm epsilon or RoPE
    base from a Hugging Face config.json is refused, not loaded); MoE has at most MAX_EXPERTS."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, Choice):
            continue
        for key in POSITIVE_OPTIONS:
            option = value.options.get(key)
            if option is None:
                continue
            if isinstance(option, bool) or not isinstance(option, (int, float)) or not option > 0:
                raise ConfigError(f"model.{f.name}.{key} must be a number > 0, got {option!r}")
            if isinstance(option, int) and option > _LARGEST_SIZE:
                raise ConfigError(
                    f"model.{f.name}.{key} {option:,} is past the largest tfmr builds "
                    f"({_LARGEST_SIZE:,}); the config is likely wrong"
                )
        option = value.options.get("capacity_factor")
        if option is not None and (
            isinstance(option, bool) or not isinstance(option, (int, float)) or option < 0
        ):
            raise ConfigError(
                f"model.{f.name}.capacity_factor must be a number >= 0 (0: no limit), got {option!r}"
            )
        if value.options.get("experts", 0) > MAX_EXPERTS:
            raise ConfigError(
                f"model.{f.name}.experts must be at most {MAX_EXPERTS}, got {value.options['experts']}"
            )


def _check_finite(cfg: ModelConfig) -> None:
    """Every float in the model section, the options of its Choices included, is a finite number
    (nan / inf would pass every range check below and poison the weights or the loss)."""
    for name, value in vars(cfg).items():
        options = value.options.items() if isinstance(value, Choice) else [(None, value)]
        for option, v in options:
            if isinstance(v, float) and not math.isfinite(v):
                key = f"model.{name}" + (f".{option}" if option else "")
                raise ConfigError(f"{key} must be a finite number, got {v}")


def _kernel(cfg: ModelConfig) -> nn.Module:
    """A fresh self-attention kernel (`model.kernel`): every attention layer has its own."""
    return _make(cfg.kernel, KERNELS, "model.kernel", context(cfg))


def _pos_part(cfg: ModelConfig) -> nn.Module | None:
    """What one self-attention layer keeps for `model.pos` (`Position.layer_part`; usually None)."""
    return POSITIONS[cfg.pos.kind].layer_part(context(cfg))


def _cross_attention(cfg: ModelConfig, ctx: BuildContext) -> Attention:
    """The decoder's cross-attention: `model.cross_kernel` (None: the same kernel as `model.kernel`);
    no positions act there, so no part of the position scheme either."""
    ctx = dataclasses.replace(ctx, new_pos_part=None)
    if cfg.cross_kernel is not None:
        cross_kernel = functools.partial(
            _make, cfg.cross_kernel, CROSS_KERNELS, "model.cross_kernel", ctx
        )
        ctx = dataclasses.replace(ctx, new_kernel=cross_kernel)
    return Attention.from_config(ctx)


def _mixer(cfg: ModelConfig, kind: str, ctx: BuildContext) -> nn.Module:
    """One layer's sequence mixer (model.mixer / model.mixer_pattern): a kind of MIXERS."""
    return _make(_mixer_choice(cfg, kind), MIXERS, "model.mixer", ctx)


def _block(
    cfg: ModelConfig, cross: bool = False, role: str = "decoder-only", kind: str = "attention"
) -> Block:
    ctx = context(cfg, role)
    ffn = _make(cfg.ffn, FFNS, "model.ffn", ctx)
    residual = _make(cfg.residual, RESIDUALS, "model.residual", ctx)
    if not cross:
        return Block(_mixer(cfg, kind, ctx), _norm(cfg), ffn, _norm(cfg), residual)
    return Block(
        _mixer(cfg, kind, ctx),
        _norm(cfg),
        ffn,
        _norm(cfg),
        residual,
        _cross_attention(cfg, ctx),
        _norm(cfg),
    )


def _norm(cfg: ModelConfig) -> nn.Module:
    return _make(cfg.norm, NORMS, "model.norm", context(cfg))


def _final_norm(cfg: ModelConfig) -> nn.Module:
    """Pre-norm stacks need a norm after the last block; post-norm blocks already end in one."""
    return _norm(cfg) if RESIDUALS[cfg.residual.kind].needs_final_norm else nn.Identity()


def _pattern(cfg: ModelConfig) -> nn.Module:
    return _make(cfg.attention_pattern, PATTERNS, "model.attention_pattern", context(cfg))


def _embed_norm(cfg: ModelConfig) -> nn.Module | None:
    return _norm(cfg) if cfg.embed_norm else None


def _head(cfg: ModelConfig) -> nn.Module:
    return _make(cfg.head, HEADS, "model.head", context(cfg))


def _position(cfg: ModelConfig) -> nn.Module:
    return _make(cfg.pos, POSITIONS, "model.pos", context(cfg))


class _NoRandomFill(TorchFunctionMode):
    """Inside it, the in-place random fills that weight initialisation is made of (normal_,
    uniform_, and nn.init's functions built on them) leave the tensor as it is."""

    # the Tensor methods, and nn.init's functions (inside one of them this mode is off, so each is named)
    SKIPPED = {
        "normal_",
        "uniform_",
        "trunc_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "orthogonal_",
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (
            getattr(func, "__name__", None) in self.SKIPPED
        ):  # Tensor.normal_(t, ...) or nn.init.normal_(tensor=t)
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def build_uninitialised(cfg: ModelConfig) -> Model | EncoderDecoder:
    """`build_model(cfg)` without drawing random weights: parameters hold whatever memory they were
    given, everything derived (position tables, ALiBi slopes, retention decays) is computed as
    usual. For a caller that loads every parameter next (and checks that it did): drawing 124M
    random numbers takes longer than reading them from a file."""
    with _NoRandomFill():
        return build_model(cfg)


def build_model(cfg: ModelConfig) -> Model | EncoderDecoder:
    """A freshly initialised model for `cfg` (raises ConfigError on any invalid setting)."""
    validate(cfg)
    if cfg.arch == "encoder-decoder":
        return _build_encoder_decoder(cfg)
    tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
    role = "decoder-only" if cfg.arch == "decoder" else "encoder-only"
    blocks = [_block(cfg, role=role, kind=kind) for kind in mixer_kinds(cfg)]
    type_emb = nn.Embedding(cfg.type_vocab_size, cfg.dim) if cfg.type_vocab_size else None
    model = Model(
        cfg,
        tok_emb,
        _position(cfg),
        blocks,
        _final_norm(cfg),
        _head(cfg),
        _pattern(cfg),
        type_emb,
        _embed_norm(cfg),
    )
    _init(model, cfg)
    if cfg.tie_embeddings:
        model.lm_head.weight = (
            model.tok_emb.weight
        )  # one matrix for input and output (Press & Wolf 2017)
    return model


def build_copy_model(cfg: ModelConfig, unk_id: int = 3, layer: int = -1) -> PointerGenerator:
    """An encoder-decoder from `cfg` with a pointer-generator on top (See et al. 2017)."""
    return PointerGenerator(build_model(cfg), unk_id, layer)


def relative_positions(cfg: ModelConfig) -> bool:
    """Whether cfg's position scheme can be placed relative to a cache or a memory (sinks,
    Transformer-XL): not `Position.absolute`, as the scheme's class declares it."""
    check_options(cfg.pos, POSITIONS, "model.pos")
    return not POSITIONS[cfg.pos.kind].absolute


def max_positions(cfg: ModelConfig) -> int | None:
    """The most tokens a sequence may have under cfg's position scheme (None: no limit), as the
    scheme's class declares it (`Position.max_len`); learned positions stop at model.context."""
    check_options(cfg.pos, POSITIONS, "model.pos")
    return POSITIONS[cfg.pos.kind].max_len(cfg.context)


def _build_encoder_decoder(cfg: ModelConfig) -> EncoderDecoder:
    src_vocab = cfg.src_vocab_size or cfg.vocab_size
    if cfg.share_embeddings and src_vocab != cfg.vocab_size:
        raise ConfigError(
            f"model.share_embeddings needs one vocabulary; src_vocab_size is {src_vocab}, "
            f"vocab_size is {cfg.vocab_size} (set model.share_embeddings=false)"
        )
    tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
    src_emb = tok_emb if cfg.share_embeddings else nn.Embedding(src_vocab, cfg.dim)
    encoder = [_block(cfg, role="encoder") for _ in range(cfg.encoder_layers or cfg.layers)]
    decoder = [_block(cfg, cross=True, role="decoder", kind=kind) for kind in mixer_kinds(cfg)]
    model = EncoderDecoder(
        cfg,
        src_emb,
        tok_emb,
        _position(cfg),
        _position(cfg),
        encoder,
        _final_norm(cfg),
        decoder,
        _final_norm(cfg),
        _head(cfg),
        _pattern(cfg),
    )
    _init(model, cfg)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model


def _init(model: nn.Module, cfg: ModelConfig) -> None:
    """tfmr's init, then each block's residual placement adjusts its block (DeepNorm's beta)."""
    init_weights(model, cfg.init_std)
    for block in [
        m for m in model.modules() if isinstance(m, Block)
    ]:  # encoder blocks first, as built
        block.residual.init_block(block)
