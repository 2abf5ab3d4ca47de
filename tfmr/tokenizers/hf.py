"""Hugging Face `tokenizer.json` files: read into tfmr's own BPE where that is exact, else wrapped.

    from_hf_json(data) -> BPE | HFTokenizer
    to_hf_json(bpe)    -> dict            a tfmr BPE written as a byte-level `tokenizer.json`

Two ways in:

* **Byte-level BPE (GPT-2 style) -> tfmr's `BPE`.** A tokenizer whose model is BPE over GPT-2's
  byte-to-character alphabet, with the ByteLevel pre-tokenizer (GPT-2 regex, no prefix space; or
  a Split on any regex followed by ByteLevel without its regex, as Llama 3 writes it),
  no normalizer, no template post-processor, and merges whose results have ids that grow with the
  merge order, segments text exactly as tiktoken's "lowest-ranked concatenation first" rule does
  with id == rank (the same argument that makes tiktoken's r50k equal GPT-2; see bpe.py's "Rank
  semantics"). Such a file becomes a `BPE` with the same ids, needing no extra package. Added
  tokens become special tokens (tfmr's rule: text that spells one is refused unless allowed).
* **Anything else -> `HFTokenizer`**, a thin wrapper over the `tokenizers` library (an optional
  extra: `pip install tokenizers`; a clear one-line error names it when it is missing). It encodes
  as `Tokenizer.encode(text)` does, special-token templates included.

Left out: slow (sentencepiece `.model`, `vocab.txt`) tokenizers without a `tokenizer.json`, and
`tokenizer_config.json` options that `transformers` applies on top (e.g. clean-up of spaces).
"""

from __future__ import annotations

import json

from ..config import ConfigError
from .bpe import BPE


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for themselves,
    the other 68 bytes take the characters from U+0100 upwards in byte order."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class NotExact(ValueError):
    """The file is not a plain byte-level BPE that tfmr's own BPE reproduces id for id."""


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise NotExact(why)


def _split_pattern(pre: dict) -> str:
    """The split regex of the pre-tokenizer: "gpt2" for ByteLevel with its own regex, or the
    pattern of a Split(regex, isolated) followed by ByteLevel without regex (Llama 3's form)."""
    if (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space")
    ):
        return "gpt2"
    steps = pre.get("pretokenizers") or []
    _require(
        pre.get("type") == "Sequence" and len(steps) == 2,
        "not a byte-level pre-tokenizer tfmr reproduces",
    )
    split, byte = steps
    _require(
        split.get("type") == "Split"
        and split.get("behavior") == "Isolated"
        and not split.get("invert")
        and isinstance((split.get("pattern") or {}).get("Regex"), str),
        "a Split step that is not an isolated regex",
    )
    _require(
        byte.get("type") == "ByteLevel"
        and not byte.get("use_regex")
        and not byte.get("add_prefix_space"),
        "a ByteLevel step with its own regex or a prefix space after the Split",
    )
    return split["pattern"]["Regex"]


def _adds_nothing(post: dict | None) -> bool:
    """No post-processor, ByteLevel (offsets only), or a template of the bare sequence (as
    transformers 5 writes one)."""
    if post is None or post.get("type") == "ByteLevel":
        return True
    single = post.get("single") or []
    return post.get("type") == "TemplateProcessing" and all("Sequence" in step for step in single)


def _check_pipeline(data: dict) -> str:
    """The split pattern, after checking the rest of the pipeline is what tfmr's BPE does."""
    model, pre = data.get("model") or {}, data.get("pre_tokenizer") or {}
    _require(model.get("type") == "BPE", f"model type {model.get('type')!r} is not BPE")
    _require(
        not model.get("dropout")
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and not model.get("byte_fallback"),
        "BPE options (dropout, subword prefix/suffix, byte fallback) that tfmr's BPE lacks",
    )
    _require(data.get("normalizer") is None, "a normalizer")
    _require((data.get("decoder") or {}).get("type") == "ByteLevel", "not the ByteLevel decoder")
    _require(_adds_nothing(data.get("post_processor")), "a post-processor that adds tokens")
    return _split_pattern(pre)


def _merge_pairs(merges) -> list[tuple[str, str]]:
    """Merges as pairs, from either format ("a b" strings or [a, b] lists)."""
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _ranks(vocab: dict[str, int], merges: list[tuple[str, str]]) -> dict[bytes, int]:
    """token bytes -> id, checking that merge k's result has an id above merge k-1's."""
    to_byte = {c: b for b, c in byte_alphabet().items()}
    _require(
        all(c in to_byte for tok in vocab for c in tok),
        "vocabulary tokens outside the byte alphabet",
    )
    ranks = {bytes(to_byte[c] for c in tok): i for tok, i in vocab.items()}
    _require(len(ranks) == len(vocab), "two vocabulary entries spell the same bytes")
    _require(
        all(bytes([b]) in ranks for b in range(256)), "not all 256 bytes are in the vocabulary"
    )
    last = -1
    for a, b in merges:
        made = vocab.get(a + b)
        _require(
            made is not None and made > last, f"merge {a!r} + {b!r} does not make a newer token"
        )
        last = made
    _require(len(merges) == len(ranks) - 256, "vocabulary tokens that no merge makes")
    return ranks


def bpe_from_hf_json(data: dict) -> BPE:
    """tfmr's BPE with the same ids as this byte-level `tokenizer.json` (NotExact when it is not one)."""
    pattern = _check_pipeline(data)
    added = data.get("added_tokens") or []
    _require(
        not any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added),
        "added tokens that strip spaces",
    )
    specials = {t["content"]: int(t["id"]) for t in added}
    vocab = {
        tok: i for tok, i in data["model"]["vocab"].items() if tok not in specials
    }  # the trainer lists them too
    ranks = _ranks(vocab, _merge_pairs(data["model"].get("merges", [])))
    try:
        return BPE(ranks, pattern=pattern, special_tokens=specials)
    except ValueError as e:
        raise NotExact(str(e)) from None


class HFTokenizer:
    """A `tokenizers.Tokenizer` with tfmr's tokenizer interface (encode, decode, vocab_size, save)."""

    kind = "hf"

    def __init__(self, data: dict):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(
                "this tokenizer.json needs the `tokenizers` package: pip install tokenizers "
                "(or tfmr[hf])"
            ) from None
        self.data = data
        try:
            self._tok = Tokenizer.from_str(json.dumps(data))
        except Exception as e:  # the library raises its own Exception type for a bad file
            raise ValueError(f"the tokenizers library cannot read it: {e}") from None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def piece(self, idx: int) -> str:
        """The vocabulary entry of token `idx` as the file spells it (e.g. "\u2581the" for a
        SentencePiece-style model); "" for an id outside the vocabulary."""
        return self._tok.id_to_token(int(idx)) or ""

    def decode(self, ids) -> str:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def save(self, directory):
        """`directory/tokenizer.json` as tfmr reads it back: {"kind": "hf", "tokenizer": the HF file}."""
        from pathlib import Path

        path = Path(directory) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"kind": self.kind, "tokenizer": self.data}, ensure_ascii=False),
            encoding="utf-8",
        )
        return path

    @classmethod
    def from_dict(cls, data: dict) -> HFTokenizer:
        if not isinstance(data.get("tokenizer"), dict):
            raise ValueError(
                "an 'hf' tokenizer entry needs the Hugging Face file under 'tokenizer'"
            )
        return cls(data["tokenizer"])

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, model={self.data.get('model', {}).get('type')!r})"


def from_hf_json(data: dict) -> BPE | HFTokenizer:
    """The tokenizer a Hugging Face `tokenizer.json` describes: tfmr's BPE where exact, else HFTokenizer."""
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError("not a Hugging Face tokenizer.json (no 'model' entry)")
    try:
        return bpe_from_hf_json(data)
    except (NotExact, KeyError, TypeError, AttributeError):
        return HFTokenizer(data)


def to_hf_json(bpe: BPE) -> dict:
    """A byte-level BPE `tokenizer.json` that the `tokenizers` library encodes like `bpe`: the GPT-2
    pattern as the ByteLevel pre-tokenizer's own regex, any other as a Split step before it. Merges
    are recovered from the rank table: each multi-byte token's last merge is the split that the
    lower-ranked tokens make of its bytes."""
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    if bpe.pattern_name == "gpt2":
        pre = byte_level
    else:
        pre = {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": bpe.pat_str},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {**byte_level, "use_regex": False},
            ],
        }
    alphabet = byte_alphabet()
    spell = lambda t: "".join(alphabet[b] for b in t)  # noqa: E731
    ranks = bpe.mergeable_ranks()
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            left, right = _split(tok, ranks, rank)
            merges.append([spell(left), spell(right)])
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s, i in sorted(bpe.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {spell(t): r for t, r in ranks.items()},
            "merges": merges,
        },
    }


def _split(tok: bytes, ranks: dict[bytes, int], rank: int) -> tuple[bytes, bytes]:
    """The last merge that makes `tok`: run the rank rule on its bytes with tokens below `rank`
    until two parts are left."""
    parts = [bytes([b]) for b in tok]
    while len(parts) > 2:
        pairs = [(ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)]
        best, i = min(pairs)
        if best >= rank:
            raise ValueError(f"token {tok!r} is not made by merging lower-ranked tokens")
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]
