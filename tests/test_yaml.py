"""`unetkit._yaml.safe_load`: PyYAML's SafeLoader without aliases, duplicate keys, deep nesting or size."""

from __future__ import annotations

import pytest
import yaml

from unetkit._yaml import MAX_BYTES, safe_load


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "base: &b {lr: 0.1}\nrun:\n  <<: *b\n",
            r"line 3: YAML aliases \(\*b\) are not accepted",
        ),  # merge keys need one
        ("a: &x 1\nb: *x\n", r"line 2: YAML aliases \(\*x\)"),
        ("a: 1\nb: 2\na: 3\n", r"line 3: key 'a' is given twice \(first at line 1\)"),
        ("1: a\n1.0: b\n", r"line 2: key '1.0' is given twice"),  # equal as Python keys: one would win silently
        ("- {x: 1, x: 2}\n", r"line 1: key 'x' is given twice"),  # flow style, inside a list
        ("!!python/object/apply:os.system ['true']\n", r"malformed YAML at line 1"),  # SafeLoader's refusal
    ],
)
def test_refused(text, message):
    with pytest.raises(ValueError, match=rf"^c\.yaml: {message}"):
        safe_load(text, source="c.yaml")


def test_plain_configs_and_unused_anchors_read_as_safe_load_reads_them():
    text = "epochs: 2\nmodel: &m unet\naugment:\n  elastic: false\nclasses: [0, 255]\n"
    assert safe_load(text, source="c.yaml") == yaml.safe_load(text)
    assert safe_load("", source="c.yaml") is None


def test_the_size_bound_is_on_the_text():
    assert safe_load("# x\n" * (MAX_BYTES // 4), source="c.yaml") is None
    with pytest.raises(ValueError, match="a config may hold at most 1,048,576"):
        safe_load("#" * (MAX_BYTES + 1), source="c.yaml")
