"""The copy mechanism: a pointer-generator (See et al. 2017) wrapped around an encoder-decoder.

    copy_distribution   P(w) = p_gen P_vocab(w) + (1 - p_gen) * attention on the source positions
                        holding w, in a vocabulary extended by the source's out-of-vocabulary tokens
    CopyState           the decoding state plus the extended source ids (beam search reorders both)
    PointerGenerator    the wrapper: teacher-forced forward and the decoding protocol
                        (`start_state` / `step`), so decode.py's greedy, beam and sampling run it

It reads the cross-attention weights, so it refuses a model whose kernel does not give them
(the kernel class's `gives_weights`; the refusal lists the kinds that do, read from the kernel
registries by `kernels.weight_giving`). Build one with `build_copy_model(cfg)` in builder.py; the
plain output heads are in heads.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .alignment import CROSS_KERNELS
from .cache import DecodeState
from .config import ConfigError
from .kernels import KERNELS, weight_giving
from .model import Output


def copy_distribution(
    vocab_logits: torch.Tensor,
    attn: torch.Tensor,
    src_ext: torch.Tensor,
    p_gen: torch.Tensor,
    n_ext: int,
) -> torch.Tensor:
    """The pointer-generator's output distribution (probabilities, not logits):

        P(w) = p_gen * P_vocab(w) + (1 - p_gen) * sum of attention on the source positions holding w

    vocab_logits (B, T, V), attn (B, T, S) rows summing to 1 over real source positions,
    src_ext (B, S) source ids in the extended vocabulary (V + j for the j-th source-only token),
    p_gen (B, T, 1). Returns (B, T, V + n_ext).
    """
    B, T, _ = vocab_logits.shape
    p_vocab = torch.softmax(vocab_logits.float(), dim=-1) * p_gen  # (B, T, V)
    p = F.pad(p_vocab, (0, n_ext))  # (B, T, V + n_ext): source-only tokens start at zero
    copy = (1.0 - p_gen) * attn.float()  # (B, T, S)
    return p.scatter_add(-1, src_ext[:, None, :].expand(B, T, -1), copy)


class CopyState(DecodeState):
    """DecodeState plus the extended source ids, which beam search reorders with the rest."""

    @classmethod
    def wrap(cls, state: DecodeState, src_ext: torch.Tensor, n_ext: int) -> CopyState:
        new = cls.__new__(cls)
        new.__dict__.update(state.__dict__)
        new.src_ext, new.n_ext = src_ext, n_ext
        return new

    def reorder(self, index: torch.Tensor, same_sources: bool = False) -> CopyState:
        super().reorder(index, same_sources)
        if not same_sources:  # the extended source ids are the source's
            self.src_ext = self.src_ext.index_select(0, index)
        return self


class PointerGenerator(nn.Module):
    """Pointer-generator network (See et al. 2017, https://arxiv.org/abs/1704.04368) on a Transformer.

        p_gen = sigmoid(w . [context; decoder state; decoder input embedding] + b)
        P(w)  = p_gen P_vocab(w) + (1 - p_gen) sum_{i: src_i = w} a_i

    The attention a is the cross-attention of one decoder layer (the last by default), averaged
    over heads; the context is a applied to the encoder memory. Source and target share one
    vocabulary of size V. Ids >= V are source-only tokens: they are read as <unk> (`unk_id`) by
    the embeddings and can only be produced by copying. `src_ids` everywhere are extended ids.

    Outputs are log-probabilities in the extended vocabulary, so cross entropy, arg-max, sampling
    and beam search over them treat the mixture exactly (log_softmax of log p is log p).
    """

    needs_source = True  # decoding starts from the source (`start_state(..., src)`)

    def __init__(self, base: nn.Module, unk_id: int, layer: int = -1):
        super().__init__()
        cfg = base.cfg
        if cfg.arch != "encoder-decoder":
            raise ConfigError(
                "the pointer-generator needs an encoder-decoder model (model.arch=encoder-decoder)"
            )
        kernel = base.blocks[layer].cross.kernel
        if not kernel.gives_weights:
            kind = (cfg.cross_kernel or cfg.kernel).kind
            raise ConfigError(
                f"the pointer-generator reads cross-attention weights; kernel {kind!r} "
                f"({type(kernel).__name__}) does not return them: use a kernel that does "
                f"(model.kernel={' | '.join(weight_giving(KERNELS))}, or "
                f"model.cross_kernel={' | '.join(weight_giving(CROSS_KERNELS))})"
            )
        if not cfg.share_embeddings or (cfg.src_vocab_size or cfg.vocab_size) != cfg.vocab_size:
            raise ConfigError(
                "the pointer-generator copies source ids into the output: source and target "
                "must share one vocabulary (model.share_embeddings=true)"
            )
        self.base, self.cfg, self.unk_id, self.layer = base, cfg, unk_id, layer
        self.gate = nn.Linear(3 * cfg.dim, 1)  # [context; state; input] -> p_gen logit

    def in_vocab(self, ids: torch.Tensor) -> torch.Tensor:
        return ids.masked_fill(ids >= self.cfg.vocab_size, self.unk_id)

    def n_ext(self, src_ids: torch.Tensor) -> int:
        return max(int(src_ids.max()) + 1 - self.cfg.vocab_size, 0)

    def mix(
        self,
        dec: Output,
        memory: torch.Tensor,
        tgt_in: torch.Tensor,
        src_ext: torch.Tensor,
        n_ext: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P (B, T, V + n_ext), p_gen (B, T, 1)) from a decoder Output."""
        attn = dec.cross_attentions[self.layer].float().mean(1)  # (B, T, S): head average
        context = attn @ memory.float()  # (B, T, dim)
        emb = self.base.tok_emb(tgt_in).float()  # (B, T, dim)
        features = torch.cat([context, dec.hidden.float(), emb], dim=-1)  # (B, T, 3 dim)
        p_gen = torch.sigmoid(self.gate(features).float())  # (B, T, 1)
        probs = copy_distribution(dec.logits, attn, src_ext, p_gen, n_ext)
        return torch.log(probs.clamp_min(1e-20)), p_gen

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        n_ext: int | None = None,
    ) -> Output:
        """Teacher forcing; src_ids, tgt_ids and targets in the extended vocabulary."""
        n_ext = self.n_ext(src_ids) if n_ext is None else n_ext
        memory, src_mask = self.base.encode(self.in_vocab(src_ids))
        tgt_in = self.in_vocab(tgt_ids)
        dec = self.base.decode(tgt_in, memory, src_mask)
        logp, p_gen = self.mix(dec, memory, tgt_in, src_ids, n_ext)
        loss = None
        if targets is not None:
            loss = F.nll_loss(logp.flatten(0, 1), targets.flatten(), ignore_index=-100)
            loss = loss if dec.aux_loss is None else loss + dec.aux_loss
        return Output(logp, loss, dec.aux_loss, dec.attentions, dec.hidden, dec.cross_attentions)

    # ------------------------------------------------------------ decoding protocol
    def start_state(self, batch: int, max_len: int, src: torch.Tensor | None = None) -> CopyState:
        if src is None:
            raise ValueError("the pointer-generator needs the source sequence (src) to decode")
        state = self.base.start_state(batch, max_len, self.in_vocab(src))
        return CopyState.wrap(state, src, self.n_ext(src))

    def step(self, tokens: torch.Tensor, state: CopyState) -> tuple[torch.Tensor, CopyState]:
        tokens = self.in_vocab(tokens)
        _, state = self.base.step(tokens, state)
        dec = state.last  # the step's Output: hidden (B, 1, dim), cross-attention (B, H, T, S)
        last = Output(
            dec.logits,
            hidden=dec.hidden,
            cross_attentions=[a[:, :, -1:] for a in dec.cross_attentions],
        )
        logp, _ = self.mix(last, state.memory, tokens[:, -1:], state.src_ext, state.n_ext)
        return logp[:, -1], state  # (B, V + n_ext)
