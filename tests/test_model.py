"""The spine: shapes, cached decoding equals the full forward, init, flops accounting."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_steps_match_full_forward

from tfmr import Choice, ConfigError, ModelConfig, build_model
from tfmr.kernels import KERNELS
from tfmr.positions import POSITIONS


def _cfg(**kw):
    base = dict(vocab_size=50, dim=32, layers=2, heads=4, context=24)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("pos", sorted(POSITIONS))
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("residual", ["pre", "post"])
def test_cached_decoding_equals_full_forward(pos, kernel, residual):
    torch.manual_seed(0)
    model = build_model(
        _cfg(pos=Choice(pos), kernel=Choice(kernel), residual=Choice(residual))
    ).eval()
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids).logits  # (B, T, V)
    state = model.start_state(2, 24)
    logits, state = model.step(ids[:, :5], state)  # prefill 5, then one token at a time
    torch.testing.assert_close(logits, full[:, 4], atol=1e-5, rtol=1e-5)
    for t in range(5, 12):
        logits, state = model.step(ids[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_causality_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    a = torch.randint(0, 50, (1, 10))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 1) % 50
    torch.testing.assert_close(model(a).logits[:, :6], model(b).logits[:, :6])
    assert not torch.allclose(model(a).logits[:, 6:], model(b).logits[:, 6:])


def test_encoder_only_sees_the_future():
    torch.manual_seed(0)
    model = build_model(_cfg(arch="encoder")).eval()
    a = torch.randint(0, 50, (1, 10))
    b = a.clone()
    b[0, -1] = (b[0, -1] + 1) % 50
    assert not torch.allclose(model(a).logits[:, 0], model(b).logits[:, 0])


def test_loss_matches_manual_cross_entropy():
    torch.manual_seed(0)
    model = build_model(_cfg())
    ids = torch.randint(0, 50, (2, 8))
    out = model(ids, ids)
    manual = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 50), ids.reshape(-1))
    torch.testing.assert_close(out.loss, manual)
    assert out.logits.shape == (2, 8, 50) and len(out.attentions) == 2


def test_tied_embeddings_share_one_matrix():
    model = build_model(_cfg())
    assert model.lm_head.weight is model.tok_emb.weight
    assert build_model(_cfg(tie_embeddings=False)).lm_head.weight is not None


def test_eager_kernel_returns_weights_sdpa_does_not():
    ids = torch.randint(0, 50, (1, 6))
    assert build_model(_cfg(kernel=Choice("eager")))(ids).attentions[0].shape == (1, 4, 6, 6)
    assert build_model(_cfg(kernel=Choice("sdpa")))(ids).attentions[0] is None


def test_flops_per_token_matches_nanogpt_formula():
    cfg = _cfg(pos=Choice("learned"))
    model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters()) - model.pos.wpe.weight.numel()
    assert model.flops_per_token(24) == 6 * n + 12 * 2 * 4 * 8 * 24


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = build_model(_cfg(dim=256, layers=8, heads=4))
    std_out = model.blocks[0].attn.out_proj.weight.std().item()
    std_q = model.blocks[0].attn.q_proj.weight.std().item()
    assert abs(std_q - 0.02) < 0.002
    assert abs(std_out - 0.02 / 4) < 0.001  # 1 / sqrt(2 * 8)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(heads=5), "divisible"),
        (dict(kv_heads=3), "multiple of model.kv_heads"),
        (dict(arch="rnn"), "valid: decoder, encoder"),
        (dict(pos=Choice("learned", base=3)), "valid options: (none)"),
        (dict(ffn=Choice("mlp", mul=4)), "valid options: mult, hidden, activation"),
        (dict(norm=Choice("batchnorm")), "valid kinds: layernorm, rmsnorm"),
    ],
)
def test_invalid_model_configs_name_the_valid_choices(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(_cfg(**bad))


def test_learned_positions_refuse_past_context():
    model = build_model(_cfg(pos=Choice("learned"), context=8))
    with pytest.raises(ValueError, match="learned positions cover 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long))


def _seq2seq(**kw):
    return build_model(_cfg(arch="encoder-decoder", pad_id=0, encoder_layers=3, **kw)).eval()


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_encoder_decoder_cached_decoding_equals_full_forward(kernel):
    torch.manual_seed(0)
    model = _seq2seq(kernel=Choice(kernel), pos=Choice("sinusoidal"))
    src = torch.tensor([[5, 6, 7, 8, 9], [4, 3, 2, 0, 0]])  # second row padded
    tgt = torch.randint(1, 50, (2, 7))
    assert_steps_match_full_forward(model, src, tgt, prefix=3, max_len=16)


def test_source_padding_does_not_change_real_outputs():
    torch.manual_seed(0)
    model = _seq2seq(kernel=Choice("eager"))
    src = torch.tensor([[4, 3, 2]])
    padded = torch.tensor([[4, 3, 2, 0, 0, 0]])
    tgt = torch.tensor([[1, 7, 8, 9]])
    a, b = model(src, tgt), model(padded, tgt)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    assert torch.all(b.cross_attentions[0][..., 3:] == 0)  # no attention on source padding
    memory_a, _ = model.encode(src)
    memory_b, _ = model.encode(padded)
    torch.testing.assert_close(memory_a, memory_b[:, :3], atol=1e-5, rtol=1e-5)


def test_encoder_decoder_refuses_to_decode_without_a_source():
    with pytest.raises(ValueError, match="needs the source sequence"):
        _seq2seq().start_state(1, 8)
    with pytest.raises(ConfigError, match="share_embeddings"):
        build_model(_cfg(arch="encoder-decoder", src_vocab_size=20))


# ------------------------------------------------------------------ the spine's tail, written once
def test_every_model_class_ends_in_the_one_spine_tail():
    from tfmr.model import EncoderDecoder, Model, Spine

    assert Model.tail is Spine.tail and EncoderDecoder.tail is Spine.tail
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    ids = torch.randint(0, 50, (2, 9))
    out = model.tail(model.embed(ids), model.pattern.mask(True), targets=ids)
    ref = model(ids, ids)
    assert (
        torch.equal(out.logits, ref.logits)
        and torch.equal(out.loss, ref.loss)
        and out.cross_attentions == []
    )


def test_the_encoder_decoder_takes_the_chunked_loss_through_the_tail():
    """model.loss_chunk acts in the tail, so an encoder-decoder gets it too: the same loss and
    gradients, and no whole (B, T, vocab) logits."""
    src, tgt = torch.randint(1, 40, (3, 7)), torch.randint(1, 50, (3, 6))
    targets = tgt.roll(-1, 1)
    targets[0, :2] = -100
    results = []
    for chunk in (0, 5):
        torch.manual_seed(0)
        model = build_model(
            _cfg(
                arch="encoder-decoder",
                src_vocab_size=40,
                share_embeddings=False,
                encoder_layers=2,
                loss_chunk=chunk,
                label_smoothing=0.1,
            )
        )
        out = model(src, tgt, targets)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_grads), (chunked, chunked_grads) = results
    assert (
        plain.logits is not None and chunked.logits is None and len(chunked.cross_attentions) == 2
    )
    torch.testing.assert_close(chunked.loss, plain.loss, atol=1e-6, rtol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-6, rtol=1e-6)
