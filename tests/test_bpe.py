"""Tests for the byte-level BPE tokenizer (tfmr/tokenizers/bpe.py) and its CLI (tfmr/cli/tokenizer.py).

Covers: the Wikipedia worked example, equality with tiktoken (built from our ranks) on a
generated 1 MB mixed corpus, the pure-Python vs fast path, round trips (hypothesis, including
lone surrogates), special tokens, save/load, tiktoken rank files, deterministic training, the
trainer's invariant (words stay segmented as the encoder would segment them) and the CLI.
Nothing is downloaded; the tinyshakespeare check runs only when the file is present.
Left out: timing (see `tfmr bench bpe`).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfmr.cli import tokenizer as tokenizer_cli
from tfmr.tokenizers import BPE
from tfmr.tokenizers import bpe as bpe_mod
from tfmr.tokenizers import load as load_any

try:
    import tiktoken
except ImportError:  # the parity tests need it; everything else runs without it
    tiktoken = None
needs_tiktoken = pytest.mark.skipif(tiktoken is None, reason="tiktoken is not installed")

SHAKESPEARE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
)  # ../shared beside the repo
HYPOTHESIS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------------- corpus
_WORDS = (
    "the of and to in is that it was for on are with as they be at one have this from or had "
    "by word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her "
    "long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find"
).split()
_CONTRACTIONS = ("don't", "it's", "we'll", "THEY'RE", "I've", "she'd", "You'LL", "o'clock", "isn't")
_LATIN = (
    "café",
    "naïve",
    "Größe",
    "Ålborg",
    "façade",
    "mañana",
    "Ελλάδα",
    "Москва",
    "नमस्ते",
    "مرحبا",
)
_HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 400)]
_EMOJI = ("😀", "👍🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "🎉", "🤖", "🔥🔥", "✨", "🙈")
_CODE = (
    "def {w}(x, y=None):",
    "    return x + {n} * y  # {w}",
    "\tif (a != b && c >= {n}) {{",
    "}} else {{",
    "for (let i = 0; i < {n}; i++) {{ {w}[i] = i ** 2; }}",
    "        self.{w} = {{'k': [{n}, 0x{n:X}]}}",
    "import {w}.{w} as _{w}",
    '    print(f"{{{w}!r}}: {n:.3f}")',
    "SELECT * FROM {w} WHERE id = {n};",
    "    #include <stdio.h>  /* {w} */",
    "x = lambda: {w}.get('{w}', -{n})",
)


def _english(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 18))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), rng.choice(_CONTRACTIONS))
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(_LATIN))
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice((".", "!", "?", ",", ";", ":", "..."))


def _chinese(rng: random.Random) -> str:
    return "".join(rng.choice(_HAN) for _ in range(rng.randint(4, 30))) + rng.choice("，。！？")


def _emoji(rng: random.Random) -> str:
    return " ".join(
        rng.choice(_EMOJI) + rng.choice(("", " " + rng.choice(_WORDS)))
        for _ in range(rng.randint(1, 6))
    )


def _code(rng: random.Random) -> str:
    return rng.choice(_CODE).format(w=rng.choice(_WORDS), n=rng.randint(0, 99999))


def _whitespace(rng: random.Random) -> str:
    run = "".join(rng.choice("    \t \u00a0\u3000") for _ in range(rng.randint(8, 80)))
    return rng.choice(_WORDS) + run + rng.choice(("", "\r\n", "\n\n\n", rng.choice(_WORDS), "  "))


def _digits(rng: random.Random) -> str:
    forms = (
        str(rng.randint(0, 10 ** rng.randint(1, 20))),
        f"{rng.random() * 1e4:.4f}",
        f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "١٢٣٤٥",
        "Ⅻ½²",
    )
    return " ".join(rng.choice(forms) for _ in range(rng.randint(1, 5)))


def mixed_corpus(n_bytes: int = 1_050_000, seed: int = 1234) -> list[str]:
    """Lines of English, Chinese, emoji, code, long whitespace runs and digits (deterministic)."""
    rng = random.Random(seed)
    makers = (_english, _english, _chinese, _emoji, _code, _code, _whitespace, _digits)
    lines, size = [], 0
    while size < n_bytes:
        line = " ".join(rng.choice(makers)(rng) for _ in range(rng.randint(1, 3)))
        line += rng.choice(("\n", "\n", "\n", "\r\n", "\n\n", " \n"))
        lines.append(line)
        size += len(line.encode("utf-8"))
    return lines


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return mixed_corpus()


@pytest.fixture(scope="module")
def tok(corpus) -> BPE:
    return BPE.train("".join(corpus[:6000]), 1000, special_tokens=["<|endoftext|>", "<|pad|>"])


def tiktoken_of(t: BPE):
    return tiktoken.Encoding(
        "test",
        pat_str=t.pat_str,
        mergeable_ranks=t.mergeable_ranks(),
        special_tokens=t.special_tokens,
    )


# ---------------------------------------------------------------------------------- training
def test_wikipedia_example():
    # aaabdaaabac: "aa" -> Z, then "ab" -> Y (ties with "Za" go to the smaller ids), "ZY" -> X: XdXac
    t = BPE.train("aaabdaaabac", 259, pattern=r"[\s\S]+")
    a, b, c, d = map(ord, "abcd")
    Z, Y, X = 256, 257, 258
    assert t.merges == [(a, a), (a, b), (Z, Y)]
    assert [t.token_bytes(i) for i in (Z, Y, X)] == [b"aa", b"ab", b"aaab"]
    assert t.encode("aaabdaaabac", fast=False) == [X, d, X, a, c] == t.encode("aaabdaaabac")
    assert t.decode([X, d, X, a, c]) == "aaabdaaabac"
    assert t.vocab_size == 259


def test_training_stops_when_nothing_is_left_to_merge():
    t = BPE.train("ab ab", 1000, pattern="gpt2")
    assert t.vocab_size == 258  # "ab" and " ab"
    assert t.encode("ab ab") == [256, 257]


def test_training_is_deterministic_and_order_free(corpus):
    docs = corpus[:3000]
    one = BPE.train(docs, 700)
    two = BPE.train(list(docs), 700)
    shuffled = list(docs)
    random.Random(0).shuffle(shuffled)
    three = BPE.train(shuffled, 700)
    assert one.merges == two.merges == three.merges
    assert one.mergeable_ranks() == two.mergeable_ranks() == three.mergeable_ranks()


def test_tie_break_is_highest_count_then_smallest_pair():
    # "ba" and "dc" both occur twice; (98, 97) < (100, 99) so "ba" is merged first.
    t = BPE.train(["dc", "ba", "dc", "ba"], 258, pattern=r"[\s\S]+")
    assert t.merges == [(98, 97), (100, 99)]


def test_trainer_words_match_the_encoder(corpus):
    words = bpe_mod.count_words(corpus[:4000], bpe_mod.PATTERNS["gpt4"])
    tr = bpe_mod._Trainer(words)
    tr.run(900)
    t = BPE(tr.ranks)
    assert len(set(tr.tb)) == len(tr.tb)
    for w, state in zip((w for w in words if len(w.encode()) > 1), tr.words):
        assert t._encode_piece(w) == state
    recount = Counter()
    for w, f in zip(tr.words, tr.freqs):
        for x, y in zip(w, w[1:]):
            recount[x << 20 | y] += f
    assert {p: c for p, c in tr.counts.items() if c} == dict(recount)


@pytest.mark.parametrize("seed", range(40))
def test_any_merge_order_keeps_words_as_the_encoder_segments_them(seed):
    rng = random.Random(seed)
    alphabet = ("ab", "abc", "aab")[seed % 3]
    words = Counter(
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))) for _ in range(40)
    )
    tr = bpe_mod._Trainer(words)
    for _ in range(200):
        live = sorted(p for p, c in tr.counts.items() if c > 0)
        if not live:
            break
        tr.merge(rng.choice(live))
    t = BPE(tr.ranks)
    for w, state in zip((w for w in words if len(w) > 1), tr.words):
        assert t._encode_piece(w) == state
        assert [
            tr.ranks[p] for p in bpe_mod._merge_parts([bytes([c]) for c in w.encode()], tr.ranks)
        ] == state


def test_train_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        BPE.train("", 300)
    with pytest.raises(ValueError, match="vocab_size"):
        BPE.train("abc", 100)
    with pytest.raises(ValueError, match="pattern"):
        BPE.train("abc", 300, pattern=r"\w+")  # drops spaces: decode(encode(s)) would lose them
    with pytest.raises(ValueError, match="capturing"):
        BPE.train("abc", 300, pattern=r"(\S+|\s+)")


# ---------------------------------------------------------------------------------- tiktoken parity
@needs_tiktoken
def test_mixed_corpus_matches_tiktoken_line_by_line(corpus, tok):
    assert sum(len(line.encode()) for line in corpus) >= 1_000_000
    enc = tiktoken_of(tok)
    for line in corpus:
        want = enc.encode_ordinary(line)
        assert tok.encode(line, fast=False) == want, line
        assert tok.encode(line, fast=True) == want, line
    text = "".join(corpus)
    ids = tok.encode(text, fast=False)
    assert ids == enc.encode_ordinary(text) == tok.encode(text)
    assert tok.decode(ids) == text


@needs_tiktoken
def test_gpt2_pattern_matches_tiktoken(corpus):
    t = BPE.train("".join(corpus[:3000]), 600, pattern="gpt2")
    enc = tiktoken_of(t)
    text = "".join(corpus[-3000:])
    assert t.encode(text, fast=False) == enc.encode_ordinary(text) == t.encode(text)
    assert t.pattern_name == "gpt2" and t.pat_str == bpe_mod.PATTERNS["gpt2"]


@needs_tiktoken
def test_tinyshakespeare_matches_tiktoken():
    if not SHAKESPEARE.exists():
        pytest.skip("tinyshakespeare.txt not present")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    t = BPE.train(text[:300_000], 2048)
    ids = t.encode(text, fast=False)
    assert ids == tiktoken_of(t).encode_ordinary(text) == t.encode(text)
    assert t.decode(ids) == text


@needs_tiktoken
def test_whole_piece_tokens_are_returned_as_is_like_tiktoken():
    # A hand-made table where no merge can build "abc" (there is no "ab" or "bc"), yet "abc" is a
    # token: tiktoken returns a pre-token that is a token whole, and so must we.
    ranks = {bytes([i]): i for i in range(256)}
    ranks[b"abc"] = 256
    t = BPE(ranks, pattern="gpt2")
    enc = tiktoken_of(t)
    for text in ("abc", " abc", "abc abc", "xabc"):
        assert t.encode(text, fast=False) == enc.encode_ordinary(text) == t.encode(text)
    assert t.encode("abc abc") == [256, 32, 97, 98, 99]


@needs_tiktoken
def test_pattern_tiktoken_cannot_parse_falls_back_to_pure_python():
    t = BPE.train("hello hello world", 270, pattern=r"\X")  # grapheme clusters: `regex` only
    assert t.encode("hello world") == t.encode("hello world", fast=False)
    assert "tiktoken cannot build" in t.fast_unavailable
    with pytest.raises(ValueError, match="fast=True"):
        t.encode("x", fast=True)


# ---------------------------------------------------------------------------------- round trips
ASSIGNED = st.characters(
    blacklist_categories=("Cs", "Cn")
)  # Unicode as Python's unicodedata knows it
TRICKY = " \t\n\r\x0b\x0c\x85\xa0\u2028\u3000ab1'sé中😀!"


ANY_CHAR = st.characters(blacklist_categories=())  # every code point, surrogates included
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@HYPOTHESIS
@given(
    st.text(alphabet=ANY_CHAR) | st.text(alphabet=ANY_CHAR | SURROGATE | st.sampled_from(TRICKY))
)
def test_round_trip_any_python_string_including_lone_surrogates(tok, s):
    assert tok.decode(tok.encode(s, fast=False)) == s
    assert tok.decode(tok.encode(s, disallowed_special=())) == s


@needs_tiktoken
@HYPOTHESIS
@given(st.text(alphabet=ASSIGNED) | st.text(alphabet=TRICKY))
def test_fast_and_pure_paths_agree(tok, s):
    assert (
        tok.encode(s, fast=False)
        == tok.encode(s, fast=True)
        == tiktoken_of_cached(tok).encode_ordinary(s)
    )


_ENC_CACHE: dict = {}


def tiktoken_of_cached(t: BPE):
    if id(t) not in _ENC_CACHE:
        _ENC_CACHE[id(t)] = tiktoken_of(t)
    return _ENC_CACHE[id(t)]


def test_surrogate_policy(tok):
    s = "a\ud800b\udfff \ud83d\ude00 \U0001f600"
    ids = tok.encode(s)
    assert ids == tok.encode(s, fast=False)
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8", "surrogatepass")


def test_decode_invalid_bytes(tok):
    euro = tok.encode("€", fast=False)
    assert len(euro) > 1  # three bytes, not merged in this tokenizer
    assert tok.decode(euro[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(euro[:1], errors="strict")
    with pytest.raises(ValueError, match="unknown token"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="unknown token"):
        tok.decode([-1])


def test_decode_accepts_numpy_and_torch(tok):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    ids = tok.encode("hello world")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "hello world"


# ---------------------------------------------------------------------------------- special tokens
@needs_tiktoken
def test_special_tokens(tok):
    eot, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|pad|>"]
    assert (eot, pad) == (998, 999) and tok.vocab_size == 1000
    text = "hi<|endoftext|>there <|pad|>"
    for fast in (False, True):
        with pytest.raises(ValueError, match="special token"):
            tok.encode(text, fast=fast)
        ids = tok.encode(text, allowed_special="all", fast=fast)
        assert ids == tiktoken_of(tok).encode(text, allowed_special="all")
        assert ids.count(eot) == 1 and ids.count(pad) == 1
        assert tok.decode(ids) == text
        as_text = tok.encode(text, disallowed_special=(), fast=fast)
        assert eot not in as_text and pad not in as_text and tok.decode(as_text) == text
        assert as_text == tok.encode_ordinary(text, fast=fast)
        with pytest.raises(ValueError, match="<\\|pad\\|>"):
            tok.encode(text, allowed_special={"<|endoftext|>"}, fast=fast)
        some = tok.encode(text, allowed_special={"<|endoftext|>"}, disallowed_special=(), fast=fast)
        assert some.count(eot) == 1 and pad not in some and tok.decode(some) == text


def test_special_tokens_are_cut_out_of_the_training_text():
    text = "<|endoftext|>".join(["hello there"] * 200)
    t = BPE.train(text, 400, special_tokens=["<|endoftext|>"])
    assert not any(b"endoftext" in tb or b"<|" in tb for tb in t.mergeable_ranks())
    assert t.encode(text, allowed_special="all").count(t.special_tokens["<|endoftext|>"]) == 199


def test_special_token_validation():
    ranks = {bytes([i]): i for i in range(256)}
    with pytest.raises(ValueError, match="prefix"):
        BPE(ranks, special_tokens={"<|a|>": 256, "<|a|>b": 257})
    with pytest.raises(ValueError, match="already"):
        BPE(ranks, special_tokens={"<|a|>": 5})
    with pytest.raises(ValueError, match="distinct"):
        BPE(ranks, special_tokens={"<|a|>": 300, "<|b|>": 300})
    with pytest.raises(ValueError, match="not special tokens"):
        BPE(ranks).encode("x", allowed_special={"<|nope|>"})


# ---------------------------------------------------------------------------------- files
def test_save_load_round_trip(tok, tmp_path, corpus):
    path = tok.save(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "bpe" and data["pattern"] == "gpt4"
    row = data["ranks"][300]
    assert base64.b64decode(row[0]).decode() == row[2] and row[1] == 300 and len(row[3]) == 2
    for loaded in (BPE.load(tmp_path), load_any(tmp_path), BPE.from_dict(data)):
        assert loaded.mergeable_ranks() == tok.mergeable_ranks()
        assert loaded.special_tokens == tok.special_tokens
        assert loaded.merges == tok.merges and loaded.pat_str == tok.pat_str
        sample = "".join(corpus[:200])
        assert loaded.encode(sample) == tok.encode(sample)


def test_load_rejects_broken_files(tok, tmp_path):
    data = json.loads(tok._to_json())
    with pytest.raises(ValueError, match="kind"):
        BPE.from_dict({**data, "kind": "char"})
    broken = json.loads(tok._to_json())
    broken["ranks"][300][3] = [1, 2]
    with pytest.raises(ValueError, match="merge"):
        BPE.from_dict(broken)
    broken = json.loads(tok._to_json())
    del broken["ranks"][65]
    with pytest.raises(ValueError, match="256 single bytes"):
        BPE.from_dict(broken)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        BPE.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        BPE.load(tmp_path / "nowhere")


def _gpt2_byte_order(ranks: dict[bytes, int]) -> dict[bytes, int]:
    """The same table with single bytes ranked in GPT-2's order (printable bytes first)."""
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    order += [b for b in range(256) if b not in order]
    out = {bytes([b]): i for i, b in enumerate(order)}
    out.update((t, r) for t, r in ranks.items() if len(t) > 1)
    return out


@needs_tiktoken
def test_tiktoken_rank_files(tok, tmp_path, corpus, monkeypatch):
    from tiktoken.load import load_tiktoken_bpe

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the file itself, no cached copy
    path = tok.save_tiktoken(tmp_path / "ours.tiktoken")
    assert load_tiktoken_bpe(str(path)) == tok.mergeable_ranks()
    assert BPE.from_tiktoken_file(path).mergeable_ranks() == tok.mergeable_ranks()

    shuffled = _gpt2_byte_order(tok.mergeable_ranks())
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in shuffled.items()))
    t = BPE.from_tiktoken_file(path, pattern="gpt4", special_tokens={"<|endoftext|>": 1000})
    enc = tiktoken.Encoding(
        "gpt2-order",
        pat_str=t.pat_str,
        mergeable_ranks=shuffled,
        special_tokens={"<|endoftext|>": 1000},
    )
    text = "".join(corpus[-500:])
    assert t.encode(text, fast=False) == enc.encode_ordinary(text) == t.encode(text)
    assert t.decode(t.encode(text)) == text
    assert t.encode("A") == [shuffled[b"A"]] == [32]


def test_tiktoken_rank_file_errors(tmp_path):
    path = tmp_path / "bad.tiktoken"
    good = "".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256))
    for content, message in (
        (good[: good.index("\n") + 1], "256 single bytes"),
        (good + "!!!! 300\n", "257"),
        (good + "YWI= 300 extra\n", "expected"),
        (good + "YWI= 5\n", "share a rank"),
        ("", "no ranks"),
    ):
        path.write_text(content)
        with pytest.raises(ValueError, match=message):
            BPE.from_tiktoken_file(path)


# ---------------------------------------------------------------------------------- CLI
def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="tfmr")
    tokenizer_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tokenizer", *argv])
    return args.func(args)


def test_cli_train_encode_decode_show(tmp_path, capsys, corpus):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("".join(corpus[:1500]), encoding="utf-8")
    (data / "sub" / "b.txt").write_text("".join(corpus[1500:3000]), encoding="utf-8")
    (data / "ignored.bin").write_bytes(b"\xff\xfe")
    out = tmp_path / "tok"
    assert (
        run_cli(
            "train",
            "--data",
            str(data),
            "--vocab-size",
            "600",
            "--out",
            str(out),
            "--no-progress",
            "--special-token",
            "<|endoftext|>",
        )
        == 0
    )
    assert "from 2 file(s)" in capsys.readouterr().out
    t = BPE.load(out)
    assert t.vocab_size == 600 and t.special_tokens == {"<|endoftext|>": 599}

    assert run_cli("encode", "--tokenizer", str(out), "Hello wörld 😀") == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == t.encode("Hello wörld 😀")
    assert (
        run_cli("decode", "--tokenizer", str(out), *map(str, ids[:2]), ",".join(map(str, ids[2:])))
        == 0
    )
    assert capsys.readouterr().out == "Hello wörld 😀\n"

    assert run_cli("show", "--tokenizer", str(out), "--no-color", "ab 中\n") == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("[") and "[中]" in shown[0] and "\\n" in shown[0]
    assert "characters: 5  bytes: 7  tokens:" in shown[2]
    assert run_cli("show", "--tokenizer", str(out), "--color", "ab 中") == 0
    assert "\x1b[30;43m" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = str(tmp_path / "tok")
    assert (
        run_cli("train", "--data", str(empty), "--vocab-size", "300", "--out", out, "--no-progress")
        == 2
    )
    assert "empty" in capsys.readouterr().err
    assert (
        run_cli("train", "--data", str(tmp_path / "missing"), "--vocab-size", "300", "--out", out)
        == 2
    )
    assert "not found" in capsys.readouterr().err
    BPE.train("hello", 260).save(out)
    assert run_cli("decode", "--tokenizer", out, "1", "x") == 2
    assert "integers" in capsys.readouterr().err
    assert run_cli("decode", "--tokenizer", out, "99999") == 2
    assert "unknown token" in capsys.readouterr().err


def test_cli_non_utf8_message(tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    assert (
        run_cli("train", "--data", str(latin), "--vocab-size", "300", "--out", str(tmp_path / "t"))
        == 2
    )
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "0xe9 at offset 3" in err


def test_show_groups_tokens_inside_a_character():
    ranks = {bytes([i]): i for i in range(256)}
    t = BPE(ranks)
    groups = tokenizer_cli.token_groups(t, t.encode("a€"))
    assert groups == [("a", [97]), ("€", [0xE2, 0x82, 0xAC])]
    line, ids = tokenizer_cli.render(groups, colour=False)
    assert line == "[a][€]" and ids == "97 226+130+172"
