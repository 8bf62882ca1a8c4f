"""Fuzzing the config parser with hypothesis: random text as a YAML config file, random mappings (known
and unknown keys, values of every YAML type) and random `--set KEY=VALUE` arguments. A config is either
accepted or refused with one `ValueError` line naming the file or the key; nothing else escapes.

The default run tries a few hundred inputs in a few seconds; `pytest -m slow` tries tens of thousands.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from unetkit._options import quote
from unetkit.cli._common import parse_option
from unetkit.train.config import TrainConfig, config_from_dict, load_config

RUNS = [pytest.param(80, id="quick"), pytest.param(5000, id="long", marks=pytest.mark.slow)]
FIELDS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 40),
    st.floats(),
    st.floats(0, 1),
    st.text(max_size=12),
    st.sampled_from(["auto", "adam", "cosine", "bf16", "dice", "unet", "sa_unet", "synthetic:cells", "cpu"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
keys = st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=15))
OPTION_NAMES = ["base_channels", "depth", "norm", "upsample", "keep_prob", "block_size", "in_channels", "padding"]
OPTION_VALUES = st.one_of(
    st.integers(-2, 6), st.floats(-1, 2), st.booleans(), st.none(), st.sampled_from(["batch", "none", "bilinear", "x"])
)
small_options = st.dictionaries(st.sampled_from(OPTION_NAMES), OPTION_VALUES, max_size=3)


def _names_a_key(message: str, mapping: dict[str, Any]) -> bool:
    named = (str(key) in message or repr(key) in message or quote(key) in message for key in mapping)
    return any(named) or "model" in message


def _check_mapping(mapping: dict[Any, Any]) -> None:
    try:
        config = config_from_dict(mapping, source="fuzz.yaml")
    except ValueError as err:
        assert "\n" not in str(err).strip(), err
        assert _names_a_key(str(err), mapping), err
        return
    assert isinstance(config, TrainConfig)
    assert config_from_dict(config.to_dict()).to_dict() == config.to_dict()  # what passed, passes again


@pytest.mark.parametrize("examples", RUNS)
def test_random_mappings(examples):
    @settings(max_examples=examples, **SETTINGS)
    @given(mapping=st.dictionaries(keys, values, max_size=6), options=st.none() | small_options)
    def run(mapping: dict[str, Any], options: dict[str, Any] | None) -> None:
        if options is not None:
            mapping = {**mapping, "model_options": options}
        _check_mapping(mapping)

    run()


@pytest.mark.parametrize("examples", RUNS)
def test_one_bad_field_among_good_ones(examples):
    """A valid config with one field changed: refused naming that field, or accepted."""

    @settings(max_examples=examples, **SETTINGS)
    @given(key=st.sampled_from(sorted(FIELDS)), value=values)
    def run(key: str, value: Any) -> None:
        assume(key != "model_options")  # model options are fuzzed above, with bounded sizes
        try:
            config_from_dict({key: value}, source="fuzz.yaml")
        except ValueError as err:
            assert "\n" not in str(err).strip()
            assert key in str(err) or (key == "model" and "model" in str(err)), err

    run()


@pytest.mark.parametrize("examples", RUNS)
def test_random_yaml_text(examples):
    yamlish = st.text(alphabet=st.sampled_from(list("abc:-[]{}'\"#&*!|>%@`,?\n\t 0123456789.e_")), max_size=80)
    with tempfile.TemporaryDirectory() as folder:

        @settings(max_examples=examples, **SETTINGS)
        @given(text=st.one_of(yamlish, st.text(max_size=80), st.binary(max_size=80)))
        def run(text: str | bytes) -> None:
            path = Path(folder) / "config.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
            try:
                config = load_config(path)
            except ValueError as err:
                assert str(path) in str(err) and "\n" not in str(err).strip(), err
                return
            assert isinstance(config, TrainConfig)

        run()


@pytest.mark.parametrize("examples", RUNS)
def test_random_set_arguments(examples):
    """`--set KEY=VALUE` text: parsed, or refused by argparse's own error type; the parsed pair then goes
    through the config like any other."""

    @settings(max_examples=examples, **SETTINGS)
    @given(text=st.one_of(st.text(max_size=40), st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=30))))
    def run(text: str) -> None:
        try:
            key, value = parse_option(text)
        except argparse.ArgumentTypeError:
            return
        _check_mapping({key: value})

    run()
