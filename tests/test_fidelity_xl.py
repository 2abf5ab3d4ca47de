"""Transformer-XL's relative positions (`model.pos=xl`) against the reference PyTorch code.

The reference is kimiyoung/transformer-xl, pytorch/mem_transformer.py: `RelPartialLearnableMultiHeadAttn`
inside `RelPartialLearnableDecoderLayer`, run by `MemTransformerLM._forward` with segment memory.
It is transcribed below in this file's own words, from the paper's equations (Dai et al. 2019,
section 3.3 and appendix B) and the reference's code: the layout (time, batch, ...), one qkv
projection, R over the distances klen - 1 .. 0, the relative shift by padding and reshaping, the
mask "key j > query i + mlen", memories of each layer's input cut to the last mem_len tokens.
Both sides get the same weights and the same token ids; logits, attention weights and gradients
must agree at 1e-5, in training with memory and in cached decoding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tfmr import Choice, ModelConfig, build_model
from tfmr.masks import Mask
from tfmr.positions import POSITIONS, RelativeScores, TransformerXL, Where

V, D_MODEL, H, D_HEAD, D_INNER, LAYERS = 37, 32, 4, 8, 48, 2


# ----------------------------------------------------------------------------- the reference, transcribed
def relative_shift(scores: torch.Tensor) -> torch.Tensor:
    """The reference's `_rel_shift` on (qlen, klen, B, H) scores whose column p holds distance
    klen - 1 - p: put a zero column in front, read the (qlen, klen + 1) block as (klen + 1, qlen),
    drop its first row and read the rest back as (qlen, klen). Row i then holds, in column j, the
    distance mlen + i - j (what is left of the diagonal band is garbage the mask hides)."""
    qlen, klen = scores.shape[:2]
    zeros = scores.new_zeros(qlen, 1, *scores.shape[2:])
    padded = torch.cat([zeros, scores], dim=1)  # (qlen, klen + 1, B, H)
    padded = padded.view(klen + 1, qlen, *scores.shape[2:])
    return padded[1:].reshape(qlen, klen, *scores.shape[2:])


def reference_sinusoids(pos_seq: torch.Tensor, d_model: int) -> torch.Tensor:
    """PositionalEmbedding: inv_freq = 1 / 10000^(2i / d_model); [sin(pos * f), cos(pos * f)]."""
    inv_freq = 1 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
    angles = torch.outer(pos_seq, inv_freq)  # (klen, d_model / 2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (klen, d_model)


class ReferenceRelAttention(nn.Module):
    """RelPartialLearnableMultiHeadAttn, forward(w, r, u, v, mask, mems) on (time, batch, dim)."""

    def __init__(self, pre_lnorm: bool = False):
        super().__init__()
        self.pre_lnorm = pre_lnorm
        self.qkv_net = nn.Linear(D_MODEL, 3 * H * D_HEAD, bias=False)
        self.r_net = nn.Linear(D_MODEL, H * D_HEAD, bias=False)
        self.o_net = nn.Linear(H * D_HEAD, D_MODEL, bias=False)
        self.layer_norm = nn.LayerNorm(D_MODEL)
        self.last_probs = None

    def forward(self, w, r, u, v, mask, mems=None):
        qlen, bsz = w.shape[:2]
        both = w if mems is None else torch.cat([mems, w], 0)  # (klen, B, dim): memory first
        heads = self.qkv_net(self.layer_norm(both) if self.pre_lnorm else both)
        q, k, val = heads.chunk(3, dim=-1)
        q = q[-qlen:].view(qlen, bsz, H, D_HEAD)  # queries of the segment only
        klen = k.shape[0]
        k, val = k.view(klen, bsz, H, D_HEAD), val.view(klen, bsz, H, D_HEAD)
        r_k = self.r_net(r).view(r.shape[0], H, D_HEAD)  # (klen, H, D): W_{k,R} R
        ac = torch.einsum("ibhd,jbhd->ijbh", q + u, k)  # terms (a) + (c)
        bd = relative_shift(torch.einsum("ibhd,jhd->ijbh", q + v, r_k))  # terms (b) + (d)
        score = (ac + bd) / math.sqrt(D_HEAD)
        score = score.masked_fill(mask[:, :, None, None], float("-inf"))
        probs = F.softmax(score, dim=1)  # over keys
        self.last_probs = probs
        out = self.o_net(torch.einsum("ijbh,jbhd->ibhd", probs, val).reshape(qlen, bsz, H * D_HEAD))
        return w + out if self.pre_lnorm else self.layer_norm(w + out)


class ReferenceLayer(nn.Module):
    """RelPartialLearnableDecoderLayer: the attention above, then PositionwiseFF (ReLU)."""

    def __init__(self, pre_lnorm: bool = False):
        super().__init__()
        self.pre_lnorm = pre_lnorm
        self.dec_attn = ReferenceRelAttention(pre_lnorm)
        self.up, self.down = nn.Linear(D_MODEL, D_INNER), nn.Linear(D_INNER, D_MODEL)
        self.ff_norm = nn.LayerNorm(D_MODEL)

    def forward(self, w, r, u, v, mask, mems=None):
        h = self.dec_attn(w, r, u, v, mask, mems)
        if self.pre_lnorm:
            return h + self.down(F.relu(self.up(self.ff_norm(h))))
        return self.ff_norm(h + self.down(F.relu(self.up(h))))


class ReferenceLM(nn.Module):
    """MemTransformerLM with attn_type 0, one vocabulary cluster, no dropout: embeddings scaled by
    sqrt(d_model), u and v shared by every layer, memories of each layer's input."""

    def __init__(self, mem_len: int, clamp_len: int = -1):
        super().__init__()
        self.mem_len, self.clamp_len = mem_len, clamp_len
        self.emb = nn.Embedding(V, D_MODEL)
        self.layers = nn.ModuleList(ReferenceLayer() for _ in range(LAYERS))
        self.r_w_bias = nn.Parameter(torch.randn(H, D_HEAD) * 0.3)  # u
        self.r_r_bias = nn.Parameter(torch.randn(H, D_HEAD) * 0.3)  # v
        self.out = nn.Linear(D_MODEL, V)

    def forward(self, ids, mems=None):
        """ids (qlen, B) -> logits (qlen, B, V), the next memories (one per layer)."""
        qlen = ids.shape[0]
        mlen = 0 if mems is None else mems[0].shape[0]
        klen = mlen + qlen
        mask = torch.triu(
            torch.ones(qlen, klen, dtype=torch.bool), diagonal=1 + mlen
        )  # key j > query i + mlen
        pos_seq = torch.arange(klen - 1, -1, -1.0)
        if self.clamp_len > 0:
            pos_seq = pos_seq.clamp(max=self.clamp_len)
        r = reference_sinusoids(pos_seq, D_MODEL)
        h = self.emb(ids) * D_MODEL**0.5
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            h = layer(h, r, self.r_w_bias, self.r_r_bias, mask, None if mems is None else mems[i])
        new = None
        if mems is not None:
            with torch.no_grad():
                new = [
                    torch.cat([m, x], 0)[max(0, klen - self.mem_len) : klen].detach()
                    for m, x in zip(mems, inputs)
                ]
        return self.out(h), new

    def empty_mems(self, batch):
        return [torch.zeros(0, batch, D_MODEL) for _ in self.layers]


# ----------------------------------------------------------------------------- the same weights in tfmr
def _config(residual="post", kernel="eager", **pos):
    return ModelConfig(
        vocab_size=V,
        dim=D_MODEL,
        layers=LAYERS,
        heads=H,
        context=64,
        pos=Choice("xl", **pos),
        kernel=Choice(kernel),
        residual=Choice(residual),
        ffn=Choice("mlp", hidden=D_INNER, activation="relu"),
        head=Choice("linear", bias=True),
        tie_embeddings=False,
    )


@torch.no_grad()
def _load_attention(attn, ref: ReferenceRelAttention):
    q, k, v = ref.qkv_net.weight.chunk(3, dim=0)
    for proj, weight in (
        (attn.q_proj, q),
        (attn.k_proj, k),
        (attn.v_proj, v),
        (attn.out_proj, ref.o_net.weight),
    ):
        proj.weight.copy_(weight)
        proj.bias.zero_()  # the reference's projections have no bias
    attn.pos_part.weight.copy_(ref.r_net.weight)


@torch.no_grad()
def _load_layer(block, ref: ReferenceLayer):
    _load_attention(block.attn, ref.dec_attn)
    block.attn_norm.load_state_dict(ref.dec_attn.layer_norm.state_dict())
    block.ffn_norm.load_state_dict(ref.ff_norm.state_dict())
    block.ffn.w1.load_state_dict(ref.up.state_dict())
    block.ffn.w2.load_state_dict(ref.down.state_dict())


@torch.no_grad()
def tfmr_from_reference(ref: ReferenceLM, kernel="eager"):
    model = build_model(_config(kernel=kernel, clamp_len=max(ref.clamp_len, 0)))
    model.tok_emb.weight.copy_(
        ref.emb.weight * D_MODEL**0.5
    )  # the reference scales embeddings by sqrt(d)
    model.pos.u.copy_(ref.r_w_bias)
    model.pos.v.copy_(ref.r_r_bias)
    for block, layer in zip(model.blocks, ref.layers):
        _load_layer(block, layer)
    model.lm_head.load_state_dict(ref.out.state_dict())
    return model


def _pair(mem_len=6, clamp_len=-1, kernel="eager"):
    torch.manual_seed(0)
    ref = ReferenceLM(mem_len, clamp_len)
    return ref, tfmr_from_reference(ref, kernel)


def _ids(B=2, T=18, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_training_with_memory_equals_the_reference(kernel):
    """Three segments of 6 with a memory of 6 (train mode, no dropout): logits of every segment and
    the gradients of u, v, every W_{k,R} and the embeddings at 1e-5."""
    ref, model = _pair(kernel=kernel)
    ref.train(), model.train()
    ids = _ids()
    mems, cache = ref.empty_mems(2), model.new_memory(6)
    ref_loss = got_loss = 0
    for s in range(3):
        seg = ids[:, 6 * s : 6 * (s + 1)]
        want, mems = ref(seg.T, mems)
        got = model(seg, cache=cache).logits
        torch.testing.assert_close(got, want.transpose(0, 1), atol=1e-5, rtol=1e-5)
        ref_loss = ref_loss + want.pow(2).mean()
        got_loss = got_loss + got.pow(2).mean()
    ref_loss.backward(), got_loss.backward()
    pairs = [(model.pos.u, ref.r_w_bias), (model.pos.v, ref.r_r_bias)]
    pairs += [
        (b.attn.pos_part.weight, layer.dec_attn.r_net.weight)
        for b, layer in zip(model.blocks, ref.layers)
    ]
    for mine, theirs in pairs:
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        model.tok_emb.weight.grad * D_MODEL**0.5, ref.emb.weight.grad, atol=1e-5, rtol=1e-4
    )


def test_attention_weights_equal_the_references_with_memory():
    """The eager kernel's weights of the second segment (6 memory keys + 6 own) are the
    reference's softmax over (a) + (b) + (c) + (d), layer by layer."""
    ref, model = _pair()
    ids = _ids()
    mems, cache = ref.empty_mems(2), model.new_memory(6)
    with torch.no_grad():
        for s in range(2):
            _, mems = ref(ids[:, 6 * s : 6 * (s + 1)].T, mems)
            out = model(ids[:, 6 * s : 6 * (s + 1)], cache=cache)
    for weights, layer in zip(out.attentions, ref.layers):
        assert weights.shape == (2, H, 6, 12)
        torch.testing.assert_close(
            weights, layer.dec_attn.last_probs.permute(2, 3, 0, 1), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_cached_decoding_equals_the_reference(kernel):
    """tfmr's KV cache, a 5-token prompt then one token at a time, against the reference run two
    ways: one forward over the whole text, and token by token with a memory long enough to hold
    it all (how the reference evaluates). Every step's logits at 1e-5."""
    ref, model = _pair(mem_len=64, kernel=kernel)
    ref.eval(), model.eval()
    ids = _ids(T=14)
    with torch.no_grad():
        full, _ = ref(ids.T)
        mems, stepped = ref.empty_mems(2), []
        for t in range(14):
            logits, mems = ref(ids[:, t : t + 1].T, mems)
            stepped.append(logits[0])
        torch.testing.assert_close(torch.stack(stepped), full, atol=1e-5, rtol=1e-5)
        state = model.start_state(2, 14)
        logits, state = model.step(ids[:, :5], state)
        torch.testing.assert_close(logits, full[4], atol=1e-5, rtol=1e-5)
        for t in range(5, 14):
            logits, state = model.step(ids[:, t : t + 1], state)
            torch.testing.assert_close(logits, full[t], atol=1e-5, rtol=1e-5)


def test_clamp_len_equals_the_references():
    """Distances past clamp_len use R_{clamp_len} (the reference clamps pos_seq)."""
    ref, model = _pair(clamp_len=3)
    ids = _ids(T=12)
    with torch.no_grad():
        want, _ = ref(ids.T)
        torch.testing.assert_close(model(ids).logits, want.transpose(0, 1), atol=1e-5, rtol=1e-5)
        unclamped = build_model(_config())
        unclamped.load_state_dict(model.state_dict())
        assert not torch.allclose(unclamped(ids).logits, want.transpose(0, 1), atol=1e-3)


def test_a_pre_norm_layer_with_memory_equals_the_references():
    """pre_lnorm=True: the layer norm inside the attention is tfmr's attn_norm (memory of the
    layer's input, normalised with the segment). One block against one reference layer."""
    torch.manual_seed(0)
    ref = ReferenceLayer(pre_lnorm=True)
    u, v = torch.randn(H, D_HEAD), torch.randn(H, D_HEAD)
    model = build_model(_config(residual="pre"))
    block = model.blocks[0]
    _load_layer(block, ref)
    with torch.no_grad():
        model.pos.u.copy_(u), model.pos.v.copy_(v)
    g = torch.Generator().manual_seed(2)
    mem, seg = torch.randn(4, 2, D_MODEL, generator=g), torch.randn(5, 2, D_MODEL, generator=g)
    r = reference_sinusoids(torch.arange(8, -1, -1.0), D_MODEL)
    mask = torch.triu(torch.ones(5, 9, dtype=torch.bool), diagonal=1 + 4)
    with torch.no_grad():
        want = ref(seg, r, u, v, mask, mem)
        cache = model.new_memory(4)[0]
        block(mem.transpose(0, 1), model.pos, model.pattern.mask(True), cache)  # fills the memory
        got = block(seg.transpose(0, 1), model.pos, model.pattern.mask(True), cache).x
    torch.testing.assert_close(got, want.transpose(0, 1), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the seam
def _scores(B=2, Tq=3, Tk=9, seed=3):
    torch.manual_seed(seed)
    pos = TransformerXL(D_MODEL, H, D_HEAD)
    with torch.no_grad():
        pos.u.normal_(), pos.v.normal_()
    part = TransformerXL.layer_part(_ctx())
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, H, Tq, D_HEAD, generator=g), torch.randn(B, H, Tk, D_HEAD, generator=g)
    return pos, part, q, k


def _ctx():
    from tfmr.builder import context

    return context(_config())


def test_the_terms_follow_the_masks_positions():
    """One description, three placements: an offset query block of a KV cache, the per-row
    positions of fast decoding, and `at` on explicit positions all give the terms of the
    distance q_pos - k_pos; written out for one entry: u.k_j + (q_i + v).W R_{i-j}, / sqrt(D)."""
    from tfmr.fastdecode import StaticMask

    pos, part, q, k = _scores()
    bias = pos.score(q, k, 6, part)
    assert isinstance(bias, RelativeScores)
    dense = bias.dense(Mask(causal=True, q_start=6), 3, 9, "cpu", torch.float32)  # (B, H, 3, 9)
    i, j, b, h = 1, 2, 1, 3  # query at 7, key at 2: distance 5
    R = reference_sinusoids(torch.tensor([5.0]), D_MODEL)
    rk = part(R).view(H, D_HEAD)[h]
    want = (pos.u[h] @ k[b, h, j] + (q[b, h, i] + pos.v[h]) @ rk) / math.sqrt(D_HEAD)
    torch.testing.assert_close(dense[b, h, i, j], want.detach(), atol=1e-5, rtol=1e-5)
    q_pos, k_pos = torch.arange(6, 9)[:, None], torch.arange(9)[None, :]
    visible = (k_pos <= q_pos).expand(
        2, H, 3, 9
    )  # a causal mask shows only these: dense spans 0 .. 8
    torch.testing.assert_close(bias.at(q_pos, k_pos)[visible], dense[visible], atol=1e-6, rtol=1e-6)
    rows = StaticMask(
        torch.ones(2, 1, 3, 9, dtype=torch.bool).tril(6),
        torch.arange(6, 9).repeat(2, 1),
        torch.arange(9).repeat(2, 1),
    )
    by_row = bias.dense(rows, 3, 9, "cpu", torch.float32)
    torch.testing.assert_close(by_row[visible], dense[visible], atol=1e-6, rtol=1e-6)


def test_the_scheme_keeps_its_parts_where_the_paper_does():
    """u and v once per model (the reference's default, shared by the layers), W_{k,R} once per
    self-attention layer, none in cross-attention; nothing rotates, nothing is added to x."""
    model = build_model(_config())
    parts = [b.attn.pos_part for b in model.blocks]
    assert all(isinstance(p, nn.Linear) and p.weight.shape == (H * D_HEAD, D_MODEL) for p in parts)
    assert len({id(p) for p in parts}) == LAYERS
    assert model.pos.u.shape == model.pos.v.shape == (H, D_HEAD)
    ed = build_model(
        ModelConfig(
            arch="encoder-decoder", vocab_size=V, dim=D_MODEL, layers=1, heads=H, pos=Choice("xl")
        )
    )
    assert ed.blocks[0].attn.pos_part is not None and ed.encoder[0].attn.pos_part is not None
    assert ed.blocks[0].cross.pos_part is None
    rope = build_model(
        ModelConfig(vocab_size=V, dim=D_MODEL, layers=1, heads=H, pos=Choice("rope"))
    )
    assert rope.blocks[0].attn.pos_part is None
    x = torch.randn(2, 5, D_MODEL)
    q, k = torch.randn(2, H, 5, D_HEAD), torch.randn(2, H, 5, D_HEAD)
    assert torch.equal(model.pos.embed(x, 3), x)
    assert all(torch.equal(a, b) for a, b in zip(model.pos.rotate(q, k, 3), (q, k)))
    assert model.pos.bias(5, 5, 0) is None  # the terms need q and k: the score hook gives them
    with pytest.raises(ValueError, match="W_"):
        model.pos.score(q, k, 0, None)


def test_fast_decoding_equals_cached_decoding():
    """FastDecoder (static cache, left padding, per-row positions) gives decode.py's tokens."""
    from tfmr import decode
    from tfmr.fastdecode import FastDecoder

    torch.manual_seed(0)
    model = build_model(_config(kernel="sdpa")).eval()
    with torch.no_grad():
        model.pos.u.normal_(), model.pos.v.normal_()
    prompts = [_ids(B=1, T=4, seed=5), _ids(B=1, T=7, seed=6)]
    want = [decode.greedy(model, p, 8) for p in prompts]
    fast = FastDecoder(model, batch=2, max_len=16)
    padded = torch.zeros(2, 7, dtype=torch.long)
    padded[0, 3:], padded[1] = prompts[0][0], prompts[1][0]
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[0, :3] = False
    got = fast.generate(padded, 8, attention_mask=keep)
    assert torch.equal(got[0, 3:], want[0][0]) and torch.equal(got[1], want[1][0])


def test_sdpa_equals_eager_forward_and_gradients():
    """The terms reach SDPA as a float mask: its output and gradients equal the eager kernel's."""
    torch.manual_seed(0)
    eager = build_model(_config(kernel="eager"))
    sdpa = build_model(_config(kernel="sdpa"))
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        for m in (eager, sdpa):
            m.pos.u.fill_(0.3), m.pos.v.fill_(-0.2)
    ids = _ids(T=10)
    a, b = eager(ids, ids).loss, sdpa(ids, ids).loss
    a.backward(), b.backward()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), sdpa.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_the_kind_is_registered_and_refuses_bad_options():
    from tfmr.config import ConfigError

    assert POSITIONS["xl"] is TransformerXL
    with pytest.raises(ConfigError, match="clamp_len"):
        build_model(_config(clamp_len=-2))
    with pytest.raises(ConfigError, match="even dim"):
        build_model(ModelConfig(vocab_size=V, dim=15, heads=3, pos=Choice("xl")))
    where = Where(torch.arange(4).repeat(2, 1), torch.arange(4))
    assert TransformerXL(D_MODEL, H, D_HEAD).embed(torch.ones(2, 4, D_MODEL), where).shape == (
        2,
        4,
        D_MODEL,
    )


def test_the_long_context_experiment_runs_with_the_papers_positions(tmp_path):
    """`tfmr experiment long-context --set model.pos=xl` (what docs/attention.md offers for its
    Transformer-XL row) trains and scores every row with the paper's positions, at tiny size."""
    import argparse
    import json

    from tfmr.experiments import EXPERIMENTS

    tiny = [
        "--set",
        "model.dim=16",
        "--set",
        "model.layers=1",
        "--set",
        "model.heads=2",
        "--set",
        "train.steps=2",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.warmup=1",
        "--set",
        "train.eval_every=2",
        "--set",
        "train.eval_iters=1",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.threads=1",
    ]
    parser = argparse.ArgumentParser()
    EXPERIMENTS["long-context"].add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path),
            *tiny,
            "--set",
            "model.context=8",
            "--set",
            "model.pos=xl",
            "--factor",
            "2",
            "--windows",
            "1",
            "--sinks",
            "2",
            "--segments",
            "2",
        ]
    )
    assert EXPERIMENTS["long-context"].main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert list(rows) == ["full", "sliding", "sinks", "xl", "retention"]
    assert all(
        len(r["per_position"]) == 16 and all(math.isfinite(v) for v in r["per_position"])
        for r in rows.values()
    )
    assert '"xl"' in next(tmp_path.rglob("config.json")).read_text()
