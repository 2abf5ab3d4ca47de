"""`tfmr explore` on the other model kinds: Hugging Face folders (GPT-2 and Llama, written by
transformers' save_pretrained with a byte-level BPE trained here; transformers is the outside
reference for tokens, next-token probabilities, attention, positions and greedy text), retention
and hybrid retention/attention stacks (retention layers have no attention map: the page shows the
layer's decay, checked against RetNet's formula), and attention sinks (stepping goes through the
sink cache as decode does, which differs from one full forward once the text is longer than
sinks + window). The page itself in headless chromium for an HF folder and a hybrid model
(skipped without Debian's chromium and chromium-driver, as in test_explore.py).

The tfmr models here are random and untrained (explore shows any checkpoint; the numbers are
the point, not their quality): built with build_model, saved with checkpoint.save."""

from __future__ import annotations

import shutil
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import test_explore  # noqa: E402
from test_explore import Page, Served, type_prompt  # noqa: E402
from test_hf_folder import hf_model, train_hf_tokenizer  # noqa: E402

from tfmr import Choice, ModelConfig, build_model, checkpoint, decode, viz  # noqa: E402
from tfmr.cli import main  # noqa: E402
from tfmr.config import to_dict  # noqa: E402
from tfmr.explore.session import export_json, open_checkpoint  # noqa: E402
from tfmr.tokenizers import CharTokenizer  # noqa: E402

PROMPT = "The café in"
TEXT = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
FAMILIES = ("gpt2", "llama", "bloom")
LONG = "to be, or not to be, that is"  # 28 characters: longer than sinks + window (2 + 4)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """gpt2, llama and bloom folders (save_pretrained), each with its transformers model and a server."""
    tokenizer = train_hf_tokenizer()
    out = {}
    for family in FAMILIES:
        model = hf_model(family, len(tokenizer))
        model.set_attn_implementation(
            "eager"
        )  # transformers' own attention weights, for the reference
        path = tmp_path_factory.mktemp(f"explore-{family}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        out[family] = types.SimpleNamespace(path=path, ref=model, s=Served(open_checkpoint(path)))
    yield types.SimpleNamespace(tokenizer=tokenizer, **out)
    for family in FAMILIES:
        out[family].s.close()


def _tfmr_checkpoint(root, name: str, **model) -> types.SimpleNamespace:
    tok = CharTokenizer.train(TEXT)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=32,
        layers=2,
        heads=2,
        context=32,
        kernel=Choice("sdpa"),
        **model,
    )
    torch.manual_seed(0)
    net = build_model(cfg)
    with (
        torch.no_grad()
    ):  # larger weights than the init's: peaked distributions, no near-ties in greedy choices
        for p in net.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    checkpoint.save(root / name, net, {"model": to_dict(cfg)}, tok)
    session = open_checkpoint(root / name)
    return types.SimpleNamespace(path=root / name, model=session.model, tok=tok, s=Served(session))


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """Retention everywhere, a hybrid (retention, attention) and attention sinks (2 sinks, window 4)."""
    root = tmp_path_factory.mktemp("explore-kinds")
    made = {
        "retention": _tfmr_checkpoint(
            root, "retention", mixer=Choice("retention"), pos=Choice("rope")
        ),
        "hybrid": _tfmr_checkpoint(
            root, "hybrid", mixer=Choice("retention"), mixer_pattern="retention,attention"
        ),
        "sinks": _tfmr_checkpoint(
            root, "sinks", pos=Choice("rope"), attention_pattern=Choice("sinks", sinks=2, window=4)
        ),
    }
    yield types.SimpleNamespace(**made)
    for m in made.values():
        m.s.close()


def ids(tok, text):
    return torch.tensor([tok.encode(text)])


# ---------------------------------------------------------------------------- Hugging Face folders
@pytest.mark.parametrize("family", FAMILIES)
def test_hf_folder_tokens_distribution_and_attention_are_transformers(hf, family):
    f = getattr(hf, family)
    status, info = f.s.post("tokens", text=PROMPT)
    assert status == 200
    want = hf.tokenizer(PROMPT).input_ids
    assert [t["id"] for t in info["tokens"]] == want
    assert info["tokens"][-1]["bytes"][1] == len(
        PROMPT.encode("utf-8")
    )  # spans cover the UTF-8 text
    assert (
        f.s.request("GET", "/api/info")[1]["source"] == f"Hugging Face folder (model_type {family})"
    )
    generated = [5, 17]
    with torch.no_grad():
        ref = f.ref(torch.tensor([want + generated]), output_attentions=True)
    probs = torch.softmax(ref.logits[0, -1].float() / 0.7, -1)
    d = f.s.post("distribution", text=PROMPT, generated=generated, temperature=0.7)[1]
    assert [t["id"] for t in d["tokens"]] == torch.argsort(probs, descending=True, stable=True)[
        :30
    ].tolist()
    for t in d["tokens"]:
        assert t["before"] == pytest.approx(float(probs[t["id"]]), abs=1e-5)
    for layer in range(2):
        a = f.s.post("attention", text=PROMPT, generated=generated, layer=layer)[1]
        torch.testing.assert_close(
            torch.tensor(a["weights"]), ref.attentions[layer][0], atol=1e-4, rtol=0
        )
    # stepping at temperature 0 is transformers' greedy generate
    with torch.no_grad():
        greedy = f.ref.generate(
            torch.tensor([want]),
            max_new_tokens=3,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(want) :].tolist()
    generated = []
    for _ in range(3):
        generated = f.s.post("step", text=PROMPT, generated=generated, temperature=0)[1][
            "generated"
        ]
    assert generated == greedy


def test_hf_folder_positions_are_learned_for_gpt2_rope_for_llama_alibi_for_bloom(hf):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    gpt2 = hf.gpt2.s.post("positions")[1]["parts"][0]
    assert gpt2["name"] == "Learned" and "rotation" not in gpt2
    T = len(gpt2["embedding"])
    torch.testing.assert_close(
        torch.tensor(gpt2["embedding"]),
        hf.gpt2.ref.transformer.wpe.weight[:T].detach(),
        atol=1e-4,
        rtol=0,
    )
    llama = hf.llama.s.post("positions")[1]["parts"][0]
    assert llama["name"] == "Rope" and "embedding" not in llama
    cfg = hf.llama.ref.config
    T, D = len(llama["rotation"]), cfg.hidden_size // cfg.num_attention_heads
    ones = torch.ones(1, 1, T, D)
    cos, sin = LlamaRotaryEmbedding(cfg)(ones, torch.arange(T)[None])
    q, _ = apply_rotary_pos_emb(ones, ones, cos, sin)
    torch.testing.assert_close(torch.tensor(llama["rotation"]), q[0, 0], atol=1e-4, rtol=0)
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    bloom = hf.bloom.s.post("positions")[1]["parts"][0]
    assert bloom["name"] == "Alibi" and "embedding" not in bloom and "rotation" not in bloom
    heads, T = hf.bloom.ref.config.n_head, len(bloom["bias"][0])
    # transformers' ALiBi is slope_h * key position; softmax sees it shifted by a constant per
    # query row, so compare each row relative to its diagonal
    ref = build_alibi_tensor(torch.ones(1, T), heads, torch.float32).view(heads, 1, T)  # (H, 1, T)
    for h in range(heads):
        for q in (3, T - 1):
            row = torch.tensor(bloom["bias"][h][q][: q + 1])
            torch.testing.assert_close(
                row - row[q], ref[h, 0, : q + 1] - ref[h, 0, q], atol=1e-4, rtol=0
            )


def test_hf_folder_with_a_tokenizer_the_tokenizers_library_runs(hf, tmp_path):
    from tokenizers import normalizers

    path = tmp_path / "lower"
    shutil.copytree(hf.gpt2.path, path)
    backend = hf.tokenizer.backend_tokenizer.__class__.from_str(
        hf.tokenizer.backend_tokenizer.to_str()
    )
    backend.normalizer = (
        normalizers.Lowercase()
    )  # not exact as tfmr's BPE: the tokenizers library runs it
    (path / "tokenizer.json").write_text(backend.to_str())
    session = open_checkpoint(path)
    assert session.info()["tokenizer"] == "hf"
    tokens = session.tokens("The CAFÉ")["tokens"]
    enc = backend.encode("The CAFÉ")
    assert [t["id"] for t in tokens] == enc.ids and [t["text"] for t in tokens] == enc.tokens
    assert all("bytes" not in t for t in tokens)
    assert session.distribution("The CAFÉ")["tokens"][0]["text"] == backend.id_to_token(
        session.distribution("The CAFÉ")["tokens"][0]["id"]
    )


def test_hf_encoder_folder_is_one_line(tmp_path, capsys):
    tokenizer = train_hf_tokenizer()
    hf_model("bert", len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    capsys.readouterr()  # transformers' progress bars
    assert main(["explore", "--checkpoint", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfmr: error: ") and "decoder-only" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- retention and hybrids
def gammas(heads: int) -> list[float]:
    return [1 - 2 ** (-5 - h) for h in range(heads)]  # RetNet section 2.2


def test_retention_layers_show_their_decay_and_decode_through_the_recurrent_state(kinds):
    m, text = kinds.retention, "to be or"
    a = m.s.post("attention", text=text, layer=1)[1]
    assert (
        a["weights"] is None
        and a["mixer"] == "retention"
        and a["mixers"] == ["retention", "retention"]
    )
    T = len(text)
    for h, g in enumerate(gammas(2)):
        want = [[g ** (n - k) if n >= k else 0.0 for k in range(T)] for n in range(T)]
        torch.testing.assert_close(
            torch.tensor(a["decay"][h]), torch.tensor(want), atol=1e-5, rtol=0
        )
    # the page's numbers come through the recurrent state (prefill, then one token a step); the
    # parallel form (one full forward) must agree
    generated = [3, 7, 1]
    with torch.no_grad():
        full = m.model(ids(m.tok, text + m.tok.decode(generated))).logits[0, -1]
    d = m.s.post("distribution", text=text, generated=generated)[1]
    for t in d["tokens"]:
        assert t["before"] == pytest.approx(float(torch.softmax(full, -1)[t["id"]]), abs=1e-5)
    stepped = []
    for _ in range(4):
        stepped = m.s.post("step", text=text, generated=stepped, temperature=0)[1]["generated"]
    assert stepped == decode.greedy(m.model, ids(m.tok, text), 4)[0, -4:].tolist()
    # beam search reorders the recurrent states: the best hypothesis' score is its summed
    # log-probability by the parallel form, over its length (length_penalty 1)
    b = m.s.post("beam", text=text, width=3, max_new_tokens=5)[1]
    best = b["n_best"][0]["ids"]
    seq = ids(m.tok, text + m.tok.decode(best))
    with torch.no_grad():
        logp = torch.log_softmax(m.model(seq).logits[0].float(), -1)
    P = len(text)
    total = sum(float(logp[P - 1 + i, tok]) for i, tok in enumerate(best))
    assert b["n_best"][0]["score"] == pytest.approx(total / len(best), abs=1e-4)
    assert (
        m.s.post("beam", text=text, width=1, max_new_tokens=5)[1]["n_best"][0]["ids"]
        == decode.greedy(m.model, ids(m.tok, text), 5)[0, -5:].tolist()
    )


def test_hybrid_attention_layers_keep_their_weights_and_the_export_marks_retention(kinds):
    m, text = kinds.hybrid, "not to be"
    info = m.s.request("GET", "/api/info")[1]
    assert info["mixers"] == ["retention", "attention"] and not info["constant_state"]
    retention = m.s.post("attention", text=text, layer=0)[1]
    assert retention["weights"] is None and len(retention["decay"]) == 2
    attention = m.s.post("attention", text=text, layer=1)[1]
    reference = viz.attention_weights(m.model, ids(m.tok, text))
    assert reference[0] is None and attention["mixer"] == "attention"
    torch.testing.assert_close(
        torch.tensor(attention["weights"]), reference[1][0], atol=1e-5, rtol=0
    )
    tensors, labels = m.s.session.export(text)
    assert sorted(tensors) == ["attention.1"] and labels["layers"] == {"attention": 2}
    status, data = m.s.request("GET", "/api/export?text=not%20to%20be&format=json")
    assert status == 200 and data["attention"][0] is None and len(data["attention"][1][0]) == 2
    assert export_json(tensors, labels) == export_json(*m.s.session.export(text))
    assert m.s.request("GET", "/api/export?text=not%20to%20be&format=safetensors")[0] == 200
    generated = []
    for _ in range(3):
        generated = m.s.post("step", text=text, generated=generated, temperature=0)[1]["generated"]
    assert generated == decode.greedy(m.model, ids(m.tok, text), 3)[0, -3:].tolist()


# ---------------------------------------------------------------------------- attention sinks
def test_sinks_step_through_the_sink_cache_as_decode_does(kinds):
    m = kinds.sinks
    info = m.s.request("GET", "/api/info")[1]
    assert info["constant_state"] and "sinks=2" in info["pattern"]
    prompt = ids(m.tok, LONG)
    stepped = []
    for _ in range(4):
        stepped = m.s.post("step", text=LONG, generated=stepped, temperature=0)[1]["generated"]
    assert stepped == decode.greedy(m.model, prompt, 4)[0, -4:].tolist()
    # past sinks + window, decoding (positions inside the cache) is not one full forward: the page
    # shows what decoding computes
    with torch.no_grad():
        full = torch.softmax(
            m.model(torch.cat([prompt, torch.tensor([stepped])], 1)).logits[0, -1], -1
        )
        state = m.model.start_state(1, 32)
        logits, state = m.model.step(prompt, state)
        for tok in stepped:
            logits, state = m.model.step(torch.tensor([[tok]]), state)
        stepwise = torch.softmax(logits[0].float(), -1)
    d = m.s.post("distribution", text=LONG, generated=stepped)[1]
    top = d["tokens"][0]["id"]
    assert d["tokens"][0]["before"] == pytest.approx(float(stepwise[top]), abs=1e-5)
    assert float((full - stepwise).abs().max()) > 1e-3
    # the attention view is the full forward under the sinks mask: query t sees 0, 1 and t-3 .. t
    w = torch.tensor(m.s.post("attention", text=LONG, layer=0)[1]["weights"])  # (H, T, T)
    T = w.shape[-1]
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        allowed[t, : min(t + 1, 2)] = True
        allowed[t, max(0, t - 3) : t + 1] = True
    assert bool((w[:, ~allowed] == 0).all()) and bool((w[:, allowed] > 0).all())
    b = m.s.post("beam", text=LONG, width=1, max_new_tokens=4)[1]
    assert b["n_best"][0]["ids"] == decode.greedy(m.model, prompt, 4)[0, -4:].tolist()
    assert len(m.s.post("beam", text=LONG, width=3, max_new_tokens=4)[1]["n_best"]) == 3


# ---------------------------------------------------------------------------- the page
browser = test_explore.browser  # the same module-scoped headless chromium fixture


def test_the_hf_folder_page(browser, hf):
    page = Page(browser, hf.gpt2.s)
    assert "Hugging Face folder (model_type gpt2)" in page.find("#info").text
    type_prompt(page, PROMPT)
    assert [int(t.get_attribute("data-id")) for t in page.all("#tokens .token")] == hf.tokenizer(
        PROMPT
    ).input_ids
    with torch.no_grad():
        logits = hf.gpt2.ref(torch.tensor([hf.tokenizer(PROMPT).input_ids])).logits[0, -1]
    assert page.bars()[0][0] == int(logits.argmax())
    assert page.find("#positions h3").text == "decoder: Learned" and page.all(
        "#positions canvas.pos-embedding"
    )
    page.shot("hf-gpt2")


def test_the_hybrid_page(browser, kinds):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    m = kinds.hybrid
    page = Page(browser, m.s)
    assert "mixers retention, attention" in page.find("#info").text
    type_prompt(page, "not to be")
    assert [o.text for o in page.all("#attn-layer option")] == ["0 (retention)", "1"]
    note = page.find("#attn-note")
    assert (
        note.is_displayed()
        and "no attention map" in note.text
        and len(page.all("#heads .head")) == 2
    )
    page.shot("hybrid-retention-layer")
    page.act(lambda: Select(page.find("#attn-layer")).select_by_value("1"))
    assert not page.find("#attn-note").is_displayed() and len(page.all("#heads .head")) == 2
    page.act(lambda: page.find("#temperature").send_keys(Keys.HOME))
    page.act(lambda: page.find("#step").click())
    page.act(lambda: page.find("#step").click())
    stepped = [int(t.get_attribute("data-id")) for t in page.all("#tokens .token.generated")]
    assert stepped == decode.greedy(m.model, ids(m.tok, "not to be"), 2)[0, -2:].tolist()
    page.act(lambda: page.find("#beam-run").click())
    assert len(page.all("#beam-best li")) == 3 and page.message() == ""
    page.shot("hybrid")
