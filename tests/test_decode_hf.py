"""Outside reference: tfmr's decoders give Hugging Face `generate`'s tokens, token for token.

Random tiny Hugging Face models are loaded into tfmr with `from_hf`; greedy and beam search
(beam 4, several length penalties, every early-stopping mode, with and without an EOS that really
occurs) must return the same ids, and beam search the same n-best scores. The logits processors
(top-k, top-p, min-p, temperature, repetition penalty, no-repeat-n-gram) must give the same
filtered logits as Hugging Face's on the same input.
"""

from __future__ import annotations

import itertools

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tfmr.decode import beam_search, filter_logits, greedy, no_repeat_ngram, repetition_penalty  # noqa: E402
from tfmr.interop import FAMILIES, from_hf  # noqa: E402

VOCAB, PAD = 97, 1


def _randomise_norms(model):
    with torch.no_grad():  # random norm affine so a mapping mistake there cannot hide
        for name, p in model.named_parameters():
            if "ln" in name or "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    return model


def _gpt2(seed):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    return _randomise_norms(transformers.GPT2LMHeadModel(cfg).eval())


def _llama(seed):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    with (
        torch.no_grad()
    ):  # HF's init (std 0.02) gives near-uniform logits, full of near ties: sharpen them
        model.lm_head.weight.normal_(0.0, 1.0)
    return _randomise_norms(model)


def _bloom(seed):
    torch.manual_seed(seed)
    cfg = transformers.BloomConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        n_layer=2,
        n_head=4,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    model = transformers.BloomForCausalLM(cfg).eval()
    with (
        torch.no_grad()
    ):  # sharpen HF's near-uniform initial logits (tied head: scale the embedding)
        model.transformer.word_embeddings.weight.normal_(0.0, 1.0)
    return _randomise_norms(model)


FAMILY_MAKERS = {
    "gpt2": _gpt2,
    "llama": _llama,
    "bloom": _bloom,
}  # families without from_hf are skipped


def _family(name):
    if name not in FAMILIES:
        pytest.skip(
            f"tfmr.interop.from_hf does not support {name!r} yet (FAMILIES: {sorted(FAMILIES)})"
        )
    return FAMILY_MAKERS[name]


def _prompts(seed, rows=2, length=5):
    return torch.randint(3, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def _frequent_token(ids: torch.Tensor, prompt_len: int) -> int:
    """A token the unconstrained decoder really produces: as EOS it ends some hypotheses early."""
    return int(torch.mode(ids[..., prompt_len:].flatten()).values)


def _hf_beams(hf, ids, **kw):
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        num_beams=4,
        pad_token_id=PAD,
        output_scores=True,
        return_dict_in_generate=True,
        num_return_sequences=3,
        **kw,
    )
    return out.sequences.view(ids.shape[0], 3, -1), out.sequences_scores.view(ids.shape[0], 3)


@pytest.mark.parametrize("family", list(FAMILY_MAKERS))
def test_greedy_matches_generate_with_eos_and_padding(family):
    hf = _family(family)(0)
    model = from_hf(hf)
    ids = _prompts(1, rows=3)
    free = greedy(model, ids, 16)
    ref_free = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=16,
        eos_token_id=None,
        pad_token_id=PAD,
    )
    assert torch.equal(free, ref_free)
    eos = int(free[1, 5 + 3])  # row 1 ends at its 4th new token; the other rows go on, then pad
    ref = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=16,
        eos_token_id=eos,
        pad_token_id=PAD,
    )
    ours = greedy(model, ids, 16, eos_id=eos, pad_id=PAD)
    assert torch.equal(ours, ref)
    assert (ours[1, 5 + 4 :] == PAD).all()


@pytest.mark.parametrize("family", list(FAMILY_MAKERS))
def test_beam_search_matches_generate_token_for_token(family):
    make = _family(family)
    for seed in range(2):
        hf = make(seed)
        model = from_hf(hf)
        ids = _prompts(seed)
        eos = _frequent_token(beam_search(model, ids, 4, 12, n_best=4).ids, 5)
        grid = [(1.0, False, None)] + list(
            itertools.product([1.0, 2.0, -0.5], [False, True, "never"], [eos])
        )
        if family != "gpt2" or seed:  # the full grid once; a sample of it elsewhere
            grid = [(1.0, False, None), (0.6, True, eos), (1.5, "never", eos), (-0.5, False, eos)]
        for lp, stop, e in grid:
            ref_ids, ref_scores = _hf_beams(
                hf, ids, max_new_tokens=12, length_penalty=lp, early_stopping=stop, eos_token_id=e
            )
            got = beam_search(
                model,
                ids,
                4,
                12,
                eos_id=e,
                length_penalty=lp,
                early_stopping=stop,
                n_best=3,
                pad_id=PAD,
            )
            where = f"seed {seed}, length_penalty {lp}, early_stopping {stop}, eos {e}"
            assert torch.equal(got.ids, ref_ids), where
            torch.testing.assert_close(got.scores, ref_scores, atol=1e-4, rtol=1e-5, msg=where)
    best = beam_search(
        model, ids, 4, 12, eos_id=e, length_penalty=lp, early_stopping=stop, pad_id=PAD
    )
    assert torch.equal(
        best, got.ids[:, 0, : 5 + int(got.lengths[:, 0].max())]
    )  # alone: cropped to its own length


def test_the_length_penalty_counts_generated_tokens_not_the_prompt():
    """transformers >= 4.36 divides by the generated length (EOS included), not prompt + generated."""
    hf = _gpt2(0)
    model = from_hf(hf)
    ids = _prompts(3, rows=1, length=7)
    got = beam_search(model, ids, 4, 6, length_penalty=1.0, n_best=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(got.ids[:, 0]).logits[0, :-1].float(), -1)
    new = got.ids[0, 0, 7:]
    total = logp[6:].gather(1, new[:, None]).sum()
    torch.testing.assert_close(got.scores[0, 0], total / len(new), atol=1e-5, rtol=1e-5)


def test_beam_search_with_repetition_processors_matches_generate():
    hf = _gpt2(1)
    model = from_hf(hf)
    ids = _prompts(4)
    ref_ids, ref_scores = _hf_beams(
        hf, ids, max_new_tokens=10, repetition_penalty=1.3, no_repeat_ngram_size=2
    )
    got = beam_search(model, ids, 4, 10, n_best=3, repetition=1.3, ngram=2)
    assert torch.equal(got.ids, ref_ids)
    torch.testing.assert_close(got.scores, ref_scores, atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------- processors
def _logits(seed, rows=6, vocab=500):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * 3.0


@pytest.mark.parametrize("top_k", [1, 5, 50, 499, 600])
def test_top_k_equals_hugging_face(top_k):
    logits = _logits(top_k)
    ref = transformers.TopKLogitsWarper(top_k)(None, logits.clone())
    assert torch.equal(filter_logits(logits, top_k=top_k), ref)


@pytest.mark.parametrize("top_p", [1e-6, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_top_p_equals_hugging_face(top_p):
    logits = _logits(int(top_p * 1000))
    ref = transformers.TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(filter_logits(logits, top_p=top_p), ref)


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.9, 1.0])
def test_min_p_equals_hugging_face(min_p):
    logits = _logits(int(min_p * 100) + 7)
    ref = transformers.MinPLogitsWarper(min_p)(None, logits.clone())
    assert torch.equal(filter_logits(logits, min_p=min_p), ref)


def test_composed_filters_equal_hugging_faces_processor_list():
    logits = _logits(11)
    chain = transformers.LogitsProcessorList(
        [
            transformers.TemperatureLogitsWarper(0.7),
            transformers.TopKLogitsWarper(40),
            transformers.TopPLogitsWarper(0.9),
            transformers.MinPLogitsWarper(0.1),
        ]
    )
    assert torch.equal(
        filter_logits(logits / 0.7, top_k=40, top_p=0.9, min_p=0.1), chain(None, logits.clone())
    )


@pytest.mark.parametrize("penalty", [0.8, 1.0, 1.3])
def test_repetition_penalty_equals_hugging_face(penalty):
    logits = _logits(5, vocab=50)
    seen = torch.randint(0, 50, (6, 30), generator=torch.Generator().manual_seed(6))
    ref = transformers.RepetitionPenaltyLogitsProcessor(penalty)(seen, logits.clone())
    assert torch.equal(repetition_penalty(logits, seen, penalty), ref)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_equals_hugging_face(n):
    logits = _logits(8, vocab=12)
    half = torch.randint(0, 12, (6, 13), generator=torch.Generator().manual_seed(9))
    seen = torch.cat(
        [half, half], dim=1
    )  # the last n-1 tokens occurred before: their successor is banned
    ref = transformers.NoRepeatNGramLogitsProcessor(n)(seen, logits.clone())
    got = no_repeat_ngram(logits, seen, n)
    assert torch.equal(got, ref)
    assert torch.isinf(got).any()  # something really was banned
