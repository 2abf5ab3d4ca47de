"""Byte-level BPE tokenizer (GPT-2 / GPT-4 style): training, encoding, decoding, saving.

What this file holds:

* `BPE`, a tokenizer defined by a *rank table* (token bytes -> rank, the same `mergeable_ranks`
  format tiktoken uses), a pre-tokenization regex (`pattern="gpt2"`, `"gpt4"` or any regex string)
  and special tokens. Token id == rank; special tokens get ids above the ranks.
* `BPE.train`, an incremental trainer: pairs are counted once over the unique pre-token words
  (with their frequencies), a pair -> words index says which words to touch, the best pair comes
  from a heap with lazy invalidation, and each merge only updates the neighbours of the merged
  pair in the words that contain it. The corpus is never recounted.
* Encoding: the pure-Python encoder (with a per-pre-token cache) and, when `tiktoken` is
  installed, a fast path that hands the same rank table to `tiktoken.Encoding`. Both give the
  same ids (see "Rank semantics").
* `save` / `load` / `from_dict` (a readable `tokenizer.json`) and tiktoken rank files
  (`from_tiktoken_file`, `save_tiktoken`: one "base64-token rank" per line).

Rank semantics. tiktoken does not replay a list of merges: inside each pre-token it repeatedly
merges the adjacent pair whose *concatenated bytes* have the lowest rank (leftmost on ties), and a
pre-token that is itself a token is returned whole. The pure encoder here does exactly that
(`_merge_parts`), for any rank table, so it matches tiktoken by construction. The trainer merges
pairs of token ids, the classic way; the two agree because of a span argument: in a word whose
segmentation is the rank-greedy one, any run of tokens that starts and ends on token boundaries
is itself segmented as the greedy would segment its bytes alone (no merge ever crossed its
edges). Hence two different adjacent pairs with the same bytes cannot both be live, a new token
can never sit next to a neighbour that together with it spells an older token, and a live pair
never spells an existing token. So merging every occurrence of the chosen pair left to right
keeps each word exactly as the encoder (and tiktoken) would segment it with the ranks so far, and
every new token's bytes are new (the trainer raises if that were ever violated). tests/test_bpe.py
checks this on a 1 MB mixed corpus and under random merge orders.

Tie-breaking in training: the pair with the highest count wins; among equal counts the smallest
pair of token ids `(left, right)` wins. Single bytes have ids 0..255 in byte order (the order
tiktoken's own educational trainer uses; tiktoken only requires that all 256 bytes are present
and every rank is distinct). Training is deterministic.

Surrogate policy. Text is turned into bytes with UTF-8 and the "surrogatepass" error handler, so
a Python string with lone surrogates ("\\ud800") becomes the 3-byte CESU-style sequence and
decodes back to the same surrogate: `decode(encode(s)) == s` for every Python string. tiktoken
instead replaces lone surrogates with U+FFFD, so for strings containing surrogates the fast path
is skipped and ids differ from a plain `tiktoken.Encoding`; for every string without surrogates
(every string that is valid Unicode text) the ids are identical.

Left out: byte-level "prefix space" options, normalisation (NFC etc.), training from an existing
tokenizer, the "unstable token" API of tiktoken, and o200k's pattern (pass it as a string).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import functools
import gc
import heapq
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex

# GPT-2 (r50k) and GPT-4 (cl100k) split patterns, as tiktoken writes them.
PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
}
_PROBE = "Hi, it's 2024!\t  x = [1, 22]\n\n  \r\n end…  é 中文 😀 \u00a0 ''  "
_SINGLE_BYTES = [bytes([i]) for i in range(256)]
_MAX_RANK = 2**32 - 2  # tiktoken uses u32 ranks and reserves u32::MAX
_CACHE_LIMIT = 200_000
_ERRORS = "tfmr.bpe.surrogates"


def _surrogate_or_replace(err: UnicodeError):
    """Decode error handler: restore lone surrogates ("surrogatepass"), replace other bad bytes."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    b = err.object[err.start : err.start + 3]
    if len(b) == 3 and b[0] == 0xED and 0xA0 <= b[1] <= 0xBF and 0x80 <= b[2] <= 0xBF:
        return chr(0xD000 | ((b[1] & 0x3F) << 6) | (b[2] & 0x3F)), err.start + 3
    return "\ufffd", err.end


codecs.register_error(_ERRORS, _surrogate_or_replace)


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@functools.cache
def _tiktoken_module():
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return tiktoken


def _resolve_pattern(pattern: str) -> tuple[str | None, str]:
    """Return (name or None, pattern string); validate custom patterns on a probe text."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(
            f"pattern must be one of {sorted(PATTERNS)} or a regex string, got {pattern!r}"
        )
    if pattern in PATTERNS:
        return pattern, PATTERNS[pattern]
    for name, pat in PATTERNS.items():
        if pattern == pat:
            return name, pat
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {e}") from e
    if compiled.groups:
        raise ValueError("pattern must not have capturing groups; use (?:...) instead")
    pieces = [m.group() for m in compiled.finditer(_PROBE)]
    if "" in pieces or "".join(pieces) != _PROBE:
        raise ValueError(
            f"pattern {pattern!r} must split text into non-empty pieces that cover every "
            "character (it drops or empty-matches part of a probe text)"
        )
    return None, pattern


def _special_regex(tokens: Iterable[str]):
    return regex.compile(
        "|".join(regex.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t)))
    )


def _check_special_tokens(special: dict[str, int], ranks_ids: set[int]) -> dict[str, int]:
    out = {}
    for tok, idx in special.items():
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"special tokens must be non-empty strings, got {tok!r}")
        try:
            tok.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"special token {tok!r} is not valid UTF-8 text") from e
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx <= _MAX_RANK:
            raise ValueError(
                f"special token {tok!r}: id must be an int in [0, {_MAX_RANK}], got {idx!r}"
            )
        if idx in ranks_ids:
            raise ValueError(f"special token {tok!r}: id {idx} is already a mergeable token's rank")
        out[tok] = idx
    if len(set(out.values())) != len(out):
        raise ValueError("special tokens must have distinct ids")
    for a in out:
        for b in out:
            if a != b and b.startswith(a):
                raise ValueError(
                    f"special token {a!r} is a prefix of {b!r}; that makes matching ambiguous"
                )
    return out


def _check_ranks(ranks: dict[bytes, int]) -> dict[bytes, int]:
    if not isinstance(ranks, dict):
        raise ValueError(f"mergeable_ranks must be a dict[bytes, int], got {type(ranks).__name__}")
    for tok, r in ranks.items():
        if not isinstance(tok, bytes) or not tok:
            raise ValueError(f"mergeable token must be non-empty bytes, got {tok!r}")
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= _MAX_RANK:
            raise ValueError(f"rank of {tok!r} must be an int in [0, {_MAX_RANK}], got {r!r}")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("mergeable_ranks: two tokens share a rank; every rank must be distinct")
    missing = [i for i in range(256) if _SINGLE_BYTES[i] not in ranks]
    if missing:
        raise ValueError(
            f"mergeable_ranks must contain all 256 single bytes; missing {missing[:8]}..."
        )
    return dict(ranks)


def _known(decoder: dict, idx) -> bool:
    try:
        return idx in decoder
    except TypeError:
        return False


def _check_merges(merges, decoder: dict[int, bytes]) -> list[tuple[int, int]]:
    """Merge k joins (left, right) into id 256 + k; check that the bytes say so."""
    out = []
    for k, m in enumerate(merges):
        a, b = (int(x) for x in m)
        if a not in decoder or b not in decoder or decoder.get(256 + k) != decoder[a] + decoder[b]:
            raise ValueError(f"merge {k} ({a}, {b}) does not make token {256 + k}")
        out.append((a, b))
    return out


def _merge_parts(parts: list[bytes], ranks: dict[bytes, int]) -> list[bytes]:
    """tiktoken's merge rule: repeatedly join the adjacent pair whose bytes have the lowest rank.

    Ties go to the leftmost pair. A heap over (rank, position) with a linked list keeps long
    pieces (a Chinese sentence, a run of spaces) at O(n log n) instead of O(n^2).
    """
    n = len(parts)
    if n < 2:
        return list(parts)
    cur: list = list(parts)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        r = ranks.get(cur[i] + cur[i + 1])
        if r is not None:
            heap.append((r, i))
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        j = nxt[i]
        if cur[i] is None or j >= n:
            continue
        merged = cur[i] + cur[j]
        if ranks.get(merged) != r:
            continue  # stale entry: a neighbour changed since it was pushed
        cur[i], cur[j] = merged, None
        k = nxt[i] = nxt[j]
        if k < n:
            prv[k] = i
            rk = ranks.get(merged + cur[k])
            if rk is not None:
                heapq.heappush(heap, (rk, i))
        p = prv[i]
        if p >= 0:
            rp = ranks.get(cur[p] + merged)
            if rp is not None:
                heapq.heappush(heap, (rp, p))
    return [c for c in cur if c is not None]


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def count_words(
    texts: Iterable[str], pat_str: str, special_tokens=(), progress: bool = False
) -> Counter:
    """Pre-tokenize `texts` (each one a document) and count the pieces; special tokens are cut out."""
    pat = regex.compile(pat_str)
    split = _special_regex(special_tokens).split if special_tokens else None
    counts: Counter = Counter()
    if progress:
        from tqdm import tqdm

        texts = tqdm(texts, desc="pre-tokenizing", unit="doc")
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"training texts must be str, got {type(text).__name__}")
        for segment in split(text) if split else (text,):
            counts.update(pat.findall(segment))
    return counts


_SHIFT = 20  # while training, the pair (a, b) of token ids is the int a << 20 | b
_LOW = (1 << _SHIFT) - 1
_KEY = 2 * _SHIFT  # heap key: -count << 40 | pair (highest count first, then smallest pair)
_PAIR = (1 << _KEY) - 1
MAX_TRAIN_VOCAB = 1 << _SHIFT


class _Trainer:
    """Incremental BPE merges over unique words; ids are ranks, 0..255 are the bytes.

    State: `words` (each a list of token ids) with `freqs`; `counts`, the exact count of every
    adjacent pair; `where`, pair -> a superset of the words holding it (entries are never
    removed, a stale one costs a quick look); `heap`, at least one entry per live pair whose
    key count is >= its true count. Only pairs holding the new token ever gain count, and they
    are pushed when they do; a popped entry whose count went down is pushed back at its count.
    """

    def __init__(self, word_counts: dict[str, int]):
        self.tb = list(_SINGLE_BYTES)  # id -> bytes
        self.ranks = {b: i for i, b in enumerate(self.tb)}  # bytes -> id
        self.merges: list[tuple[int, int]] = []
        self.words: list[list[int]] = []
        self.freqs: list[int] = []
        for w, f in word_counts.items():
            b = _to_bytes(w)
            if len(b) > 1:
                self.words.append(list(b))
                self.freqs.append(f)
        self._count_pairs()

    def _count_pairs(self) -> None:
        counts: dict = {}
        where: dict = {}
        for wi, w in enumerate(self.words):
            f = self.freqs[wi]
            for a, b in zip(w, w[1:]):
                p = a << _SHIFT | b
                counts[p] = counts.get(p, 0) + f
                ws = where.get(p)
                if ws is None:
                    where[p] = {wi}
                else:
                    ws.add(wi)
        self.counts, self.where = counts, where
        self.heap = [-c << _KEY | p for p, c in counts.items()]
        heapq.heapify(self.heap)

    def best_pair(self) -> int | None:
        """Pop the pair with the highest count (smallest ids on ties); None when none is left."""
        heap, counts = self.heap, self.counts
        while heap:
            key = heapq.heappop(heap)
            p = key & _PAIR
            c = counts.get(p, 0)
            if c == -(key >> _KEY):
                return p
            if 0 < c < -(key >> _KEY):  # the count went down since the push: requeue it
                heapq.heappush(heap, -c << _KEY | p)
        return None

    def run(self, n_merges: int, progress: bool = False) -> None:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_merges, desc="BPE merges", unit="merge")
        try:
            for _ in range(n_merges):
                pair = self.best_pair()
                if pair is None:
                    break
                self.merge(pair)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def merge(self, pair: int) -> int:
        """Add the token for the live `pair` and merge it in every word that holds it."""
        a, b = pair >> _SHIFT, pair & _LOW
        data = self.tb[a] + self.tb[b]
        if data in self.ranks:  # impossible when training from bytes (see the module docstring)
            raise RuntimeError(f"BPE training: merged bytes {data!r} are already a token")
        t = len(self.tb)
        self.tb.append(data)
        self.ranks[data] = t
        self.merges.append((a, b))
        touched = self._merge_words(self.where.pop(pair, ()), a, b, t)
        self.counts.pop(pair, None)
        counts, heap = self.counts, self.heap
        for p in touched:
            c = counts[p]
            if c > 0:
                heapq.heappush(heap, -c << _KEY | p)
        return t

    def _merge_words(self, wids, a: int, b: int, t: int) -> set[int]:
        """Replace each (a, b) by t in the words `wids`, left to right, updating the counts of
        the neighbouring pairs only; return the new pairs (those holding t)."""
        words, freqs, counts, where = self.words, self.freqs, self.counts, self.where
        sh = _SHIFT
        bsh, tsh = b << sh, t << sh
        touched: set[int] = set()
        for wi in wids:
            w = words[wi]
            f = freqs[wi]
            left = w.count(a)
            i = 0
            while left:
                i = w.index(a, i)
                left -= 1
                n = len(w)
                if i + 1 < n and w[i + 1] == b:
                    if i:
                        prev = w[i - 1]  # may be t from the previous merge in this word
                        counts[prev << sh | a] -= f
                        q = prev << sh | t
                        counts[q] = counts.get(q, 0) + f
                        touched.add(q)
                        ws = where.get(q)
                        if ws is None:
                            where[q] = {wi}
                        else:
                            ws.add(wi)
                    if i + 2 < n:
                        nx = w[i + 2]
                        counts[bsh | nx] -= f
                        q = tsh | nx
                        counts[q] = counts.get(q, 0) + f
                        touched.add(q)
                        ws = where.get(q)
                        if ws is None:
                            where[q] = {wi}
                        else:
                            ws.add(wi)
                    w[i] = t
                    del w[i + 1]
                    if a == b:
                        left -= 1  # the merge used up two of the counted a's
                i += 1
        return touched


# ----------------------------------------------------------------------------------------------
# The tokenizer
# ----------------------------------------------------------------------------------------------


class BPE:
    """Byte-level BPE: a rank table, a split pattern and special tokens (see the module docstring)."""

    kind = "bpe"
    decode_errors = (
        _ERRORS  # the handler decode(errors="replace") uses; tfmr.textstream decodes with it too
    )

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str = "gpt4",
        special_tokens: dict[str, int] | None = None,
        *,
        merges: list[tuple[int, int]] | None = None,
        fast: bool = True,
    ):
        self._ranks = _check_ranks(mergeable_ranks)
        self.pattern_name, self.pat_str = _resolve_pattern(pattern)
        self._pat = regex.compile(self.pat_str)
        self.special_tokens = _check_special_tokens(
            dict(special_tokens or {}), set(self._ranks.values())
        )
        self.fast = fast  # use tiktoken when it is installed
        self._decoder = {r: t for t, r in self._ranks.items()}
        self.merges = _check_merges(merges, self._decoder) if merges is not None else None
        self._decoder.update((i, s.encode("utf-8")) for s, i in self.special_tokens.items())
        self._cache: dict[str, list[int]] = {}
        self._special_res: dict[frozenset, object] = {}
        self._vocab_size = max(self._decoder) + 1
        self._tk = None
        self.fast_unavailable: str | None = None

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: Iterable[str] | None = None,
        progress: bool = False,
    ) -> BPE:
        """Learn a tokenizer of `vocab_size` ids (256 bytes + merges + special tokens).

        `text` is one string or an iterable of documents (pre-tokens never cross documents).
        Special tokens are cut out of the text before counting and get the ids after the merges.
        Training stops early (a smaller vocabulary) when no pair of tokens is left to merge.
        """
        specials = list(special_tokens or [])
        if len(set(specials)) != len(specials):
            raise ValueError("special_tokens contains duplicates")
        _check_special_tokens({s: i for i, s in enumerate(specials)}, set())  # fail before training
        if (
            not isinstance(vocab_size, int)
            or not 256 + len(specials) <= vocab_size <= MAX_TRAIN_VOCAB
        ):
            raise ValueError(
                f"vocab_size must be an int in [256 + {len(specials)} special tokens, {MAX_TRAIN_VOCAB}], "
                f"got {vocab_size!r}"
            )
        _, pat_str = _resolve_pattern(pattern)
        texts = [text] if isinstance(text, str) else text
        with _gc_paused():  # the trainer's many small sets and lists would only make the GC scan
            words = count_words(texts, pat_str, specials, progress)
            if not words:
                raise ValueError("BPE.train: the training text is empty")
            trainer = _Trainer(words)
            trainer.run(vocab_size - 256 - len(specials), progress)
        n = len(trainer.tb)
        return cls(
            trainer.ranks,
            pattern=pattern,
            special_tokens={s: n + i for i, s in enumerate(specials)},
            merges=trainer.merges,
        )

    @classmethod
    def from_tiktoken_file(
        cls, path: str | Path, pattern: str = "gpt4", special_tokens: dict[str, int] | None = None
    ) -> BPE:
        """Load a tiktoken rank file: one "base64(token bytes) rank" per line."""
        ranks: dict[bytes, int] = {}
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{path}:{n}: expected 'base64-token rank', got {line[:60]!r}")
            try:
                tok, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            except ValueError as e:
                raise ValueError(f"{path}:{n}: bad token or rank in {line[:60]!r}: {e}") from e
            if tok in ranks:
                raise ValueError(f"{path}:{n}: token {tok!r} appears twice")
            ranks[tok] = rank
        if not ranks:
            raise ValueError(f"{path}: no ranks in the file")
        return cls(ranks, pattern=pattern, special_tokens=special_tokens)

    def save_tiktoken(self, path: str | Path) -> Path:
        """Write the rank table as a tiktoken rank file (special tokens are not part of it)."""
        path = Path(path)
        rows = sorted(self._ranks.items(), key=lambda kv: kv[1])
        path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in rows))
        return path

    @classmethod
    def from_dict(cls, data: dict) -> BPE:
        """Rebuild a tokenizer from the contents of tokenizer.json."""
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind != cls.kind:
            raise ValueError(f"not a BPE tokenizer description (kind={kind!r})")
        try:
            rows = data["ranks"]
            ranks, made_by = {}, {}
            for row in rows:
                tok, rank = base64.b64decode(row[0], validate=True), int(row[1])
                ranks[tok] = rank
                if len(row) > 3:
                    made_by[rank] = (int(row[3][0]), int(row[3][1]))
            if len(ranks) != len(rows):
                raise ValueError("a token appears twice in 'ranks'")
            specials = {str(k): int(v) for k, v in data.get("special_tokens", {}).items()}
            return cls(
                ranks,
                pattern=data.get("pat_str") or data["pattern"],
                special_tokens=specials,
                merges=[made_by[r] for r in sorted(made_by)] if made_by else None,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError, OverflowError) as e:
            raise ValueError(f"invalid BPE tokenizer data: {e}") from e

    @classmethod
    def load(cls, directory: str | Path) -> BPE:
        path = Path(directory) / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer.json in {directory}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json`, one token per line: [base64 bytes, rank, the bytes
        as text (null if they are not UTF-8), and for trained tokens the [left, right] ids merged]."""
        path = Path(directory) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._to_json(), encoding="utf-8")
        return path

    def _to_json(self) -> str:
        head = {
            "kind": self.kind,
            "format_version": 1,
            "pattern": self.pattern_name,
            "pat_str": self.pat_str,
            "special_tokens": self.special_tokens,
        }
        lines = [
            f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()
        ]
        made_by = {256 + k: list(m) for k, m in enumerate(self.merges or ())}
        rows = []
        for tok, r in sorted(self._ranks.items(), key=lambda kv: kv[1]):
            try:
                readable = tok.decode("utf-8")
            except UnicodeDecodeError:
                readable = None
            row = [base64.b64encode(tok).decode(), r, readable] + (
                [made_by[r]] if r in made_by else []
            )
            rows.append("    " + json.dumps(row, ensure_ascii=False))
        return "{\n" + "\n".join(lines) + '\n  "ranks": [\n' + ",\n".join(rows) + "\n  ]\n}\n"

    # ---- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids the model needs: the largest id + 1 (ranks and special tokens)."""
        return self._vocab_size

    def mergeable_ranks(self) -> dict[bytes, int]:
        """A copy of the rank table in tiktoken's format (token bytes -> rank == id)."""
        return dict(self._ranks)

    def token_bytes(self, idx: int) -> bytes:
        try:
            return self._decoder[idx]
        except (KeyError, TypeError):
            raise ValueError(f"unknown token id {idx!r} (vocab_size {self.vocab_size})") from None

    def tiktoken_encoding(self):
        """The equivalent `tiktoken.Encoding` (built once, then cached). None when tiktoken is
        not installed or cannot take this tokenizer (e.g. a custom pattern its regex engine
        rejects); `fast_unavailable` then says why."""
        if self._tk is None and self.fast_unavailable is None:
            tiktoken = _tiktoken_module()
            if tiktoken is None:
                self.fast_unavailable = (
                    "the tiktoken package is not installed (pip install tiktoken)"
                )
                return None
            try:
                self._tk = tiktoken.Encoding(
                    name=f"tfmr-bpe-{self.vocab_size}",
                    pat_str=self.pat_str,
                    mergeable_ranks=self._ranks,
                    special_tokens=self.special_tokens,
                )
            except (
                Exception
            ) as e:  # tiktoken raises plain ValueError/BaseException subclasses from Rust
                self.fast_unavailable = f"tiktoken cannot build this encoding: {e}"
        return self._tk

    # ---- encoding ---------------------------------------------------------------------------

    def encode(
        self,
        text: str,
        *,
        allowed_special="none",
        disallowed_special="all",
        fast: bool | None = None,
    ) -> list[int]:
        """Text -> ids. Special tokens as in tiktoken:

        * `allowed_special` ("all", a set of strings, or "none"): these become their special id.
        * `disallowed_special` ("all" = every special token not allowed, or a set, or () ): if the
          text contains one of them, raise ValueError. Special tokens that are neither allowed
          nor disallowed are encoded as ordinary text.
        * `fast`: None uses tiktoken when installed (and `self.fast`), False forces pure Python,
          True requires tiktoken. Both give the same ids.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects str, got {type(text).__name__}")
        allowed = self._allowed(allowed_special)
        self._check_disallowed(text, allowed, disallowed_special)
        tk = self._fast_encoding(text, fast)
        if tk is not None:
            return (
                tk.encode(text, allowed_special=allowed, disallowed_special=())
                if allowed
                else tk.encode_ordinary(text)
            )
        if not allowed:
            return self._encode_ordinary_py(text)
        return self._encode_with_special_py(text, allowed)

    def encode_ordinary(self, text: str, *, fast: bool | None = None) -> list[int]:
        """Encode with every special token treated as plain text."""
        return self.encode(text, disallowed_special=(), fast=fast)

    def _allowed(self, allowed_special) -> frozenset:
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if allowed_special in ("none", None):
            return frozenset()
        if isinstance(allowed_special, str):
            raise ValueError(
                f"allowed_special must be 'all', 'none' or a set of strings, got {allowed_special!r}"
            )
        allowed = frozenset(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise ValueError(
                f"allowed_special has tokens that are not special tokens: {sorted(unknown)}"
            )
        return allowed

    def _check_disallowed(self, text: str, allowed: frozenset, disallowed_special) -> None:
        if disallowed_special == "all":
            disallowed = frozenset(self.special_tokens) - allowed
        elif isinstance(disallowed_special, str):
            raise ValueError(
                f"disallowed_special must be 'all' or a collection, got {disallowed_special!r}"
            )
        else:
            disallowed = frozenset(disallowed_special)
        if not disallowed:
            return
        m = self._special_re(disallowed).search(text)
        if m:
            raise ValueError(
                f"the text contains the special token {m.group()!r}. Pass allowed_special={{{m.group()!r}}} "
                "(or 'all') to encode it as a special token, or disallowed_special=() to encode it as text."
            )

    def _special_re(self, tokens: frozenset):
        r = self._special_res.get(tokens)
        if r is None:
            r = self._special_res[tokens] = _special_regex(tokens)
        return r

    def _fast_encoding(self, text: str, fast: bool | None):
        """The tiktoken Encoding to use for `text`, or None for the pure-Python path."""
        if fast is False or (fast is None and not self.fast):
            return None
        tk = self.tiktoken_encoding()
        if tk is None:
            if fast:
                raise ValueError(f"fast=True, but {self.fast_unavailable}")
            return None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: tiktoken would replace them
                return None
        return tk

    def _encode_piece(self, piece: str) -> list[int]:
        data = _to_bytes(piece)
        r = self._ranks.get(data)
        if r is not None:
            return [r]
        ranks = self._ranks
        return [ranks[p] for p in _merge_parts([_SINGLE_BYTES[c] for c in data], ranks)]

    def _encode_ordinary_py(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out: list[int] = []
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = self._encode_piece(piece)
            out += ids
        return out

    def _encode_with_special_py(self, text: str, allowed: frozenset) -> list[int]:
        out: list[int] = []
        start = 0
        for m in self._special_re(allowed).finditer(text):
            out += self._encode_ordinary_py(text[start : m.start()])
            out.append(self.special_tokens[m.group()])
            start = m.end()
        out += self._encode_ordinary_py(text[start:])
        return out

    # ---- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids) -> bytes:
        if hasattr(ids, "tolist"):  # numpy arrays, torch tensors
            ids = ids.tolist()
        dec = self._decoder
        try:
            return b"".join([dec[i] for i in ids])
        except (KeyError, TypeError):
            bad = [i for i in ids if not _known(dec, i)]
            raise ValueError(
                f"unknown token ids {bad[:10]!r} (vocab_size {self.vocab_size})"
            ) from None

    def decode(self, ids, errors: str = "replace") -> str:
        """Ids -> text. errors="replace": bytes that are not UTF-8 become U+FFFD (lone surrogates
        encoded by `encode` come back as themselves); errors="strict" raises on such bytes."""
        data = self.decode_bytes(ids)
        handler = {"replace": _ERRORS, "strict": "surrogatepass"}.get(errors, errors)
        return data.decode("utf-8", handler)

    def __repr__(self) -> str:
        pat = self.pattern_name or "custom"
        return f"BPE(vocab_size={self.vocab_size}, pattern={pat!r}, special_tokens={len(self.special_tokens)})"
