"""What `tfmr presets` says about each preset (issue #28): whole sentences with every figure filled in
(no `{...}` and no constant names such as STEPS_SMALL), figures that agree with the preset's own
config, and one source: docs/g2p.md's preset table quotes the same descriptions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tfmr import presets
from tfmr.cli import main  # noqa: F401 (every task's presets registered, as the command has them)

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"[{}]|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")  # {x}, STEPS_SMALL, ...


def listing(capsys) -> dict[str, str]:
    """name -> the description column of `tfmr presets`."""
    assert main(["presets"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        name, command, rest = re.match(r"(\S+)\s+(tfmr [^ ]+(?: [^ ]+)?)\s+(.*)$", line).groups()
        rows[name] = rest
    return rows


def test_the_listing_prints_each_description_whole(capsys):
    rows = listing(capsys)
    assert list(rows) == list(presets.PRESETS)
    for name, text in rows.items():
        assert text == presets.describe(name)


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_a_description_is_one_whole_sentence_with_nothing_left_to_fill(name):
    text = presets.describe(name)
    assert not PLACEHOLDER.search(text), f"{name}: {text}"
    assert text.endswith("."), f"{name}: cut mid-sentence? {text!r}"
    assert text.count("(") == text.count(")") and text.count("`") % 2 == 0, text


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_a_descriptions_figures_are_its_configs(name):
    """`N steps` is train.steps (not `every N steps`); `A+B layers of width D` is the encoder's and
    the decoder's layers and model.dim."""
    cfg = presets.PRESETS[name][1]()
    text = presets.describe(name)
    for steps in re.findall(r"(?<!every )\b(\d[\d,]*) steps\b", text):
        assert int(steps.replace(",", "")) == cfg.train.steps, f"{name}: {text}"
    for enc, dec, dim in re.findall(r"\b(\d+)\+(\d+) layers of width (\d+)", text):
        m = cfg.model
        assert (int(enc), int(dec), int(dim)) == (m.encoder_layers, m.layers, m.dim), name


def test_placeholders_would_be_caught():
    assert PLACEHOLDER.search("a small G2P Transformer, STEPS_SMALL steps")
    assert PLACEHOLDER.search("{steps} steps")
    assert not PLACEHOLDER.search("G2P on CMUdict, 1,800 steps (fp32, MoE, RoPE, GQA).")


def test_docs_g2p_preset_table_quotes_the_listing():
    doc = (ROOT / "docs" / "g2p.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w-]+)` \| (.+?) \| .+ \|$", doc, re.M)
    table = {name: text for name, text in rows if name in presets.PRESETS}
    assert {"g2p-tiny", "g2p-small", "g2p-base", "g2p-long"} <= set(table)
    for name, text in table.items():
        assert text == presets.describe(name), name


def test_g2p_base_says_the_duration_docs_g2p_measured():
    """g2p-base's minutes (its description, hence the listing and the docs' table) are those of
    its run that shipped before g2p-long, as docs/g2p.md's "The shipped model" measured them."""
    doc = (ROOT / "docs" / "g2p.md").read_text(encoding="utf-8")
    measured = float(re.search(r"8,000 steps, ([\d.]+) min in one sitting", doc).group(1))
    said = int(re.search(r"about (\d+) minutes", presets.describe("g2p-base")).group(1))
    assert said == round(measured)
