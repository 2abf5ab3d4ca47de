"""Config: overrides, files, types, and the errors a user sees."""

from __future__ import annotations

import pytest

from tfmr import presets
from tfmr.config import (
    Choice,
    ConfigError,
    RunConfig,
    apply_override,
    from_dict,
    load_file,
    merge_into,
    to_dict,
)


def test_dotted_overrides_set_typed_values():
    cfg = presets.tiny()
    for a in (
        "model.heads=4",
        "train.lr=1e-3",
        "train.compile=true",
        "model.kv_heads=none",
        "model.pos=sinusoidal",
        "model.pos.base=500",
        "data.path=some/file.txt",
    ):
        apply_override(cfg, a)
    assert cfg.model.heads == 4 and cfg.train.lr == 1e-3 and cfg.train.compile is True
    assert cfg.model.kv_heads is None and cfg.data.path == "some/file.txt"
    assert cfg.model.pos == Choice("sinusoidal", base=500)


@pytest.mark.parametrize(
    "assignment, message",
    [
        (
            "model.haeds=8",
            "unknown key 'model.haeds'; valid keys: arch, vocab_size, dim, layers, heads",
        ),
        ("modle.heads=8", "unknown key 'modle'; valid keys: model, data, train, sample"),
        ("model.heads=eight", "model.heads: expected int, got 'eight'"),
        ("train.compile=maybe", "expected true or false"),
        ("model.heads", "must look like key=value"),
        ("model=3", "is a section"),
    ],
)
def test_bad_overrides_are_rejected_with_the_valid_choices(assignment, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_override(presets.tiny(), assignment)


def test_yaml_and_toml_files_overlay_the_preset(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model:\n  dim: 48\n  pos: {kind: sinusoidal, base: 100}\ntrain:\n  steps: 7\n")
    t = tmp_path / "c.toml"
    t.write_text(
        "[model]\ndim = 48\n[model.pos]\nkind = 'sinusoidal'\nbase = 100\n[train]\nsteps = 7\n"
    )
    for path in (y, t):
        cfg = merge_into(presets.tiny(), load_file(path))
        assert cfg.model.dim == 48 and cfg.train.steps == 7 and cfg.model.heads == 2
        assert cfg.model.pos == Choice("sinusoidal", base=100)


def test_file_with_unknown_key_is_rejected(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  stepz: 7\n")
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        merge_into(presets.tiny(), load_file(y))


def test_config_round_trips_through_plain_data():
    cfg = presets.default()
    assert to_dict(from_dict(RunConfig, to_dict(cfg))) == to_dict(cfg)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid presets: default, tiny"):
        presets.get("huge")
