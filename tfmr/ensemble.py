"""Several models decoding as one: an ensemble behind the decoding protocol (`decode.Decodable`).

    ens = Ensemble([model_a, model_b])                  # the same target vocabulary
    ids = decode.greedy(ens, start, 20, src=src)        # or beam_search, sample, ...

At every step each member reads the same tokens with its own state, and the ensemble's next-token
scores are the log of the members' mean probability, log(sum_m w_m p_m(y)) (`combine="prob"`, the
usual ensemble of neural translation and G2P models), or their mean log-probability,
sum_m w_m log p_m(y) up to a constant (`combine="logprob"`, a product of experts). Both are
normalised log-probabilities, so beam search's scores stay sums of log-probabilities. Weights
default to equal and are normalised to sum to 1.

A full forward (`ens(src, tgt)`, teacher forcing, as scoring a given output needs) returns the
first member's Output with its logits replaced by the combined log-probabilities: the attention
maps it carries are the first member's.

Left out: members with different vocabularies (a mapping between them is the caller's), and
training an ensemble (each member trains on its own; distil the ensemble for a single model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

COMBINES = ("prob", "logprob")


class EnsembleState:
    """The members' decoding states, stepped and reordered together."""

    def __init__(self, members: list):
        self.members = members

    @property
    def pos(self) -> int:
        return self.members[0].pos

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> EnsembleState:
        """Keep batch rows `index` in every member (beam search keeps the survivors)."""
        self.members = [state.reorder(index, same_sources) for state in self.members]
        return self


class Ensemble(nn.Module):
    """Models with one target vocabulary decoding as one (see the module docstring)."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        combine: str = "prob",
    ):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
        weights = [1.0] * len(models) if weights is None else list(weights)
        if len(weights) != len(models) or min(weights) <= 0:
            raise ValueError(f"need one positive weight per model, got {weights}")
        sources = {bool(getattr(m, "needs_source", False)) for m in models}
        if len(sources) > 1:
            raise ValueError("an ensemble mixes encoder-decoder and decoder-only models")
        self.members = nn.ModuleList(models)
        total = sum(weights)
        self.register_buffer(
            "weights", torch.tensor([w / total for w in weights]), persistent=False
        )
        self.combine = combine
        self.needs_source = sources.pop()
        # what the decoders read of a model's config: the context every member can take
        contexts = [m.cfg.context for m in models]
        self.cfg = dataclasses.replace(models[0].cfg, context=min(contexts))

    def start_state(self, batch: int, max_len: int, src: torch.Tensor | None = None):
        if self.needs_source:
            return EnsembleState([m.start_state(batch, max_len, src) for m in self.members])
        return EnsembleState([m.start_state(batch, max_len) for m in self.members])

    def step(
        self, tokens: torch.Tensor, state: EnsembleState
    ) -> tuple[torch.Tensor, EnsembleState]:
        """Feed tokens (B, T) to every member -> (the ensemble's next-token log-probs (B, V), state)."""
        logits, states = [], []
        for model, member in zip(self.members, state.members, strict=True):
            out, member = model.step(tokens, member)
            logits.append(out)
            states.append(member)
        state.members = states
        return self._combine(logits), state

    def forward(self, *args, **kwargs):
        """Every member's forward on the same inputs -> the first member's Output, its logits
        (B, T, V) the combined log-probabilities (no loss: an ensemble is not trained)."""
        if kwargs.get("targets") is not None or len(args) > 2:
            raise ValueError("an ensemble is not trained: call it without targets")
        outs = [model(*args, **kwargs) for model in self.members]
        combined = self._combine([o.logits for o in outs])
        return dataclasses.replace(outs[0], logits=combined, loss=None, aux_loss=None)

    def _combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The members' logits (..., V) -> the ensemble's log-probabilities (..., V)."""
        sizes = {lg.shape[-1] for lg in logits}
        if len(sizes) > 1:
            raise ValueError(
                f"ensemble members predict different vocabularies (sizes {sorted(sizes)})"
            )
        stacked = torch.stack([lg.float().log_softmax(-1) for lg in logits])  # (M, ..., V)
        w = self.weights.to(stacked.device).view(-1, *[1] * (stacked.dim() - 1))  # (M, 1.., 1)
        if self.combine == "prob":
            return torch.logsumexp(stacked + w.log(), dim=0)  # log sum_m w_m p_m
        return (stacked * w).sum(0).log_softmax(-1)  # sum_m w_m log p_m, renormalised

    def extra_repr(self) -> str:
        weights = ", ".join(f"{w:.3g}" for w in self.weights.tolist())
        return f"members={len(self.members)}, combine={self.combine}, weights=({weights})"
