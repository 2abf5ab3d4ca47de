"""Typed configuration: small dataclasses, one `kind` per axis, overrides and config files.

A run is described by `RunConfig` (model, data, train, sample sections), a sequence-to-sequence
run by `Seq2SeqConfig` (model, train: `Seq2SeqTrainConfig`, decode: `DecodeConfig`; the trainer is
seq2seq.py, which re-exports them; they live here so that presets and the command line need no
torch). Each axis of variation is
a `Choice(kind, **options)`; the valid kinds live in one plain dict per axis in the module that
implements them (e.g. `POSITIONS` in positions.py), and the builder checks kinds and options
against those dicts, so a typo fails at build time with the valid choices listed.

Overrides use dotted keys: `model.heads=8`, `model.pos=rope`, `model.pos.base=500000`.
Config files are YAML or TOML with the same nesting. Everything here is plain data: it
round-trips through JSON, which is how checkpoints store it. Presets live in presets.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration mistake the user can fix; the CLI prints it as one line and exits 2."""


class Choice:
    """One point on an axis of variation: a registry `kind` plus its keyword options."""

    def __init__(self, kind: str, **options: Any):
        self.kind = kind
        self.options = dict(options)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.options}

    @classmethod
    def coerce(cls, value: Any, where: str) -> Choice:
        if isinstance(value, Choice):
            return value
        if isinstance(value, str):
            return cls(value)
        if (
            isinstance(value, dict)
            and isinstance(value.get("kind"), str)
            and all(isinstance(k, str) for k in value)
        ):
            opts = dict(value)
            return cls(opts.pop("kind"), **opts)
        raise ConfigError(
            f"{where}: expected a kind name or a table with a 'kind' key, got {value!r}"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Choice({self.kind!r}{opts})"


def choice(kind: str, **options: Any):
    """Dataclass field default for a Choice (a fresh object per instance)."""
    return field(default_factory=lambda: Choice(kind, **options))


@dataclass
class ModelConfig:
    """The shape of a model and one choice per axis of variation."""

    arch: str = "decoder"  # decoder | encoder | encoder-decoder
    vocab_size: int = 256
    dim: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int | None = None  # None: same as heads (MHA); 1: MQA; in between: GQA
    context: int = 256  # longest sequence the positions must cover
    dropout: float = 0.0
    bias: bool = True  # bias in linear layers and LayerNorm
    tie_embeddings: bool = True
    # Each Choice below is one axis: its kinds are the keys of the registry named beside it, and a
    # wrong kind or option is refused with the valid ones listed (builder.validate)
    pos: Choice = choice("learned")  # positions.POSITIONS
    kernel: Choice = choice("sdpa")  # kernels.KERNELS
    attention_pattern: Choice = choice("dense")  # which keys each query sees: patterns.PATTERNS
    mixer: Choice = choice("attention")  # what each block runs: mixers.MIXERS
    # a hybrid stack: mixer kinds repeated over the layers ("retention,attention": odd layers attention);
    # "" means model.mixer everywhere
    mixer_pattern: str = ""
    ffn: Choice = choice("mlp", mult=4, activation="gelu")  # ffn.FFNS
    norm: Choice = choice("layernorm")  # norms.NORMS
    residual: Choice = choice("pre")  # where the norm sits: model.RESIDUALS
    init_std: float = 0.02
    label_smoothing: float = 0.0
    loss_chunk: int = (
        0  # > 0: training loss over this many tokens at a time, never all (B, T, vocab) logits
    )
    pad_id: int | None = None  # padding token: masked as a key, ignored as a target
    head: Choice = choice("linear")  # output head: heads.HEADS
    type_vocab_size: int = 0  # > 0: token-type (segment) embeddings added to the input (BERT)
    embed_norm: bool = False  # a norm right after the embeddings (BERT's embedding LayerNorm)
    # encoder-decoder only
    encoder_layers: int | None = None  # None: same as layers
    src_vocab_size: int | None = None  # None: same as vocab_size
    share_embeddings: bool = True  # one embedding for source, target and output
    # the decoder's cross-attention kernel: None = same as `kernel`; any kind of alignment.CROSS_KERNELS
    # (every kernel, and the stateful alignment kernels of alignment.ALIGNMENT_KERNELS)
    cross_kernel: Choice | None = None


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes token ids."""

    path: str | None = None  # a text file or a folder of them; None: the embedded corpus
    tokenizer: Choice = choice("char")
    val_fraction: float = 0.1
    cache_dir: str | None = None  # None: $TFMR_CACHE or ~/.cache/tfmr/data (shared by runs)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_iters: int = 20
    log_every: int = 10
    checkpoint_every: int = 500
    on_nonfinite: str = (
        "stop"  # a non-finite loss or gradient norm: stop (nothing saved) | skip (the step)
    )
    max_minutes: float = (
        0.0  # > 0: a wall-clock budget; the schedule decays by steps or time, whichever is first
    )
    keep_last: int = 0  # > 0: also keep the last N checkpoints' weights in RUN/snapshots/ (tfmr checkpoint average)
    # an evaluation number where lower is better (dev_loss, dev_wer, val_loss ...): keep the weights at
    # which it was lowest in RUN/best/, the starting weights included (evaluated before step 1)
    keep_best: str = ""
    max_memory: float = (
        0.0  # > 0: refuse a run whose memory estimate (tfmr.memory) exceeds this many GB
    )
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    dtype: str = (
        "auto"  # auto (bf16 autocast on GPU and bf16-capable CPUs, else fp32) | float32 | bfloat16
    )
    compile: bool = (
        False  # torch.compile the model; if compiling fails, training says why and runs eager
    )
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    # the loss (tfmr.objectives.OBJECTIVES): teacher-forcing, or for a language model RL on a metric
    # (reinforce, self-critical, mrt: the window's first half the prompt, its rest the reference)
    objective: Choice = choice("teacher-forcing")
    parallel: str = "none"  # none | auto (ddp under torchrun) | ddp | fsdp (tfmr/parallel.py, docs/distributed.md)
    parallel_timeout: float = (
        600.0  # seconds a rank waits for the others before failing (a dead rank)
    )
    activation_checkpointing: bool = (
        False  # recompute each block's activations in backward (less memory)
    )
    # a trained model (export or checkpoint folder) whose weights start a fresh run: same widths;
    # a shallower stack takes layers spread over the source's (tfmr/warmstart.py); "" starts at random
    init: str = ""


@dataclass
class SampleConfig:
    """What to print at the end of a run (the `generate` command has its own flags)."""

    prompt: str = "\n"
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 40
    num_samples: int = 2


@dataclass
class DecodeWeightsConfig:
    """How a language model is run for decoding (`tfmr lm generate`, the fast path)."""

    weights: str = "fp32"  # fp32 | bf16 | int8: weight-only quantization of the linear layers (tfmr/quantize.py)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    decode: DecodeWeightsConfig = field(default_factory=DecodeWeightsConfig)


# ----------------------------------------------------------------------------- sequence pairs (seq2seq.py)
@dataclass
class Seq2SeqTrainConfig(TrainConfig):
    """TrainConfig plus what sequence pairs need."""

    batch_tokens: int = 0  # > 0: cap each batch at this many padded tokens (source + target)
    eval_pairs: int = 2000  # dev pairs in the dev loss (and the task's own dev metric)
    # train.objective (in TrainConfig): every kind of objectives.OBJECTIVES (scheduled, two-pass, ...)
    guided_attention: float = (
        0.0  # > 0: weight of the guided attention loss (needs model.kernel=eager)
    )
    guided_sigma: float = 0.4  # g, the width of the guided attention's diagonal band
    guided_layers: str = "all"  # cross-attention layers it acts on: all, or indices such as 0,1
    guided_heads: str = "0,1"  # heads of each chosen layer it acts on
    # > 0: word-level distillation (Kim & Rush 2016): the loss is (1 - w) x the objective's + w x the
    # cross entropy against a teacher's distribution at each target position (the pairs' soft
    # targets; G2P: data.teacher); 0: off
    word_distill: float = 0.0


@dataclass
class DecodeConfig:
    """How a trained model is decoded for evaluation."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_len: int = 40  # target tokens, </s> included
    batch_size: int = 500
    weights: str = (
        "fp32"  # fp32 | bf16 | int8: weight-only quantization for decoding (tfmr/quantize.py)
    )

    def check(self) -> None:
        """Refuse (ConfigError) a setting out of range before training, not after it."""
        for name in ("beam_size", "max_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decode.{name} must be at least 1, got {getattr(self, name)}")
        if not math.isfinite(self.length_penalty):
            raise ConfigError(
                f"decode.length_penalty must be a finite number, got {self.length_penalty}"
            )


@dataclass
class Seq2SeqConfig:
    """The sections every sequence-to-sequence run saves: the model, its training and its decoding.
    A task's own config has these and may add its own (G2P's `data`); `tfmr.load` reads a pair
    checkpoint whose task is not registered as this, its other sections left out."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


# ----------------------------------------------------------------------------- plain data


def to_dict(cfg: Any) -> Any:
    """A dataclass tree as plain JSON-ready data (Choices become {'kind': ..., **options})."""
    if isinstance(cfg, Choice):
        return cfg.to_dict()
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return cfg


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from nested plain data, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    obj = cls()
    for key, value in data.items():
        set_field(obj, key, value, where)
    return obj


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _hint(obj: Any, name: str) -> Any:
    return typing.get_type_hints(type(obj))[name]


def set_field(obj: Any, key: str, value: Any, where: str = "") -> None:
    """Set `obj.key = value` after checking the key exists and coercing the value's type."""
    fields = _fields(obj)
    path = f"{where}.{key}" if where else key
    if key not in fields:
        raise ConfigError(f"unknown key '{path}'; valid keys: {', '.join(fields)}")
    hint = _hint(obj, key)
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        setattr(obj, key, from_dict(type(current), value, path))
    else:
        setattr(obj, key, coerce(value, hint, path))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn `value` (possibly a command-line string) into type `hint`, or raise ConfigError."""
    if hint is Choice:
        return Choice.coerce(value, where)
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: cannot read {value!r} as {_type_name(hint)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        ):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
        if hint is int and isinstance(value, float) and number != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def check_types(obj: Any, where: str) -> None:
    """Every field of the dataclass `obj` holds its declared type as it is, without coercion
    (`dim: "32"`, `layers: 2.5` and `eps: "x"` are refused): the check a config made from a
    foreign file (a Hugging Face config.json) passes before anything is built from it."""
    for f in dataclasses.fields(obj):
        value, hint, path = getattr(obj, f.name), _hint(obj, f.name), f"{where}.{f.name}"
        if dataclasses.is_dataclass(value):
            check_types(value, path)
        elif isinstance(value, Choice):
            for key, option in value.options.items():
                if not isinstance(option, (str, int, float, bool, type(None), list, tuple)):
                    raise ConfigError(f"{path}.{key}: expected a number or a name, got {option!r}")
        elif not _holds(value, hint):
            raise ConfigError(f"{path}: expected {_type_name(hint)}, got {value!r}")


def _holds(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_holds(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    args = [a.__name__ if a is not type(None) else "none" for a in typing.get_args(hint)]
    return " or ".join(args) if args else getattr(hint, "__name__", str(hint))


def parse_scalar(text: str) -> Any:
    """Read a command-line value: numbers, booleans and null as such, everything else as text."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_override(cfg: RunConfig, assignment: str) -> None:
    """Apply one `section.key=value` (or `section.choice.option=value`) to `cfg` in place."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key=value (e.g. model.heads=8)")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    obj: Any = cfg
    where = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(obj, Choice):
            if not last:
                raise ConfigError(f"'{dotted}': options of '{where}' are not nested")
            obj.options[part] = parse_scalar(raw) if part != "kind" else raw
            if part == "kind":
                obj.kind = obj.options.pop("kind")
            return
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"'{dotted}': '{where}' is a single setting, it has no keys")
        fields = _fields(obj)
        if part not in fields:
            path = f"{where}.{part}" if where else part
            raise ConfigError(f"unknown key '{path}'; valid keys: {', '.join(fields)}")
        child = getattr(obj, part)
        if last:
            if isinstance(child, Choice):  # `model.pos=rope` picks a new kind with its defaults
                setattr(obj, part, Choice(raw.strip()))
            elif dataclasses.is_dataclass(child):
                raise ConfigError(
                    f"'{dotted}' is a section; set one of its keys: {', '.join(_fields(child))}"
                )
            else:
                hint = _hint(obj, part)
                text = hint is str or (
                    str in typing.get_args(hint) and parse_scalar(raw) is not None
                )
                set_field(
                    obj, part, raw if text else parse_scalar(raw), where
                )  # data.path=0 is the path "0"
            return
        obj, where = child, f"{where}.{part}" if where else part


def load_file(path: str | Path) -> dict:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) config file into plain data; anything
    else (a folder, a binary file, invalid syntax) is a one-line ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"--config {path} is a folder; give a YAML, TOML or JSON file")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: config files must end in .yaml, .yml, .toml or .json")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path} is not a text config file (not UTF-8 at byte {e.start})"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    if "\x00" in text:
        raise ConfigError(f"{path} is not a text config file (it has NUL bytes)")
    try:
        _check_brackets(text)
        data = _parse(text, path.suffix)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    check_depth(data, str(path))
    return data


MAX_DEPTH = 32  # tables and lists inside each other: a config is 3 deep, a saved state a few more


def check_depth(data: Any, where: str) -> None:
    """Refuse data nested deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; not a config")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def parse_json(text: str | bytes, where: str) -> Any:
    """JSON from text or bytes: invalid JSON, a number of more than 4,300 digits or a nesting
    deeper than MAX_DEPTH is one ConfigError naming `where`, never a RecursionError or ValueError."""
    at = f"{where}: " if where else ""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{at}nested more than {MAX_DEPTH} levels deep; not a config") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer past 4,300 digits
        raise ConfigError(f"{at}invalid JSON: {_reason(e)}") from None
    check_depth(data, where or "JSON")
    return data


def _check_brackets(text: str) -> None:
    """Refuse text whose brackets nest deeper than MAX_DEPTH before a parser walks it (PyYAML takes
    seconds over a few thousand `[`); a bracket inside a quoted string counts too, harmlessly."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    if deepest > MAX_DEPTH:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep; not a config")


def _reason(e: Exception) -> str:
    text = (str(e).splitlines() or [type(e).__name__])[0]
    return "a number of more than 4,300 digits" if "integer string conversion" in text else text


def _parse(text: str, suffix: str) -> Any:
    """The plain data of a config file's text; ConfigError (without the file's name) if invalid."""
    if suffix == ".json":
        return parse_json(text, "")
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            return tomllib.loads(text)
        import yaml

        return yaml.load(text, Loader=_yaml_loader()) or {}
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep; not a config") from None
    except ValueError as e:  # TOMLDecodeError, an integer past 4,300 digits
        raise ConfigError(f"invalid {suffix[1:].upper()}: {_reason(e)}") from None
    except Exception as e:  # yaml.YAMLError (imported lazily)
        if type(e).__module__.startswith("yaml"):
            raise ConfigError(f"invalid YAML: {str(e).splitlines()[0]}") from None
        raise


def _yaml_loader():
    """PyYAML's safe loader without aliases (`*name`: a 500-byte file of nested aliases expands to
    gigabytes) and with a depth limit."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ConfigError(
                    "YAML aliases (*name) are not read in config files; write the value out"
                )
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"nested more than {MAX_DEPTH} levels deep; not a config")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader


def merge_into(cfg: RunConfig, data: dict) -> RunConfig:
    """Overlay nested plain data (from a file) onto `cfg`, key by key."""

    def overlay(obj: Any, values: dict, where: str) -> None:
        if not isinstance(values, dict):
            raise ConfigError(f"{where or 'config'}: expected a table")
        fields = _fields(obj)
        for key, value in values.items():
            path = f"{where}.{key}" if where else key
            if key not in fields:
                raise ConfigError(f"unknown key '{path}'; valid keys: {', '.join(fields)}")
            child = getattr(obj, key)
            if dataclasses.is_dataclass(child):
                overlay(child, value, path)
            else:
                set_field(obj, key, value, where)

    overlay(cfg, data, "")
    return cfg


def check_options(
    choice_: Choice,
    registry: dict,
    axis: str,
    fixed: tuple[str, ...] | None = None,
    method: str | None = None,
) -> None:
    """Check a Choice against its registry: known kind, and options the class accepts.

    `fixed` names constructor arguments the caller passes itself (not user options); by default
    those the class declares it receives from the build (`variant.Variant.receives`). `method`
    checks the options against a classmethod (e.g. a tokenizer's `train`) instead of `__init__`.
    """
    if choice_.kind not in registry:
        raise ConfigError(
            f"unknown {axis} kind {choice_.kind!r}; valid kinds: {', '.join(registry)}"
        )
    if fixed is None:
        fixed = getattr(registry[choice_.kind], "receives", ())
    target = registry[choice_.kind] if method is None else getattr(registry[choice_.kind], method)
    params = inspect.signature(target).parameters
    valid = [
        n
        for n, p in params.items()
        if n not in fixed
        and n not in ("self", "cls")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    for name in choice_.options:
        if name not in valid:
            listed = ", ".join(valid) if valid else "(none)"
            raise ConfigError(
                f"{axis} kind {choice_.kind!r} has no option {name!r}; valid options: {listed}"
            )


def dumps(cfg: Any) -> str:
    """The resolved config as indented JSON (printed at start, saved with checkpoints)."""
    return json.dumps(to_dict(cfg), indent=2, ensure_ascii=False)
