"""The spine: the whole forward path of a tfmr model, read top to bottom.

    token ids (B, T)
      -> tok_emb                          token embedding            词嵌入
      -> pos.embed                        absolute positions         位置编码
      -> embed_norm                       a norm on the embeddings (BLOOM); identity by default
      -> Block x layers:
           Residual(attn_norm, mixer)      self-attention (mixers.py)  自注意力 / 多头注意力
             q_proj, k_proj, v_proj -> pos.rotate -> cache.store -> kernel(mask, pos.score) -> out_proj
             (the mask comes from the attention pattern: dense, sliding window, sparse)
           Residual(ffn_norm, ffn)         feed-forward               前馈网络
      -> final_norm -> lm_head             linear + softmax (tied to tok_emb by default)

A variant appears here only as a named call on a module built from config (`self.pos.embed`,
`self.kernel(...)`, `self.ffn(x)`); the variant classes live in positions.py, patterns.py,
kernels.py, alignment.py, mixers.py (attention, retention), ffn.py and norms.py. Branches in this
file are structural only: cache or not, causal or not, where the norm sits. `build_model(cfg)` in
builder.py turns a ModelConfig into a Model.

The decoder's cross-attention may run a stateful alignment kernel (`alignment.ALIGNMENT_KERNELS`,
`model.cross_kernel`): at decoding its per-layer state (`DecodeState.align`) travels
run_blocks -> Block(cross_state) -> Attention(state) -> kernel(q, k, v, mask, bias, state).

The tail (blocks -> final_norm -> lm_head, and the loss) is written once, `Spine.tail`: the
decoder-only / encoder-only `Model`, the `EncoderDecoder`'s decoder and fastdecode.py all end
there. `start` (an int, or a `Where` of per-row positions and cache slots) is handed unchanged to
the position hooks and the cache; positions.py defines it. fastdecode.py runs `embed` and `tail`
with its static caches and a per-row mask. What a variant can do is declared on its class and read
here, never guessed from names: `residual_projections()` (attention's and each FFN's output
projections, for the depth-scaled init), `Residual.needs_final_norm`, `Position.embedding_weights()`,
`needs_source` on the model classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .cache import DecodeState, LayerCache
from .masks import Mask
from .mixers import Attention, Mixer
from .patterns import Dense
from .positions import Start
from .variant import Variant


@dataclass
class Output:
    """Everything a forward pass hands back, in one typed object."""

    logits: (
        torch.Tensor | None
    )  # (B, T, vocab), or (B, 1, vocab) with last_only; None: model.loss_chunk
    loss: torch.Tensor | None = None  # cross entropy (+ aux losses) when targets are given
    aux_loss: torch.Tensor | None = None  # sum of the layers' own losses (MoE balance, ...)
    attentions: list = field(default_factory=list)  # per layer: (B, H, Tq, Tk) or None
    hidden: torch.Tensor | None = None  # final hidden states (B, T, dim)
    cross_attentions: list = field(
        default_factory=list
    )  # decoder over encoder: (B, H, T, S) or None
    encoder_attentions: list = field(
        default_factory=list
    )  # encoder self-attention: (B, H, S, S) or None


class Residual(nn.Module, Variant):
    """Where the norm sits around a sublayer: `residual(x, norm, sublayer) -> (x', extra)`.

    needs_final_norm: whether a stack of these blocks needs a norm after its last block (pre-norm
    does; post-norm blocks already end in one). receives: what the build passes (the dropout;
    DeepNorm also the stack's role and depths)."""

    needs_final_norm: bool = False
    receives = ("dropout",)

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)

    def init_block(self, block: nn.Module) -> None:
        """Adjust a freshly initialised block's weights (DeepNorm scales some down); default: none."""


class PreNorm(Residual):
    """x + f(norm(x)): the GPT-2 / Llama placement, stable in deep stacks."""

    needs_final_norm = True

    def forward(self, x, norm, sublayer):
        y, extra = sublayer(norm(x))
        return x + self.drop(y), extra


class PostNorm(Residual):
    """norm(x + f(x)): the original Transformer's placement."""

    def forward(self, x, norm, sublayer):
        y, extra = sublayer(x)
        return norm(x + self.drop(y)), extra


def deepnorm_constants(role: str, layers: int, encoder_layers: int = 0) -> tuple[float, float]:
    """(alpha, beta) of DeepNet (https://arxiv.org/abs/2203.00555, table / figure 2) for a stack.

    role "decoder-only" / "encoder-only" (N = layers): alpha = (2N)^1/4, beta = (8N)^-1/4;
    in an encoder-decoder with N encoder and M decoder layers:
    "encoder": alpha = 0.81 (N^4 M)^1/16, beta = 0.87 (N^4 M)^-1/16;
    "decoder": alpha = (3M)^1/4, beta = (12M)^-1/4."""
    if role in ("decoder-only", "encoder-only"):
        return (2 * layers) ** 0.25, (8 * layers) ** -0.25
    if role == "encoder":
        nm = encoder_layers**4 * layers
        return 0.81 * nm ** (1 / 16), 0.87 * nm ** (-1 / 16)
    if role == "decoder":
        return (3 * layers) ** 0.25, (12 * layers) ** -0.25
    raise ValueError(
        f"unknown DeepNorm role {role!r}; valid: decoder-only, encoder-only, encoder, decoder"
    )


class DeepNorm(Residual):
    """norm(alpha * x + f(x)) with the sublayers' value, output and FFN weights initialised by
    Xavier-normal with gain beta (queries and keys with gain 1): DeepNet
    (https://arxiv.org/abs/2203.00555). Post-LN with an up-weighted residual; alpha = beta = 1 is
    exactly Post-LN. Unset alpha / beta follow the paper for this stack's role and depth."""

    receives = ("dropout", "role", "layers", "encoder_layers")

    def __init__(
        self,
        dropout: float = 0.0,
        role: str = "decoder-only",
        layers: int = 1,
        encoder_layers: int = 0,
        alpha: float | None = None,
        beta: float | None = None,
    ):
        super().__init__(dropout)
        paper_alpha, paper_beta = deepnorm_constants(role, layers, encoder_layers)
        self.alpha = paper_alpha if alpha is None else float(alpha)
        self.beta = paper_beta if beta is None else float(beta)

    def forward(self, x, norm, sublayer):
        y, extra = sublayer(x)
        return norm(self.alpha * x + self.drop(y)), extra

    @torch.no_grad()
    def init_block(self, block: nn.Module) -> None:
        for attn in block.attentions():
            for proj, gain in (
                (attn.q_proj, 1.0),
                (attn.k_proj, 1.0),
                (attn.v_proj, self.beta),
                (attn.out_proj, self.beta),
            ):
                nn.init.xavier_normal_(proj.weight, gain=gain)
        for proj in block.ffn.value_projections():  # what the FFN class declares (not its router)
            nn.init.xavier_normal_(proj.weight, gain=self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4g}, beta={self.beta:.4g}"


RESIDUALS = {"pre": PreNorm, "post": PostNorm, "deepnorm": DeepNorm}


@dataclass
class BlockOut:
    x: torch.Tensor
    weights: torch.Tensor | None  # self-attention weights (eager kernel) or None
    cross_weights: torch.Tensor | None
    aux: torch.Tensor | None  # the feed-forward's own loss (MoE) or None


class Block(nn.Module):
    """One Transformer layer, each sublayer wrapped by the residual placement
    (`residual(x, norm, sublayer)`):

        x -> [attn_norm, self-attention] -> [cross_norm, cross-attention]? -> [ffn_norm, ffn] -> x
    """

    def __init__(
        self,
        attn: Mixer,
        attn_norm: nn.Module,
        ffn: nn.Module,
        ffn_norm: nn.Module,
        residual: nn.Module,
        cross: Attention | None = None,
        cross_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.attn_norm, self.attn = attn_norm, attn
        self.cross_norm, self.cross = cross_norm, cross
        self.ffn_norm, self.ffn = ffn_norm, ffn
        self.residual = residual

    def attentions(self) -> list[Mixer]:
        """Self-attention, then cross-attention when there is one."""
        return [self.attn] if self.cross is None else [self.attn, self.cross]

    def residual_projections(self) -> list[nn.Linear]:
        """Every projection of this block that writes into the residual stream, as declared by
        its attention and feed-forward classes."""
        return [
            p for a in self.attentions() for p in a.residual_projections()
        ] + self.ffn.residual_projections()

    def forward(
        self,
        x,
        pos,
        mask: Mask,
        cache: LayerCache | None = None,
        start: Start = 0,
        memory_kv=None,
        memory_mask: Mask | None = None,
        cross_state=None,
    ) -> BlockOut:
        x, weights = self.residual(
            x, self.attn_norm, lambda h: self.attn(h, pos, mask, cache, start)
        )
        cross_weights = None
        if self.cross is not None:  # decoder of an encoder-decoder model
            x, cross_weights = self.residual(
                x,
                self.cross_norm,
                lambda h: self.cross(h, pos, memory_mask, kv=memory_kv, state=cross_state),
            )
        x, aux = self.residual(x, self.ffn_norm, self.ffn)
        return BlockOut(x, weights, cross_weights, aux)


def run_blocks(
    blocks,
    x,
    pos,
    mask: Mask,
    cache=None,
    start: Start = 0,
    memory_kvs=None,
    memory_mask: Mask | None = None,
    cross_states=None,
):
    """Apply a stack of blocks; collect attention weights and the sum of auxiliary losses.
    `cross_states`: per layer, the cross-attention kernel's decoding state (or None)."""
    attentions, cross_attentions, aux_total = [], [], None
    for i, block in enumerate(blocks):
        out = block(
            x,
            pos,
            mask,
            None if cache is None else cache[i],
            start,
            None if memory_kvs is None else memory_kvs[i],
            memory_mask,
            None if cross_states is None else cross_states[i],
        )
        x = out.x
        attentions.append(out.weights)
        cross_attentions.append(out.cross_weights)
        if out.aux is not None:
            aux_total = out.aux if aux_total is None else aux_total + out.aux
    return x, attentions, cross_attentions, aux_total


def chunked_lm_loss(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    chunk: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The mean cross entropy of `lm_loss` computed `chunk` positions at a time from the final
    hidden states (B, T, dim): each chunk's logits are made, reduced to a summed loss and dropped,
    then made again in backward (torch.utils.checkpoint), so the (B, T, vocab) logits never exist
    at once. For large vocabularies (a 50,304 vocabulary x 12,288 tokens of fp32 logits is 2.5 GB)."""
    from torch.utils.checkpoint import checkpoint

    def summed(h, t):  # (n, dim), (n,) -> summed loss of the chunk
        return F.cross_entropy(
            head(h).float(), t, ignore_index=-100, reduction="sum", label_smoothing=label_smoothing
        )

    h, t = hidden.flatten(0, 1), targets.flatten()  # (B*T, dim), (B*T,)
    total = sum(
        checkpoint(summed, h[i : i + chunk], t[i : i + chunk], use_reentrant=False)
        for i in range(0, h.shape[0], chunk)
    )
    return total / (t != -100).sum().clamp(min=1)


def lm_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    aux: torch.Tensor | None,
    label_smoothing: float = 0.0,
):
    """Mean next-token cross entropy over targets != -100, plus the layers' auxiliary losses."""
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )
    return loss if aux is None else loss + aux


class DecoderStack(nn.Module):
    """What the model families share of the decoding protocol (decode.Decodable: `needs_source`,
    `start_state`, `step`): one decoding cache per decoder layer, each made by the layer's mixer
    for the model's attention pattern. A subclass holds `blocks` (the decoder) and `pattern`."""

    blocks: nn.ModuleList
    pattern: nn.Module

    def new_cache(self, batch: int, max_len: int) -> list[LayerCache]:
        """One decoding cache per layer (a preallocated KV cache, or a retention layer's state),
        for `batch` sequences of up to `max_len` tokens."""
        p = next(self.parameters())
        return [
            block.attn.new_cache(self.pattern, batch, max_len, p.dtype, p.device)
            for block in self.blocks
        ]


class Spine(nn.Module):
    """The spine's tail, written once for every model class: the first block's input (B, T, dim)
    -> blocks -> final norm -> head (-> loss). `Model.forward`, `EncoderDecoder.decode_embedded`
    and fast decoding (fastdecode.py) all end here; a subclass holds `cfg`, `pos`, `blocks`,
    `final_norm` and `lm_head`, and embeds its own tokens (`embed`)."""

    def tail(
        self,
        x: torch.Tensor,
        mask: Mask,
        cache: list[LayerCache] | None = None,
        start: Start = 0,
        *,
        targets: torch.Tensor | None = None,
        last_only: bool = False,
        memory_kvs=None,
        memory_mask: Mask | None = None,
        cross_states=None,
    ) -> Output:
        """Run the blocks on `x` (B, T, dim) under `mask` (the cache and `start` as the blocks take
        them; `memory_kvs`, `memory_mask` and `cross_states` for cross-attention), then the final
        norm and the head; the loss when `targets` are given (`model.loss_chunk`: from the hidden
        states, chunk by chunk, without whole logits). `last_only`: the last position only."""
        x, attentions, cross, aux = run_blocks(
            self.blocks, x, self.pos, mask, cache, start, memory_kvs, memory_mask, cross_states
        )
        x = self.final_norm(x)
        if last_only:
            x = x[:, -1:]  # (B, 1, dim): decoding needs only the next-token distribution
        cross = (
            cross if memory_kvs is not None else []
        )  # cross-attention weights only where there is some
        if targets is not None and self.cfg.loss_chunk > 0:  # the loss only: no whole logits tensor
            loss = chunked_lm_loss(
                x, self.lm_head, targets, self.cfg.loss_chunk, self.cfg.label_smoothing
            )
            return Output(None, loss if aux is None else loss + aux, aux, attentions, x, cross)
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None if targets is None else lm_loss(logits, targets, aux, self.cfg.label_smoothing)
        return Output(logits, loss, aux, attentions, x, cross)


class Model(Spine, DecoderStack):
    """Decoder-only (causal LM) or encoder-only (bidirectional) Transformer."""

    needs_source = False  # decoders: no source sequence (see EncoderDecoder)
    layer_stacks = ("blocks",)  # warmstart.py: a shallower copy takes spread layers

    def __init__(
        self,
        cfg,
        tok_emb: nn.Embedding,
        pos: nn.Module,
        blocks: list[Block],
        final_norm: nn.Module,
        lm_head: nn.Module,
        pattern: nn.Module | None = None,
        type_emb: nn.Embedding | None = None,
        embed_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.causal = cfg.arch == "decoder"
        self.tok_emb, self.pos = tok_emb, pos
        self.type_emb = type_emb  # token-type (segment) embeddings, BERT; None for most models
        self.embed_norm = embed_norm if embed_norm is not None else nn.Identity()
        self.pattern = pattern if pattern is not None else Dense()  # which keys each query sees
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm, self.lm_head = final_norm, lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: list[LayerCache] | None = None,
        start: int = 0,
        padding_mask: torch.Tensor | None = None,
        last_only: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> Output:
        mask = self.pattern.mask(self.causal, start, padding_mask)
        x = self.embed(input_ids, start, token_type_ids)  # (B, T, dim)
        return self.tail(x, mask, cache, start, targets=targets, last_only=last_only)

    def embed(
        self, input_ids: torch.Tensor, start: Start = 0, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token ids (B, T) placed at `start` -> the first block's input (B, T, dim)."""
        x = self.pos.embed(self.tok_emb(input_ids), start)  # (B, T, dim)
        if self.type_emb is not None:  # segment A / B (type 0 when not given)
            x = x + self.type_emb(
                token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            )
        return self.drop(self.embed_norm(x))

    # ------------------------------------------------------------ decoding protocol (new_cache: DecoderStack)
    def new_memory(self, length: int) -> list:
        """Transformer-XL segment memories, one per layer, holding `length` tokens: pass them as
        `cache=` to consecutive segments (training and evaluation alike); start stays 0."""
        if self.pos.absolute:
            raise ValueError(
                f"segment memory places positions relative to the memory; {type(self.pos).__name__} "
                "positions are absolute (use model.pos=rope, xpos, alibi or none)"
            )
        return [block.attn.new_memory(length) for block in self.blocks]

    def constant_state(self) -> bool:
        """Whether decoding keeps the same memory however long the generation (sinks, retention)."""
        return all(block.attn.constant_state(self.pattern) for block in self.blocks)

    def start_state(self, batch: int, max_len: int, src: torch.Tensor | None = None) -> DecodeState:
        """A fresh decoding state (a decoder-only model has no source; `src` must be None)."""
        if src is not None:
            raise ValueError("a decoder-only model takes no source sequence (src)")
        return DecodeState(self.new_cache(batch, max_len))

    def step(self, tokens: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        """Feed `tokens` (B, T) at position state.pos; return next-token logits (B, vocab)."""
        out = self(tokens, cache=state.cache, start=state.pos, last_only=True)
        state.pos += tokens.shape[1]
        return out.logits[:, -1], state

    # ------------------------------------------------------------ accounting
    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            n -= sum(p.numel() for p in self.pos.embedding_weights())
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B."""
        c = self.cfg
        n = self.num_params(non_embedding=True)  # an untied head is already counted in it
        if self.lm_head.weight is self.tok_emb.weight:
            n += self.lm_head.weight.numel()  # the tied head is a matmul all the same
        return 6 * n + 12 * c.layers * c.heads * (c.dim // c.heads) * seq_len


class EncoderDecoder(Spine, DecoderStack):
    """Encoder-decoder Transformer (Vaswani et al. 2017):

    src ids -> src_emb -> enc_pos.embed -> encoder Blocks (bidirectional) -> enc_norm = memory
    tgt ids -> tok_emb -> pos.embed -> decoder Blocks (causal self-attn, cross-attn on memory)
            -> final_norm -> lm_head
    """

    needs_source = True  # decoding starts from an encoded source (`start_state(..., src)`)
    layer_stacks = ("encoder", "blocks")  # warmstart.py: a shallower copy takes spread layers

    def __init__(
        self,
        cfg,
        src_emb: nn.Embedding,
        tok_emb: nn.Embedding,
        enc_pos: nn.Module,
        pos: nn.Module,
        encoder: list[Block],
        enc_norm: nn.Module,
        decoder: list[Block],
        final_norm: nn.Module,
        lm_head: nn.Module,
        pattern: nn.Module | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.src_emb, self.tok_emb = src_emb, tok_emb
        self.enc_pos, self.pos = enc_pos, pos
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder, self.enc_norm = nn.ModuleList(encoder), enc_norm
        self.blocks = nn.ModuleList(decoder)
        self.final_norm, self.lm_head = final_norm, lm_head
        self.pattern = (
            pattern if pattern is not None else Dense()
        )  # self-attention of encoder and decoder

    def _key_mask(self, ids: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor | None:
        if given is not None or self.cfg.pad_id is None:
            return given
        mask = ids != self.cfg.pad_id  # (B, S) True for real tokens
        return None if bool(mask.all()) else mask

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None):
        """(memory (B, S, dim), src_mask (B, S) or None): the encoder's output for `src_ids`."""
        memory, src_mask, _ = self.encode_with_attention(src_ids, src_mask)
        return memory, src_mask

    def encode_with_attention(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None):
        """`encode`, plus the encoder's per-layer self-attention weights ((B, H, S, S), or None
        where the kernel gives none)."""
        src_mask = self._key_mask(src_ids, src_mask)
        x = self.drop(self.enc_pos.embed(self.src_emb(src_ids), 0))  # (B, S, dim)
        x, attentions, _, _ = run_blocks(
            self.encoder, x, self.enc_pos, self.pattern.mask(False, 0, src_mask)
        )
        return self.enc_norm(x), src_mask, attentions

    def embed(self, tgt_ids: torch.Tensor, start: Start = 0) -> torch.Tensor:
        """Target ids (B, T) placed at `start` -> the first decoder block's input (B, T, dim)."""
        return self.drop(self.pos.embed(self.tok_emb(tgt_ids), start))

    def memory_kvs(self, memory: torch.Tensor) -> list:
        """Each decoder layer's cross-attention keys and values of the memory, computed once."""
        return [block.cross.project_kv(memory) for block in self.blocks]

    def decode(
        self,
        tgt_ids,
        memory,
        src_mask,
        targets=None,
        cache=None,
        start: int = 0,
        memory_kvs=None,
        last_only: bool = False,
        cross_states=None,
    ) -> Output:
        """The decoder over `memory`. `cross_states` (decoding) are the per-layer states of a
        stateful cross-attention kernel; without them such a kernel starts from alpha_0, so a
        call that does not start at position 0 must pass them."""
        return self.decode_embedded(
            self.tok_emb(tgt_ids),
            memory,
            src_mask,
            targets,
            cache,
            start,
            memory_kvs,
            last_only,
            cross_states,
        )

    def decode_embedded(
        self,
        tok_x,
        memory,
        src_mask,
        targets=None,
        cache=None,
        start: int = 0,
        memory_kvs=None,
        last_only: bool = False,
        cross_states=None,
    ) -> Output:
        """The decoder from token embeddings `tok_x` (B, T, dim) instead of ids: `decode` is
        `decode_embedded(tok_emb(ids), ...)`. Two-pass scheduled sampling (objectives.py) feeds
        mixtures of embeddings through it; positions, dropout and blocks are the same."""
        x = self.drop(self.pos.embed(tok_x, start))  # (B, T, dim)
        kvs = memory_kvs if memory_kvs is not None else self.memory_kvs(memory)
        return self.tail(
            x,
            self.pattern.mask(True, start),
            cache,
            start,
            targets=targets,
            last_only=last_only,
            memory_kvs=kvs,
            memory_mask=Mask(causal=False, key_padding=src_mask),
            cross_states=cross_states,
        )

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        src_mask: torch.Tensor | None = None,
    ) -> Output:
        """Teacher forcing: `tgt_ids` are the decoder inputs (BOS + y[:-1]), `targets` are y."""
        memory, src_mask, encoder_attentions = self.encode_with_attention(src_ids, src_mask)
        out = self.decode(tgt_ids, memory, src_mask, targets)
        out.encoder_attentions = encoder_attentions
        return out

    # ------------------------------------------------------------ decoding protocol (new_cache: DecoderStack)
    def start_state(
        self,
        batch: int,
        max_len: int,
        src: torch.Tensor | None = None,
        src_mask: torch.Tensor | None = None,
    ) -> DecodeState:
        if src is None:
            raise ValueError("an encoder-decoder model needs the source sequence (src) to decode")
        if src.shape[0] != batch:
            raise ValueError(f"src has {src.shape[0]} rows, the decoding batch has {batch}")
        memory, src_mask = self.encode(src, src_mask)
        state = DecodeState(self.new_cache(batch, max_len), memory=memory, memory_mask=src_mask)
        # held for every step, so laid out contiguous (B, Hkv, S, D) once: as the heads' transposed
        # view of the projection, each step's attention matmuls copied them again (G2P greedy)
        state.cross = [tuple(t.contiguous() for t in kv) for kv in self.memory_kvs(memory)]
        # each cross-attention kernel's own state (the previous alignment; None for plain kernels)
        state.align = [
            block.cross.kernel.start_state(batch, memory.shape[1], memory.device)
            for block in self.blocks
        ]
        return state

    def step(self, tokens: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        out = self.decode(
            tokens,
            state.memory,
            state.memory_mask,
            cache=state.cache,
            start=state.pos,
            memory_kvs=state.cross,
            last_only=True,
            cross_states=state.align,
        )
        state.pos += tokens.shape[1]
        state.last = out  # cross-attention weights of this step, for copy heads and heatmaps
        return out.logits[:, -1], state

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(
                e.weight.numel()
                for e in {id(self.src_emb): self.src_emb, id(self.tok_emb): self.tok_emb}.values()
            )
        return n


def init_weights(model: nn.Module, std: float) -> None:
    """Weight init in one place: N(0, std) for linear and embedding weights, zero biases, and
    the projections that write into the residual stream (each block's `residual_projections()`,
    as its attention and FFN classes declare them) with std / sqrt(2 * layers) (GPT-2)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    depth_std = std / math.sqrt(2 * len(model.blocks))  # (decoder) layers
    scaled = {
        id(proj.weight)
        for block in model.modules()
        if isinstance(block, Block)
        for proj in block.residual_projections()
    }
    for p in model.parameters():  # in parameter order, so the random draws come in a fixed order
        if id(p) in scaled:
            nn.init.normal_(p, mean=0.0, std=depth_std)
