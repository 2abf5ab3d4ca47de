"""Property-based tests (hypothesis) of the parsers users feed by hand: the config files and the
`--set` syntax, and the tokenizers and their files. Whatever the input, the only exception is the
documented one (ConfigError, ValueError naming the file); valid input round-trips.
Examples are bounded (max_examples) so the suite stays fast."""

from __future__ import annotations

import dataclasses
import json
import string

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

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
from tfmr.tokenizers import CharTokenizer
from tfmr.tokenizers import load as load_tokenizer
from tfmr.tokenizers.bpe import BPE

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _paths(cfg=None, prefix=""):
    """Every dotted key of a RunConfig, sections included: model.dim, train.lr, model.pos, ..."""
    cfg = cfg or RunConfig()
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        out.append(key)
        if dataclasses.is_dataclass(value):
            out += _paths(value, key + ".")
        elif isinstance(value, Choice):
            out += [f"{key}.{option}" for option in ("kind", *value.options, "base", "window")]
    return out


KEYS = _paths()
text_no_eq = st.text(max_size=30).filter(lambda s: "=" not in s)


# ----------------------------------------------------------------------------- --set and config files
@SETTINGS
@given(
    key=st.one_of(
        st.sampled_from(KEYS),
        text_no_eq,
        st.builds(lambda k, junk: k + junk, st.sampled_from(KEYS), st.text(max_size=5)),
    ),
    value=st.one_of(
        st.text(max_size=30),
        st.sampled_from(
            [
                "nan",
                "inf",
                "-inf",
                "1e400",
                "-0",
                "none",
                "true",
                "1.5",
                "3",
                "[1, 2]",
                "{kind: x}",
                "",
            ]
        ),
    ),
)
@example(key="model.dim", value="1e400")  # int(inf) once escaped as OverflowError
@example(key="train.steps", value="-inf")
@example(key="model.arch.", value="")  # a key below a plain setting once escaped as TypeError
def test_any_set_assignment_either_applies_or_is_a_config_error(key, value):
    cfg = RunConfig()
    try:
        apply_override(cfg, f"{key}={value}")
    except ConfigError:
        return
    from_dict(RunConfig, to_dict(cfg))  # what was accepted is plain data a checkpoint can store


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_as_an_override_is_applied_or_refused_with_a_config_error(text):
    try:
        apply_override(RunConfig(), text)
    except ConfigError:
        pass


def _field_values():
    """(dotted key, a valid value as the user would type it, the value it must become)."""
    ints = st.integers(min_value=1, max_value=10**6)
    floats = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "model.dim",
                    "model.layers",
                    "model.heads",
                    "model.context",
                    "train.steps",
                    "train.batch_size",
                    "train.seed",
                    "sample.max_new_tokens",
                ]
            ),
            ints,
        ).map(lambda kv: (kv[0], str(kv[1]), kv[1])),
        st.tuples(
            st.sampled_from(
                [
                    "train.lr",
                    "train.weight_decay",
                    "model.init_std",
                    "train.max_minutes",
                    "train.max_memory",
                ]
            ),
            floats,
        ).map(lambda kv: (kv[0], repr(kv[1]), kv[1])),
        st.tuples(
            st.sampled_from(["model.bias", "model.tie_embeddings", "train.compile"]), st.booleans()
        ).map(lambda kv: (kv[0], str(kv[1]).lower(), kv[1])),
        st.tuples(
            st.sampled_from(["sample.prompt", "train.device", "data.path"]),
            st.text(max_size=20).filter(lambda s: s.strip().lower() not in ("none", "null")),
        ).map(lambda kv: (kv[0], kv[1], kv[1])),
        st.tuples(st.sampled_from(["model.pos.base", "model.ffn.mult"]), floats).map(
            lambda kv: (kv[0], repr(kv[1]), kv[1])
        ),
    )


@SETTINGS
@given(st.lists(_field_values(), min_size=1, max_size=6))
def test_valid_assignments_are_read_back_and_round_trip(assignments):
    cfg = RunConfig()
    for key, typed, _ in assignments:
        apply_override(cfg, f"{key}={typed}")
    for key, _, expected in {
        a[0]: a for a in assignments
    }.values():  # the last assignment of each key wins
        *sections, name = key.split(".")
        obj = cfg
        for s in sections:
            obj = getattr(obj, s)
        got = obj.options[name] if isinstance(obj, Choice) else getattr(obj, name)
        assert got == expected and type(got) is type(expected), (key, got, expected)
    again = from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg))))
    assert to_dict(again) == to_dict(cfg)


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".toml", ".json", ".yml"]))
@example(data=b"model:\n  pos: {kind: rope, 1: 2}\n", suffix=".yaml")  # a non-text option name
@example(data=b"\x89PNG\r\n\x1a\n\xff", suffix=".yaml")  # a binary file
@example(data=b"{'model': 1}", suffix=".json")  # invalid JSON
def test_a_config_file_of_any_bytes_is_read_or_refused_with_a_config_error(tmp_path, data, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(data)
    try:
        merge_into(RunConfig(), load_file(path))
    except ConfigError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["model", "data", "train", "sample", "other"]),
        st.dictionaries(
            st.sampled_from(KEYS + ["kind", "x"]).map(lambda k: k.split(".")[-1]),
            json_values,
            max_size=4,
        ),
        max_size=3,
    )
)
def test_any_structure_in_a_config_file_is_merged_or_refused_with_a_config_error(tmp_path, data):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    try:
        merge_into(RunConfig(), load_file(path))
    except ConfigError:
        pass


# ----------------------------------------------------------------------------- tokenizers
@SETTINGS
@given(corpus=st.text(min_size=1, max_size=200), text=st.text(max_size=100))
def test_char_tokenizer_round_trips_text_of_its_own_characters(tmp_path, corpus, text):
    tok = CharTokenizer.train(corpus + text)
    assert tok.decode(tok.encode(text)) == text
    assert all(0 <= i < tok.vocab_size for i in tok.encode(text))
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.chars == tok.chars and again.decode(again.encode(text)) == text


@SETTINGS
@given(corpus=st.text(min_size=1, max_size=100), text=st.text(min_size=1, max_size=50))
def test_char_tokenizer_names_the_characters_it_never_saw(corpus, text):
    unseen = sorted(set(text) - set(corpus))
    assume(unseen)
    tok = CharTokenizer.train(corpus)
    with pytest.raises(ValueError, match="characters not in this tokenizer's vocabulary") as e:
        tok.encode(text)
    assert repr(unseen) in str(e.value)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    corpus=st.lists(st.text(max_size=60), min_size=1, max_size=4).filter(lambda ts: any(ts)),
    text=st.text(max_size=80),
    merges=st.integers(min_value=0, max_value=30),
)
def test_bpe_round_trips_any_text_trained_on_any_text(tmp_path, corpus, text, merges):
    tok = BPE.train(corpus + [text] if text else corpus, 256 + merges)
    assert tok.decode(tok.encode(text)) == text
    other = "".join(reversed(text)) + "☃ unseen \U0001f600"  # byte-level: nothing is unknown
    assert tok.decode(tok.encode(other)) == other
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(text) == tok.encode(text) and again.decode(again.encode(other)) == other


@SETTINGS
@given(st.binary(max_size=300))
@example(b'{"kind": "char"}')  # no characters
@example(b'{"kind": "char", "chars": 5}')
@example(b'{"kind": "char", "chars": ["ab", "c"]}')  # not single characters
@example(b"\xff\xfe")  # not UTF-8
@example(b'{"kind": ["bpe"]}')
def test_a_tokenizer_file_of_any_bytes_loads_or_is_a_value_error_naming_it(tmp_path, data):
    (tmp_path / "tokenizer.json").write_bytes(data)
    try:
        load_tokenizer(tmp_path)
    except ValueError as e:
        assert "tokenizer.json" in str(e)


@SETTINGS
@given(
    kind=st.sampled_from(["char", "bpe", "other", 3]),
    body=st.dictionaries(
        st.sampled_from(["chars", "ranks", "pattern", "pat_str", "special_tokens", "x"]),
        json_values,
        max_size=4,
    ),
)
def test_a_tokenizer_file_of_any_json_loads_or_is_a_value_error_naming_it(tmp_path, kind, body):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"kind": kind, **body}))
    try:
        tok = load_tokenizer(tmp_path)
    except ValueError as e:
        assert "tokenizer.json" in str(e)
        return
    sample = string.ascii_letters if kind == "bpe" else "".join(getattr(tok, "chars", []))
    assert tok.decode(tok.encode(sample)) == sample


# ----------------------------------------------------------------------------- hostile config readers (time-bounded)
HOSTILE_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["32", "2.5", "-1", "1e9", "nan", "*a", "&a x"]),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from(
        ["", "a: &a [x, x]\nb: [*a, *a]\n", "[" * 40, "x: " + "9" * 5000 + "\n"]
    ),
    body=st.text(alphabet="[]{}:,&*-\n 9ax\"'", max_size=200),
    depth=st.integers(0, 3000),
    suffix=st.sampled_from([".yaml", ".json", ".toml"]),
)
def test_a_hostile_config_file_is_read_or_refused_within_the_deadline(
    tmp_path, prefix, body, depth, suffix
):
    """Aliases, deep nesting and huge numbers: read, or one ConfigError, each in under 10 s (the
    first example includes importing the parsers; the others take milliseconds)."""
    import time

    path = tmp_path / f"c{suffix}"
    path.write_text(prefix + "[" * depth + body + "]" * depth)
    start = time.perf_counter()
    try:
        data = load_file(path)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000
        return
    finally:
        assert time.perf_counter() - start < 10
    merged = RunConfig()
    try:
        merge_into(merged, data if isinstance(data, dict) else {})
    except ConfigError:
        pass


GPT2_KEYS = [
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.dictionaries(
        st.sampled_from(GPT2_KEYS),
        st.one_of(
            HOSTILE_LEAVES,
            st.integers(min_value=-5, max_value=10**12),
            st.sampled_from([[1, 2], {"a": 1}, [[[]]], {"n": {"m": None}}]),
        ),
        max_size=4,
    )
)
@example(changes={"vocab_size": 2**63})  # found by CI: torch's overflow message ran on for lines
@example(changes={"n_embd": 2**63})
@example(changes={"n_inner": 2**63})
@example(changes={"n_layer": 2**40})  # a per-layer list of 2**40 kinds filled the memory
@example(changes={"n_layer": 2**31 - 1})  # the largest count: refused by the memory estimate
def test_a_hugging_face_config_of_any_values_is_checked_before_anything_is_built(
    changes, monkeypatch
):
    """Any values in a GPT-2 config.json: a ModelConfig that fits in memory, or one ConfigError,
    in under 10 s (the first example includes importing), and nothing built on the way."""
    import time

    from tfmr import builder
    from tfmr.config import ModelConfig
    from tfmr.interop.hf_folder import config_namespace, model_config

    start = time.perf_counter()
    base = {
        "model_type": "gpt2",
        "vocab_size": 50,
        "n_positions": 16,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
    }
    monkeypatch.setattr(
        builder, "build_uninitialised", lambda cfg: pytest.fail("built before validation")
    )
    try:
        assert isinstance(model_config("gpt2", config_namespace({**base, **changes})), ModelConfig)
    except ConfigError as e:
        assert "\n" not in str(e)
    assert time.perf_counter() - start < 10
