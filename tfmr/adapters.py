"""Cheap fine-tuning as transforms of a built model: LoRA and bottleneck adapters.

    model = build_model(cfg); load the base weights
    apply_lora(model, targets=("q_proj", "v_proj"), rank=8, alpha=16)   # only LoRA trains
    ... train ...
    save_lora(model, "run/lora.safetensors")      # the LoRA weights alone, a few KB to MB
    merge_lora(model) / unmerge_lora(model)       # fold B A into W for inference, and back

    apply_adapters(model, targets=("out_proj", "w2"), bottleneck=64)      # Houlsby adapters

Both replace the named `nn.Linear` layers in place with a wrapper that keeps the original
`weight` and `bias` parameters under the same names, so the base checkpoint still loads into
the transformed model and `state_dict` keys only gain new entries (`q_proj.lora_A`, ...).
Targets are the layer names of tfmr's one vocabulary (q_proj, k_proj, v_proj, out_proj, w1,
w2, w3, lm_head). Files are safetensors with the settings in their metadata, so
`load_adaptation(model, path)` rebuilds the transform and loads its weights in one call.
Training loops and the `finetune` command live in finetune.py; prefix tuning and IA3 are not here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .ffn import _activation
from .norms import NORMS


class LoRALinear(nn.Module):
    """A linear layer plus a trainable low-rank update (https://arxiv.org/abs/2106.09685):

        y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T,   A (rank, in), B (out, rank)

    A starts random (Kaiming-uniform, as nn.Linear), B at zero, so training starts from the
    base model exactly. `merge()` adds (alpha / rank) B A to W (no extra cost at inference);
    `unmerge()` takes it back out."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        if not math.isfinite(alpha):
            raise ValueError(f"LoRA alpha must be a finite number, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same parameters, the same names
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        if self.merged:
            return y
        return (
            y + F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B) * self.scale
        )  # (..., rank) -> (..., out)

    def delta(self) -> torch.Tensor:
        """The update this layer adds to W: (alpha / rank) B A, (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"alpha={self.alpha}, merged={self.merged}"
        )


class Adapter(nn.Module):
    """Houlsby bottleneck adapter (https://arxiv.org/abs/1902.00751): h + up(act(down(h))),
    with `up` at zero so it starts as the identity."""

    def __init__(self, dim: int, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"adapter bottleneck must be at least 1, got {bottleneck}")
        self.activation = activation
        self.act = _activation(activation)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))  # (..., dim) -> (..., bottleneck) -> (..., dim)

    def extra_repr(self) -> str:
        return f"bottleneck={self.down.out_features}, activation={self.activation}"


class AdaptedLinear(nn.Module):
    """A linear layer followed by a bottleneck adapter; `weight` and `bias` keep their names.
    On an attention output projection or an FFN down projection this is Houlsby's placement:
    after the sublayer, before the residual sum."""

    def __init__(self, base: nn.Linear, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.adapter = Adapter(base.out_features, bottleneck, activation).to(
            base.weight.device, base.weight.dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(F.linear(x, self.weight, self.bias))


# ----------------------------------------------------------------------------- transforms


def _replace_linears(model: nn.Module, targets, make) -> list[str]:
    """Swap every nn.Linear whose own name is in `targets` for `make(linear)`; their names."""
    targets = tuple(targets)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [(name, m) for name, m in found if name.rsplit(".", 1)[-1] in targets]
    if not chosen:
        available = sorted({name.rsplit(".", 1)[-1] for name, _ in found})
        raise ValueError(
            f"no linear layer named {', '.join(targets)} in this model; "
            f"linear layers here: {', '.join(available)}"
        )
    shared = _shared_weights(model)
    for name, linear in chosen:
        if id(linear.weight) in shared:
            raise ValueError(
                f"{name} shares its weight with another layer (tied embeddings); "
                "adapting it would change both; leave it out of the targets"
            )
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, make(linear))
    return [name for name, _ in chosen]


def _shared_weights(model: nn.Module) -> set[int]:
    seen, shared = set(), set()
    for _, p in model.named_parameters(remove_duplicate=False):
        (shared if id(p) in seen else seen).add(id(p))
    return shared


def _train_only(model: nn.Module, keep) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))


def apply_lora(
    model: nn.Module,
    targets=("q_proj", "v_proj"),
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Add LoRA to the named linear layers; freeze everything else. Returns the model (changed in place)."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("this model already has LoRA layers")
    _replace_linears(model, targets, lambda lin: LoRALinear(lin, rank, alpha, dropout))
    _train_only(model, lambda name: ".lora_" in name)
    model.adaptation = {
        "kind": "lora",
        "targets": list(targets),
        "rank": rank,
        "alpha": alpha,
        "dropout": dropout,
    }
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (inference at the base model's speed)."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Take the LoRA updates back out of the base weights (to train further or to swap LoRAs)."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model


def apply_adapters(
    model: nn.Module,
    targets=("out_proj", "w2"),
    bottleneck: int = 64,
    activation: str = "gelu",
    train_norms: bool = True,
) -> nn.Module:
    """Insert Houlsby adapters after the named linear layers; train only them (and the norms'
    gains and biases when `train_norms`, as Houlsby et al.). Returns the model (changed in place)."""
    if any(isinstance(m, AdaptedLinear) for m in model.modules()):
        raise ValueError("this model already has adapters")
    _replace_linears(model, targets, lambda lin: AdaptedLinear(lin, bottleneck, activation))
    norm_names = {name for name, m in model.named_modules() if isinstance(m, tuple(NORMS.values()))}
    _train_only(
        model,
        lambda name: ".adapter." in name or (train_norms and name.rsplit(".", 1)[0] in norm_names),
    )
    model.adaptation = {
        "kind": "adapter",
        "targets": list(targets),
        "bottleneck": bottleneck,
        "activation": activation,
        "train_norms": train_norms,
    }
    return model


# ----------------------------------------------------------------------------- files


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (LoRA / adapter weights, and norms when adapters train them)."""
    return {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def save_adaptation(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write the trained LoRA / adapter weights alone, with their settings as metadata.
    LoRA layers must be unmerged (what is saved is A and B, the base stays untouched)."""
    from .checkpoint import save_file  # safetensors' own, with the normal file mode

    settings = getattr(model, "adaptation", None)
    if settings is None:
        raise ValueError(
            "this model has no LoRA or adapters to save (apply_lora / apply_adapters first)"
        )
    if any(layer.merged for layer in lora_layers(model)):
        raise ValueError("unmerge the LoRA layers before saving (unmerge_lora(model))")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"tfmr_adaptation": json.dumps(settings), "extra": json.dumps(extra or {})}
    save_file(trainable_state_dict(model), str(path), metadata=meta)
    return path


save_lora = save_adaptation


def read_adaptation(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(settings, tensors, extra) of a file written by save_adaptation."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / ADAPTATION_FILE
    if not path.exists():
        raise FileNotFoundError(f"no LoRA / adapter weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "tfmr_adaptation" not in meta:
        raise ValueError(
            f"{path} has no tfmr adaptation settings in its metadata; was it written by save_lora?"
        )
    return (
        json.loads(meta["tfmr_adaptation"]),
        load_file(str(path)),
        json.loads(meta.get("extra", "{}")),
    )


def load_adaptation(model: nn.Module, path: str | Path, merge: bool = False) -> nn.Module:
    """Apply the transform saved in `path` (LoRA or adapters) to a base model and load its weights."""
    settings, tensors, _ = read_adaptation(path)
    options = {k: v for k, v in settings.items() if k != "kind"}
    if settings["kind"] == "lora":
        apply_lora(model, **options)
    elif settings["kind"] == "adapter":
        apply_adapters(model, **options)
    else:
        raise ValueError(
            f"{path}: unknown adaptation kind {settings['kind']!r}; valid: lora, adapter"
        )
    expected = set(trainable_state_dict(model))
    if set(tensors) != expected:
        raise ValueError(
            f"{path} does not fit this model: missing {sorted(expected - set(tensors))[:4]}, "
            f"unexpected {sorted(set(tensors) - expected)[:4]}"
        )
    device = next(model.parameters()).device
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in tensors.items():
            params[name].copy_(value.to(device))
    if merge:
        merge_lora(model)
    return model


load_lora = load_adaptation

ADAPTATION_FILE = "adaptation.safetensors"


def parse_spec(text: str) -> dict:
    """`rank=8,alpha=16,targets=q_proj,v_proj` -> {"rank": 8, "alpha": 16.0, "targets": [...]}.
    A bare word continues the list of the key before it."""
    from .config import parse_scalar

    spec: dict = {}
    key = None
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            key, value = (s.strip() for s in part.split("=", 1))
            spec[key] = [value] if key == "targets" else parse_scalar(value)
        elif key == "targets":
            spec[key].append(part)
        else:
            raise ValueError(
                f"cannot read {part!r} in {text!r}; write key=value pairs, e.g. rank=8,alpha=16,"
                "targets=q_proj,v_proj"
            )
    return spec
