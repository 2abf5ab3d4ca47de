"""The spine: the whole forward path of a tfmr model, read top to bottom.

    token ids (B, T)
      -> tok_emb                          token embedding            词嵌入
      -> pos.embed                        absolute positions         位置编码
      -> Block x layers:
           Residual(attn_norm, Attention)  self-attention             自注意力 / 多头注意力
             q_proj, k_proj, v_proj -> pos.rotate -> cache -> kernel(+ pos.bias) -> out_proj
           Residual(ffn_norm, ffn)         feed-forward               前馈网络
      -> final_norm -> lm_head             linear + softmax (tied to tok_emb by default)

A variant appears here only as a named call on a module built from config (`self.pos.embed`,
`self.kernel(...)`, `self.ffn(x)`); the variant classes live in positions.py, kernels.py, ffn.py
and norms.py. Branches in this file are structural only: cache or not, causal or not, where the
norm sits. `build_model(cfg)` in builder.py turns a ModelConfig into a Model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .cache import KVCache
from .kernels import Mask


@dataclass
class Output:
    """Everything a forward pass hands back, in one typed object."""

    logits: torch.Tensor  # (B, T, vocab), or (B, 1, vocab) with last_only
    loss: torch.Tensor | None = None  # cross entropy (+ aux losses) when targets are given
    aux_loss: torch.Tensor | None = None  # sum of the layers' own losses (MoE balance, ...)
    attentions: list = field(default_factory=list)  # per layer: (B, H, Tq, Tk) or None
    hidden: torch.Tensor | None = None  # final hidden states (B, T, dim)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections; GQA / MQA through `kv_heads`."""

    def __init__(self, dim: int, heads: int, kv_heads: int, bias: bool, kernel: nn.Module):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if heads % kv_heads:
            raise ValueError(f"heads {heads} is not a multiple of kv_heads {kv_heads}")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(heads * self.head_dim, dim, bias=bias)
        self.kernel = kernel

    def forward(self, x, pos, mask: Mask, cache: KVCache | None = None, start: int = 0):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        q, k = pos.rotate(q, k, start)
        if cache is not None:
            k, v = cache.update(k, v, start)  # (B, Hkv, start + T, D)
        bias = pos.bias(T, k.shape[2], start)  # (H, T, Tk) or None
        if self.kv_heads != self.heads:  # share each key/value head among heads // kv_heads queries
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)  # (B, H, Tk, D)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out, weights = self.kernel(q, k, v, mask, bias)  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*D)
        return self.out_proj(out), weights

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}"


class PreNorm(nn.Module):
    """x + f(norm(x)): the GPT-2 / Llama placement, stable in deep stacks."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)

    def forward(self, x, norm, sublayer):
        y, extra = sublayer(norm(x))
        return x + self.drop(y), extra


class PostNorm(nn.Module):
    """norm(x + f(x)): the original Transformer's placement."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)

    def forward(self, x, norm, sublayer):
        y, extra = sublayer(x)
        return norm(x + self.drop(y)), extra


RESIDUALS = {"pre": PreNorm, "post": PostNorm}
RESIDUAL_FIXED = ("dropout",)


class Block(nn.Module):
    """One Transformer layer: attention sublayer, then feed-forward sublayer, each wrapped by the
    residual placement (`residual(x, norm, sublayer)`)."""

    def __init__(self, attn: Attention, attn_norm: nn.Module, ffn: nn.Module, ffn_norm: nn.Module,
                 residual: nn.Module):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.ffn_norm, self.ffn = ffn_norm, ffn
        self.residual = residual

    def forward(self, x, pos, mask: Mask, cache: KVCache | None = None, start: int = 0):
        x, weights = self.residual(x, self.attn_norm, lambda h: self.attn(h, pos, mask, cache, start))
        x, aux = self.residual(x, self.ffn_norm, self.ffn)
        return x, weights, aux


class Model(nn.Module):
    """Decoder-only (causal LM) or encoder-only (bidirectional) Transformer."""

    def __init__(self, cfg, tok_emb: nn.Embedding, pos: nn.Module, blocks: list[Block],
                 final_norm: nn.Module, lm_head: nn.Linear):
        super().__init__()
        self.cfg = cfg
        self.causal = cfg.arch == "decoder"
        self.tok_emb, self.pos = tok_emb, pos
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm, self.lm_head = final_norm, lm_head

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: list[KVCache] | None = None, start: int = 0,
                padding_mask: torch.Tensor | None = None, last_only: bool = False) -> Output:
        B, T = input_ids.shape
        mask = Mask(causal=self.causal, q_start=start, key_padding=padding_mask)
        x = self.pos.embed(self.tok_emb(input_ids), start)  # (B, T, dim)
        x = self.drop(x)
        attentions, aux_total = [], None
        for i, block in enumerate(self.blocks):
            x, weights, aux = block(x, self.pos, mask, None if cache is None else cache[i], start)
            attentions.append(weights)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
        x = self.final_norm(x)
        if last_only:
            x = x[:, -1:]  # (B, 1, dim): decoding needs only the next-token distribution
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
            if aux_total is not None:
                loss = loss + aux_total
        return Output(logits, loss, aux_total, attentions, x)

    # ------------------------------------------------------------ decoding protocol
    def new_cache(self, batch: int, max_len: int) -> list[KVCache]:
        """One preallocated KV cache per layer, for `batch` sequences of up to `max_len` tokens."""
        p = next(self.parameters())
        a = self.blocks[0].attn
        return [KVCache(batch, a.kv_heads, max_len, a.head_dim, p.dtype, p.device) for _ in self.blocks]

    def step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """Feed `tokens` (B, T) at position state['pos'], return next-token logits (B, vocab)."""
        out = self(tokens, cache=state["cache"], start=state["pos"], last_only=True)
        state["pos"] += tokens.shape[1]
        return out.logits[:, -1], state

    # ------------------------------------------------------------ accounting
    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            wpe = getattr(self.pos, "wpe", None)
            n -= wpe.weight.numel() if wpe is not None else 0
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B."""
        c = self.cfg
        n = self.num_params(non_embedding=True)  # an untied head is already counted in it
        if self.lm_head.weight is self.tok_emb.weight:
            n += self.lm_head.weight.numel()  # the tied head is a matmul all the same
        return 6 * n + 12 * c.layers * c.heads * (c.dim // c.heads) * seq_len


def init_weights(model: Model, std: float) -> None:
    """Weight init in one place: N(0, std) for linear and embedding weights, zero biases, and
    the projections that write into the residual stream scaled by 1/sqrt(2 * layers) (GPT-2)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    depth_std = std / math.sqrt(2 * len(model.blocks))
    for name, p in model.named_parameters():
        if name.endswith(("out_proj.weight", "w2.weight")):
            nn.init.normal_(p, mean=0.0, std=depth_std)
