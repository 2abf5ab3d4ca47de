"""Sequence-to-sequence training: batching, teacher forcing, label smoothing, resume, decoding."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
import torch

from tfmr import Choice, ModelConfig, build_model
from tfmr.config import ConfigError, to_dict
from tfmr.loop import CompiledOrEager
from tfmr.seq2seq import (
    BOS,
    EOS,
    PAD,
    BucketBatches,
    PairVocab,
    Seq2SeqTrainConfig,
    Seq2SeqTrainer,
    Soft,
    Vocab,
    collate,
    greedy_decode,
    pad_batch,
    soft_cross_entropy,
    teacher_distributions,
)


def _pairs(n=300, seed=0, symbols=8):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [4 + rng.randrange(symbols) for _ in range(rng.randint(1, 6))]
        out.append((s, s[::-1]))  # reverse
    return out


@dataclass
class Run:
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(
            dim=48,
            layers=2,
            encoder_layers=2,
            heads=4,
            context=16,
            pos=Choice("learned"),
            share_embeddings=True,
        )
    )
    train: Seq2SeqTrainConfig = field(
        default_factory=lambda: Seq2SeqTrainConfig(
            steps=200,
            batch_size=32,
            lr=3e-3,
            min_lr=3e-4,
            warmup=20,
            weight_decay=0.0,
            eval_every=1000,
            log_every=50,
            checkpoint_every=1000,
            eval_pairs=64,
            dtype="float32",
        )
    )


VOCAB = PairVocab(Vocab([f"s{i}" for i in range(8)]), Vocab([f"s{i}" for i in range(8)]))


def test_collate_builds_teacher_forcing_inputs_and_ignored_padding():
    b = collate([([5, 6, 7], [8, 9]), ([4], [10, 11, 12])])
    assert b["src_ids"].tolist() == [[5, 6, 7], [4, PAD, PAD]]
    assert b["tgt_ids"].tolist() == [[BOS, 8, 9, PAD], [BOS, 10, 11, 12]]
    assert b["targets"].tolist() == [[8, 9, EOS, -100], [10, 11, 12, EOS]]


def test_bucket_batches_cover_every_pair_once_per_epoch_within_the_token_cap():
    pairs = _pairs(500)
    batches = BucketBatches(pairs, batch_size=64, batch_tokens=200, seed=3)
    epoch0 = batches.epoch_batches(0)
    assert sorted(i for b in epoch0 for i in b) == list(range(500))
    for b in epoch0:
        longest = max(len(pairs[i][0]) + len(pairs[i][1]) + 1 for i in b)
        assert len(b) <= 64 and (len(b) == 1 or longest * len(b) <= 200)
    assert epoch0 == BucketBatches(pairs, 64, 200, seed=3).epoch_batches(0)  # deterministic
    assert epoch0 != batches.epoch_batches(1)  # reshuffled every epoch


def test_bucketing_pads_less_than_random_batches():
    pairs = _pairs(2000, symbols=8)
    cost = lambda b: max(len(pairs[i][0]) for i in b) * len(b)  # noqa: E731  padded source tokens
    bucketed = sum(cost(b) for b in BucketBatches(pairs, 32, seed=0).epoch_batches(0))
    order = list(range(2000))
    random.Random(0).shuffle(order)
    unsorted = sum(cost(order[i : i + 32]) for i in range(0, 2000, 32))
    assert bucketed < 0.8 * unsorted


def test_batch_position_resumes_from_its_state():
    pairs = _pairs(200)
    a = BucketBatches(pairs, 16, seed=1)
    for _ in range(20):  # past the end of the first epoch
        a.next()
    b = BucketBatches(pairs, 16, seed=1)
    b.load_state(a.state())
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]


def test_label_smoothing_loss_matches_torch_with_ignored_padding():
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="encoder-decoder",
        vocab_size=20,
        dim=32,
        layers=1,
        heads=2,
        pad_id=0,
        label_smoothing=0.1,
    )
    model = build_model(cfg)
    b = collate([([5, 6, 7], [8, 9]), ([4], [10, 11, 12])])
    out = model(**b)
    ref = torch.nn.functional.cross_entropy(
        out.logits.reshape(-1, 20), b["targets"].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.slow
def test_trainer_learns_to_reverse_and_greedy_decoding_agrees_with_the_full_forward(tmp_path):
    torch.manual_seed(0)
    trainer = Seq2SeqTrainer(
        Run(), VOCAB, _pairs(400), _pairs(40, seed=9), tmp_path, progress=False, log=lambda *a: None
    )
    first = trainer.evaluate()["dev_loss"]
    trainer.fit()
    assert trainer.history[-1]["dev_loss"] < 0.5 * first
    test = _pairs(60, seed=5)
    hyps = greedy_decode(trainer.model, pad_batch([s for s, _ in test]), max_len=10)
    exact = sum(h == t for h, (_, t) in zip(hyps, test)) / len(test)
    assert exact > 0.5  # chance is about 0
    # the decoded ids are the arg-max of the teacher-forced forward fed with themselves
    src = pad_batch([test[0][0]])
    tgt = torch.tensor([[BOS] + hyps[0]])
    full = trainer.model(src, tgt).logits.argmax(-1)[0].tolist()
    assert full == hyps[0] + [EOS]
    # a padded batch decodes each row as it decodes alone
    alone = [greedy_decode(trainer.model, pad_batch([s]), max_len=10)[0] for s, _ in test[:6]]
    assert alone == hyps[:6]


def test_resume_is_bit_identical(tmp_path):
    def run(out, steps, resume=False):
        cfg = Run()
        cfg.model.dropout = 0.1  # the torch RNG state must be restored too
        cfg.train.steps, cfg.train.checkpoint_every = steps, 3
        trainer = Seq2SeqTrainer(
            cfg,
            VOCAB,
            _pairs(100),
            _pairs(10, seed=9),
            out,
            resume=resume,
            progress=False,
            log=lambda *a: None,
        )
        trainer.fit()
        return trainer

    straight = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    resumed = run(tmp_path / "b", 6, resume=True)
    assert resumed.step == 6 and torch.equal(resumed.batches.state(), straight.batches.state())
    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        assert torch.equal(p, q), name


def test_time_budget_decays_the_schedule_and_stops(tmp_path):
    cfg = Run()
    cfg.train.steps, cfg.train.max_minutes = (
        10_000,
        1e-9,
    )  # the first step already spends the budget
    trainer = Seq2SeqTrainer(
        cfg, VOCAB, _pairs(50), _pairs(10, seed=9), tmp_path, progress=False, log=lambda *a: None
    )
    trainer.fit()
    assert trainer.step == 1 and trainer.progress_fraction() == 1.0


def test_the_trainer_leaves_the_callers_config_as_given(tmp_path):
    """The trainer resolves its own copy (arch, pad id and vocabulary sizes from the data; a resumed
    run's saved model section): the config object it was handed is not rewritten."""
    cfg = Run()
    cfg.train.steps = 2
    given = to_dict(cfg)
    trainer = Seq2SeqTrainer(
        cfg, VOCAB, _pairs(50), _pairs(10, seed=9), tmp_path, progress=False, log=lambda *a: None
    )
    trainer.fit()
    assert to_dict(cfg) == given and cfg.model.arch == "decoder"
    m = trainer.cfg.model
    assert (m.arch, m.pad_id) == ("encoder-decoder", PAD)
    assert (m.src_vocab_size, m.vocab_size) == (len(VOCAB.src), len(VOCAB.tgt))
    cfg.train.steps, cfg.model.dim = 3, 64  # a resumed run keeps its saved model section
    given = to_dict(cfg)
    resumed = Seq2SeqTrainer(
        cfg,
        VOCAB,
        _pairs(50),
        _pairs(10, seed=9),
        tmp_path,
        resume=True,
        progress=False,
        log=lambda *a: None,
    )
    resumed.fit()
    assert to_dict(cfg) == given and resumed.step == 3 and resumed.cfg.model.dim == Run().model.dim


def test_both_trainers_wire_their_objective_through_the_loop():
    """train.objective is wired once, in TrainLoop: neither trainer builds, runs or saves it itself."""
    from tfmr.loop import TrainLoop
    from tfmr.train import Trainer

    for cls in (Trainer, Seq2SeqTrainer):
        for name in ("setup_objective", "objective_loss", "extra_state", "load_extra_state"):
            assert getattr(cls, name) is getattr(TrainLoop, name), (cls.__name__, name)


def _compile_run(tmp_path, compile_: bool, steps: int = 0):
    cfg = Run()
    cfg.train.steps, cfg.train.compile, cfg.train.log_every = max(steps, 1), compile_, 1
    trainer = Seq2SeqTrainer(
        cfg,
        VOCAB,
        _pairs(60),
        _pairs(10, seed=9),
        tmp_path / str(compile_),
        progress=False,
        log=lambda *a: None,
    )
    if steps:
        trainer.fit()
    return trainer


def test_compile_setting_reaches_the_seq2seq_loss(tmp_path):
    """train.compile=true puts the model behind torch.compile for the shared loop's batch_loss
    (it used to be ignored by the seq2seq trainer)."""
    trainer = _compile_run(tmp_path, True)
    assert (
        isinstance(trainer.forward, CompiledOrEager) and trainer.forward.failed is None
    )  # it compiled
    assert isinstance(trainer.forward.compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.forward.compiled._orig_mod is trainer.model
    assert _compile_run(tmp_path, False).forward is not None


@pytest.mark.skipif(
    os.environ.get("TFMR_COMPILE_TESTS") != "1",
    reason="set TFMR_COMPILE_TESTS=1 (minutes on 2 cores)",
)
def test_compiled_seq2seq_training_matches_eager(tmp_path):
    got = [r["loss"] for r in _compile_run(tmp_path, True, steps=3).history]
    want = [r["loss"] for r in _compile_run(tmp_path, False, steps=3).history]
    assert got == pytest.approx(want, rel=1e-4)


def test_seq2seq_and_language_model_trainers_share_one_loop():
    from tfmr.loop import TrainLoop
    from tfmr.train import Trainer

    for cls in (Trainer, Seq2SeqTrainer):
        assert issubclass(cls, TrainLoop)
        for name in ("train_step", "save", "load_state", "progress_fraction", "run_evaluation"):
            assert getattr(cls, name) is getattr(TrainLoop, name), (cls.__name__, name)


def test_the_memory_keys_and_values_are_laid_out_for_every_step_to_read_without_a_copy():
    """A decoding state holds each layer's cross-attention keys and values: the same numbers as
    its projection, stored contiguous (B, H, S, D) so a decoding step's matmuls need no copy."""
    cfg = Run().model
    cfg.arch, cfg.vocab_size, cfg.src_vocab_size = "encoder-decoder", 12, 12
    model = build_model(cfg).eval()
    src = torch.randint(4, 12, (3, 7))
    with torch.no_grad():
        memory, _ = model.encode(src)
        kvs = model.start_state(3, 8, src=src).cross
        for block, (k, v) in zip(model.blocks, kvs):
            k_view, v_view = block.cross.project_kv(memory)
            assert not k_view.is_contiguous()  # the heads' view of the projection, as computed
            assert k.is_contiguous() and v.is_contiguous()
            assert k.shape == (3, 4, 7, 12)
            torch.testing.assert_close(k, k_view, rtol=0, atol=0)
            torch.testing.assert_close(v, v_view, rtol=0, atol=0)


# ----------------------------------------------------------------------------- word-level distillation
def _quiet_trainer(cfg, pairs, out):
    return Seq2SeqTrainer(
        cfg, VOCAB, pairs, _pairs(10, seed=9), out, progress=False, log=lambda *a: None
    )


def _one_hot_soft(pairs):
    """Soft targets that put all their mass on the gold symbol (y_1 .. y_T, </s>)."""
    return [
        (
            s,
            t,
            Soft(
                torch.tensor([[y] for y in t + [EOS]], dtype=torch.int16),
                torch.ones(len(t) + 1, 1).half(),
                torch.zeros(len(t) + 1).half(),
            ),
        )
        for s, t in pairs
    ]


def test_soft_cross_entropy_on_one_hot_targets_is_torchs_cross_entropy():
    """Soft targets with all their mass on the gold symbol give F.cross_entropy (padding ignored)."""
    torch.manual_seed(0)
    pairs = _one_hot_soft([([5, 6, 7], [8, 9]), ([4], [10, 11, 12])])
    b = collate(pairs)
    assert b["soft_ids"].shape == (2, 4, 1) and b["soft_probs"][0, 3].item() == 0  # padding
    logits = torch.randn(2, 4, 20)
    ref = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 20), b["targets"].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(soft_cross_entropy(logits, b), ref)


def test_soft_cross_entropy_is_torchs_cross_entropy_with_the_rest_spread_evenly():
    """Against probability targets, F.cross_entropy is the reference: the k kept symbols at the
    teacher's probabilities and its leftover probability spread over the other V - k symbols."""
    torch.manual_seed(1)
    B, T, V, k = 2, 3, 11, 4
    logits, teacher = torch.randn(B, T, V), torch.randn(B, T, V).softmax(-1)
    top, ids = teacher.topk(k, dim=-1)
    rest = 1 - top.sum(-1)
    dense = (rest / (V - k)).unsqueeze(-1).expand(B, T, V).scatter(-1, ids, top)  # (B, T, V)
    targets = torch.tensor([[5, 6, 2], [7, 2, -100]])
    batch = {"soft_ids": ids, "soft_probs": top, "soft_rest": rest, "targets": targets}
    live = targets != -100
    ref = torch.nn.functional.cross_entropy(logits[live], dense[live])
    torch.testing.assert_close(soft_cross_entropy(logits, batch), ref)


def test_teacher_distributions_are_the_teacher_forced_top_k_and_the_rest():
    """Each pair's Soft is its own teacher-forced forward's k most likely symbols, their
    probabilities and the probability left over, whatever batch the pair was read in."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=12, dim=32, layers=1, heads=2, pad_id=0)
    model = build_model(cfg)
    pairs = _pairs(30, symbols=7)
    softs, mass = teacher_distributions(model, pairs, k=3, batch_size=8)
    assert 0 < mass < 1
    model.eval()
    for (s, t), soft in zip(pairs, softs):
        b = collate([(s, t)])
        p = model(b["src_ids"], b["tgt_ids"]).logits[0].softmax(-1)  # (T + 1, V)
        top, ids = p.topk(3, dim=-1)
        assert torch.equal(soft.ids.long(), ids)
        torch.testing.assert_close(soft.probs.float(), top, atol=1e-3, rtol=0)
        torch.testing.assert_close(soft.rest.float(), 1 - top.sum(-1), atol=1e-3, rtol=0)
    # an ensemble teaches its combined distribution: a model twice over teaches as the model
    from tfmr.ensemble import Ensemble

    twice, _ = teacher_distributions(Ensemble([model, model]), pairs, k=3, batch_size=8)
    for a, b in zip(softs, twice):
        assert torch.equal(a.ids, b.ids)
        torch.testing.assert_close(a.probs.float(), b.probs.float(), atol=1e-3, rtol=0)


def test_word_distill_on_one_hot_soft_targets_is_plain_teacher_forcing(tmp_path):
    """train.word_distill=1 on soft targets that are the gold symbols trains exactly as plain
    teacher forcing without label smoothing, although that run's model smooths its labels: the
    whole loss comes from the soft targets, and they are read where the objective's loss is."""

    def run(out, pairs, w, smoothing):
        cfg = Run()
        cfg.model.label_smoothing, cfg.train.steps, cfg.train.word_distill = smoothing, 5, w
        trainer = _quiet_trainer(cfg, pairs, out)
        trainer.fit()
        return trainer

    plain = run(tmp_path / "plain", _pairs(100), 0.0, 0.0)
    soft = run(tmp_path / "soft", _one_hot_soft(_pairs(100)), 1.0, 0.1)
    smoothed = run(tmp_path / "smoothed", _pairs(100), 0.0, 0.1)
    assert smoothed.history[0]["loss"] != pytest.approx(plain.history[0]["loss"], rel=1e-3)
    assert [h["loss"] for h in soft.history if "loss" in h] == pytest.approx(
        [h["loss"] for h in plain.history if "loss" in h], rel=1e-5
    )
    for (name, p), q in zip(plain.model.state_dict().items(), soft.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_word_distill_is_refused_without_soft_targets_out_of_range_or_off_the_gold_target(tmp_path):
    cfg = Run()
    cfg.train.word_distill = 0.5
    with pytest.raises(ConfigError, match="training pairs carry none"):
        _quiet_trainer(cfg, _pairs(20), tmp_path / "a")
    cfg.train.word_distill = 1.5
    with pytest.raises(ConfigError, match=r"a weight in \[0, 1\], got 1.5"):
        _quiet_trainer(cfg, _one_hot_soft(_pairs(20)), tmp_path / "b")
    cfg.train.word_distill, cfg.train.objective = 0.5, Choice("reinforce")
    with pytest.raises(ConfigError, match="train.word_distill adds to a teacher-forced loss"):
        _quiet_trainer(cfg, _one_hot_soft(_pairs(20)), tmp_path / "c")
    cfg = Run()
    cfg.train.word_distill, cfg.model.loss_chunk = 0.5, 8
    with pytest.raises(ConfigError, match="set model.loss_chunk=0"):
        _quiet_trainer(cfg, _one_hot_soft(_pairs(20)), tmp_path / "d")


def test_teacher_distributions_keep_symbol_ids_past_int16():
    """A vocabulary of more than 32,767 symbols keeps its ids whole (int32, not int16)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="encoder-decoder", vocab_size=40_000, dim=8, layers=1, heads=1, pad_id=0)
    model = build_model(cfg)
    pairs = [([5, 6, 7], [30_000, 39_999]), ([4], [33_000])]
    softs, _ = teacher_distributions(model, pairs, k=4)
    model.eval()
    for (s, t), soft in zip(pairs, softs):
        b = collate([(s, t)])
        ids = model(b["src_ids"], b["tgt_ids"]).logits[0].topk(4, dim=-1).indices
        assert torch.equal(soft.ids.long(), ids)
    assert max(int(soft.ids.max()) for soft in softs) > 32_767
