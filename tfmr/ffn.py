"""Feed-forward sublayers. Each is `ffn(x) -> (y, aux_loss)`; aux_loss is None unless the
layer adds a training loss of its own (the mixture of experts does).

    mlp                         w2(act(w1 x)), hidden = 4 * dim                   (Vaswani et al.)
    glu / swiglu / geglu / reglu  w2(act(w1 x) * w3 x), hidden = 2/3 * 4 * dim     (Shazeer 2020)
    moe                         a router picks top-k experts per token            (Switch, Mixtral)

The mixture of experts sorts the (token, expert) assignments by expert and runs each expert once
on its contiguous slice of tokens (a loop over experts, never over tokens); Switch-style capacity
limits drop the overflow, which then rides the residual connection unchanged. Its balance and
router z-losses come back as the aux loss while training; `expert_stats(model)` reads (and
resets) the routing counts the trainer logs. Attention-side variants live in kernels.py;
where the norm sits is the `Residual` in model.py.

Every FFN subclasses `FFN` and declares its projections, which init reads (never their names):

    output_projections = ("w2",)     names of the Linear layers that write into the residual
                                     stream: `residual_projections()` returns them, and init gives
                                     them std / sqrt(2 * layers) (GPT-2's depth-scaled init)
    value_projections()              the Linear layers DeepNorm scales by beta: all of them by
                                     default; the mixture of experts leaves its router out
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .variant import Variant

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FFN(nn.Module, Variant):
    """Base of the feed-forward sublayers: `ffn(x) -> (y, aux_loss or None)`, with the
    declarations init reads (see the module docstring). The build passes every FFN the model's
    dim, the bias setting and the dropout (`receives`); the rest of `__init__` is options."""

    output_projections: tuple[str, ...]  # every subclass names its down projection(s)
    receives = ("dim", "bias", "dropout")

    def residual_projections(self) -> list[nn.Linear]:
        """The Linear layers that write into the residual stream (depth-scaled at init)."""
        return [getattr(self, name) for name in type(self).output_projections]

    def value_projections(self) -> list[nn.Linear]:
        """The Linear layers DeepNorm initialises with gain beta (all of them, in module order)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)]

    def active_parameters(self) -> int:
        """Parameters one token meets (all of them for a dense FFN)."""
        return sum(p.numel() for p in self.parameters())


class MLP(FFN):
    """Position-wise MLP (https://arxiv.org/abs/1706.03762): w2(act(w1 x)), hidden = mult * dim."""

    output_projections = ("w2",)

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        mult: float = 4,
        hidden: int | None = None,
        activation: str = "gelu",
    ):
        super().__init__()
        hidden = hidden or int(mult * dim)
        self.activation = activation
        self.act = _activation(activation)
        self.w1 = nn.Linear(dim, hidden, bias=bias)  # up
        self.w2 = nn.Linear(hidden, dim, bias=bias)  # down
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor):
        return self.drop(self.w2(self.act(self.w1(x)))), None  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"hidden={self.w1.out_features}, activation={self.activation}"


def glu_hidden(dim: int, mult: float = 4, multiple_of: int = 8) -> int:
    """The GLU hidden size: 2/3 of the MLP's (three matrices instead of two, same parameters),
    rounded up to a multiple of `multiple_of` (Llama uses 256)."""
    hidden = int(2 * mult * dim / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class GLU(FFN):
    """Gated linear unit FFN (https://arxiv.org/abs/2002.05202): w2(act(w1 x) * (w3 x)).

    w1 is the gate, w3 the up projection, w2 the down projection (Llama's names). With
    activation sigmoid this is Dauphin et al.'s GLU; silu, gelu and relu give SwiGLU, GeGLU and
    ReGLU. Unless `hidden` is given, hidden = 2/3 * mult * dim rounded up to `multiple_of`.
    """

    output_projections = ("w2",)

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        mult: float = 4,
        hidden: int | None = None,
        multiple_of: int = 8,
        activation: str = "sigmoid",
    ):
        super().__init__()
        hidden = hidden or glu_hidden(dim, mult, multiple_of)
        self.activation = activation
        self.act = _activation(activation)
        self.w1 = nn.Linear(dim, hidden, bias=bias)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=bias)  # up
        self.w2 = nn.Linear(hidden, dim, bias=bias)  # down
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor):
        return self.drop(self.w2(self.act(self.w1(x)) * self.w3(x))), None  # (B, T, dim)

    def extra_repr(self) -> str:
        return f"hidden={self.w1.out_features}, activation={self.activation}"


class SwiGLU(GLU):
    """GLU with a SiLU (swish) gate, as in PaLM and Llama (https://arxiv.org/abs/2002.05202)."""

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        mult: float = 4,
        hidden: int | None = None,
        multiple_of: int = 8,
    ):
        super().__init__(dim, bias, dropout, mult, hidden, multiple_of, activation="silu")


class GeGLU(GLU):
    """GLU with a GELU gate (https://arxiv.org/abs/2002.05202)."""

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        mult: float = 4,
        hidden: int | None = None,
        multiple_of: int = 8,
    ):
        super().__init__(dim, bias, dropout, mult, hidden, multiple_of, activation="gelu")


class ReGLU(GLU):
    """GLU with a ReLU gate (https://arxiv.org/abs/2002.05202)."""

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        mult: float = 4,
        hidden: int | None = None,
        multiple_of: int = 8,
    ):
        super().__init__(dim, bias, dropout, mult, hidden, multiple_of, activation="relu")


# ----------------------------------------------------------------------------- mixture of experts


def balance_loss(probs: torch.Tensor, experts: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch Transformer's load-balancing loss (https://arxiv.org/abs/2101.03961, eq. 4-6):

        E * sum_i f_i * P_i,  f_i = (top-k assignments to expert i) / N,  P_i = mean_x p_i(x)

    probs (N, E) router probabilities; experts (N, k) chosen experts. With top-k, f sums to k,
    so perfectly balanced routing gives k (Hugging Face Mixtral's convention); 1 for Switch."""
    n = probs.shape[0]
    f = torch.bincount(experts.flatten(), minlength=num_experts).to(probs.dtype) / n  # (E,)
    return num_experts * (f * probs.mean(0)).sum()


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss (https://arxiv.org/abs/2202.08906, eq. 5): mean (logsumexp logits)^2,
    which keeps router logits small (and bf16-safe)."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def capacity(tokens: int, top_k: int, num_experts: int, factor: float) -> int | None:
    """Slots per expert: ceil(factor * tokens * k / E) (Switch / GShard); None when factor <= 0."""
    if factor <= 0:
        return None
    return max(1, math.ceil(factor * tokens * top_k / num_experts))


class Routes:
    """Where the k*N (token, expert) assignments go: `src` (M,) the token of each kept assignment
    in expert order; `back` (k*N,) for assignment slot * N + token, its row among the M kept
    ones, or M when capacity dropped it."""

    def __init__(self, src: torch.Tensor, back: torch.Tensor, k: int):
        self.src, self.back, self.k = src, back, k


def _inverse(order: torch.Tensor, total: int) -> torch.Tensor:
    """back[order[j]] = j; len(order) for the assignments order leaves out."""
    back = torch.full((total,), order.numel(), dtype=torch.long, device=order.device)
    back[order] = torch.arange(order.numel(), device=order.device)
    return back


def _dispatch(x: torch.Tensor, r: Routes) -> torch.Tensor:
    return x.index_select(0, r.src)  # (N, dim) -> (M, dim)


def _combine(y: torch.Tensor, r: Routes) -> torch.Tensor:
    padded = torch.cat([y, y.new_zeros(1, y.shape[1])])  # (M + 1, dim): row M stands for "dropped"
    n = r.back.numel() // r.k
    return padded.index_select(0, r.back).view(r.k, n, y.shape[1]).sum(0)  # (k, N, dim) -> (N, dim)


class Dispatch(torch.autograd.Function):
    """Tokens to expert order, x[src]. Combine is its transpose, so each one's backward is the
    other's forward: gathers and a sum over the k copies, no scatter-add (faster, deterministic)."""

    @staticmethod
    def forward(ctx, x, routes):
        ctx.routes = routes
        return _dispatch(x, routes)

    @staticmethod
    def backward(ctx, grad):
        return _combine(grad, ctx.routes), None


class Combine(torch.autograd.Function):
    """Expert outputs back to token order, summing each token's k (gated) results."""

    @staticmethod
    def forward(ctx, y, routes):
        ctx.routes = routes
        return _combine(y, routes)

    @staticmethod
    def backward(ctx, grad):
        return _dispatch(grad, ctx.routes), None


class MoE(FFN):
    """Mixture of experts FFN: a linear router sends each token to its top-k experts.

        x (N, dim) -> router -> softmax -> top-k (expert, gate) per token
          -> sort the N*k assignments by expert (first choices ahead of second ones)
          -> drop what exceeds each expert's capacity (training only, if capacity_factor > 0)
          -> each expert runs once on its slice -> scale by gate -> add back per token

    top_k=1 with capacity_factor 1.25 is Switch (https://arxiv.org/abs/2101.03961): the gate
    is the router probability. top_k=2 without capacity is Mixtral
    (https://arxiv.org/abs/2401.04088): the k gates are renormalised to sum to 1. `norm_topk`
    unset means exactly that (renormalise when top_k > 1); true renormalises at top_k 1 too
    (Hugging Face Mixtral does: the gate is then 1 and the router learns from the aux loss only).
    A dropped assignment contributes nothing, so a token dropped by all its experts leaves the
    sublayer as zero and the residual carries it. At inference the capacity is
    `eval_capacity_factor` (default 0: no limit), so cached decoding equals the full forward.

    Training adds `balance_coef * balance_loss + z_coef * z_loss` as the aux loss.
    Experts are any non-MoE FFN kind (`expert`), sized by `hidden` or `mult`. The experts'
    projections are this layer's own (residual, value); the router is neither.
    """

    quantizable = False  # route() reads router.weight itself: weight-only quantization (quantize.py) refuses it

    def __init__(
        self,
        dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        experts: int = 8,
        top_k: int = 2,
        capacity_factor: float = 0.0,
        eval_capacity_factor: float = 0.0,
        norm_topk: bool | None = None,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
        expert: str = "mlp",
        hidden: int | None = None,
        mult: float = 4,
        activation: str | None = None,
    ):
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be between 1 and experts ({experts}), got {top_k}")
        self.num_experts, self.top_k = experts, top_k
        self.norm_topk = top_k > 1 if norm_topk is None else bool(norm_topk)
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.balance_coef, self.z_coef = balance_coef, z_coef
        self.expert_kind = expert
        self.router = nn.Linear(dim, experts, bias=False)
        self.experts = nn.ModuleList(
            _expert(expert, dim, bias, dropout, hidden, mult, activation) for _ in range(experts)
        )
        # routing counts since the last `expert_stats` read (training steps only); not saved
        self.register_buffer("routed", torch.zeros(experts), persistent=False)
        self.register_buffer("dropped", torch.zeros(()), persistent=False)

    def residual_projections(self) -> list[nn.Linear]:
        return [p for expert in self.experts for p in expert.residual_projections()]

    def value_projections(self) -> list[nn.Linear]:
        return [p for expert in self.experts for p in expert.value_projections()]

    def active_parameters(self) -> int:
        """The router plus top_k experts: what one token meets."""
        return self.router.weight.numel() + self.top_k * self.experts[0].active_parameters()

    def route(self, x: torch.Tensor):
        """Router logits (N, E), probabilities (N, E), gates (N, k) and experts (N, k), in fp32."""
        dtype = torch.promote_types(x.dtype, torch.float32)  # routing in full precision (Switch)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.to(dtype), self.router.weight.to(dtype))  # (N, E)
        probs = logits.softmax(-1)
        gates, chosen = probs.topk(self.top_k, dim=-1)  # (N, k)
        if self.norm_topk:
            gates = gates / gates.sum(-1, keepdim=True)
        return logits, probs, gates, chosen

    def assign(self, chosen: torch.Tensor):
        """Sort the k*N assignments (a = slot * N + token) by expert, first choices ahead of
        second ones, and keep what fits each expert's capacity. -> order (M,), counts (E,) before
        capacity, kept (E,) after it."""
        n = chosen.shape[0]
        expert_of = chosen.t().reshape(-1)  # (k*N,)
        order = torch.argsort(expert_of, stable=True)  # grouped by expert, priority kept inside
        counts = torch.bincount(expert_of, minlength=self.num_experts)  # (E,)
        cap = capacity(
            n,
            self.top_k,
            self.num_experts,
            self.capacity_factor if self.training else self.eval_capacity_factor,
        )
        if cap is None:
            return order, counts, counts
        starts = counts.cumsum(0) - counts  # (E,) where each expert's group begins
        rank = (
            torch.arange(order.numel(), device=order.device) - starts[expert_of[order]]
        )  # place in group
        return order[rank < cap], counts, counts.clamp(max=cap)

    def forward(self, x: torch.Tensor):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, dim)
        n, k = flat.shape[0], self.top_k
        logits, probs, gates, chosen = self.route(flat)
        order, counts, kept = self.assign(chosen)
        routes = Routes(order % n, _inverse(order, k * n), k)
        inputs = Dispatch.apply(flat, routes)  # (M, dim) tokens grouped by expert
        outputs = [
            expert(chunk)[0] for expert, chunk in zip(self.experts, inputs.split(kept.tolist()))
        ]
        y = torch.cat(outputs) * gates.t().reshape(-1)[order, None].to(outputs[0].dtype)  # (M, dim)
        out = Combine.apply(y, routes)  # (N, dim): each token's k results summed
        aux = None
        if self.training:
            self.routed += counts.to(self.routed.dtype)
            self.dropped += (counts - kept).sum()
            aux = self.balance_coef * balance_loss(
                probs, chosen, self.num_experts
            ) + self.z_coef * z_loss(logits)
        return out.view(shape), aux  # (B, T, dim)

    def extra_repr(self) -> str:
        return (
            f"experts={self.num_experts}, top_k={self.top_k}, norm_topk={self.norm_topk}, "
            f"expert={self.expert_kind}, capacity_factor={self.capacity_factor}, "
            f"balance_coef={self.balance_coef}, z_coef={self.z_coef}"
        )


def _expert(kind: str, dim: int, bias: bool, dropout: float, hidden, mult, activation) -> nn.Module:
    """One expert: a non-MoE FFN kind, built with the options it takes."""
    experts = {k: v for k, v in FFNS.items() if v is not MoE}
    if kind not in experts:
        raise ValueError(f"unknown expert kind {kind!r}; valid: {', '.join(experts)}")
    options = {"dim": dim, "bias": bias, "dropout": dropout, "hidden": hidden, "mult": mult}
    if activation is not None:
        if kind not in ("mlp", "glu"):
            raise ValueError(
                f"expert {kind!r} fixes its activation; use expert=mlp or expert=glu to choose one"
            )
        options["activation"] = activation
    return experts[kind](**options)


def expert_stats(model: nn.Module) -> dict:
    """Expert utilisation since the last call, for the training log (then the counts reset).

    {"moe_load": per MoE layer, the fraction of assignments each expert received,
     "moe_max_load": the busiest expert's share times E over all layers (1.0 = perfectly even),
     "moe_dropped": the fraction of assignments dropped by capacity limits}; {} without MoE."""
    layers = [m for m in model.modules() if isinstance(m, MoE)]
    if not layers or not any(float(m.routed.sum()) > 0 for m in layers):
        return {}
    loads, routed, dropped, peak = [], 0.0, 0.0, 0.0
    for m in layers:
        total = float(m.routed.sum())
        share = (m.routed / max(total, 1.0)).tolist()
        loads.append([round(s, 4) for s in share])
        peak = max(peak, max(share) * m.num_experts)
        routed, dropped = routed + total, dropped + float(m.dropped)
        m.routed.zero_()
        m.dropped.zero_()
    return {
        "moe_load": loads,
        "moe_max_load": round(peak, 4),
        "moe_dropped": round(dropped / max(routed, 1.0), 4),
    }


FFNS = {"mlp": MLP, "glu": GLU, "swiglu": SwiGLU, "geglu": GeGLU, "reglu": ReGLU, "moe": MoE}
