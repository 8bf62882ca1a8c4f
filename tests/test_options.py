"""`unetkit._options`: close matches and bounded quoting of user values."""

from __future__ import annotations

import pytest

from unetkit._options import MAX_LINE, close_matches, look_up_option, quote, shorten


def test_quote_is_repr_for_small_values_and_bounded_for_huge_ones():
    assert quote("adamm") == "'adamm'"
    assert quote([1, 2]) == "[1, 2]"
    assert len(quote("x" * 10**6)) <= 80
    deep: list = []
    for _ in range(10_000):  # repr() of this would recurse 10,000 levels
        deep = [deep]
    assert quote(deep) == "[[[[...]]]]"
    assert quote(list(range(10**5))) == "[0, 1, 2, 3, 4, 5, ...]"


def test_shorten_says_how_much_it_left_out():
    assert shorten("abc") == "abc"
    assert shorten("x" * (MAX_LINE + 5)) == "x" * MAX_LINE + "... (5 more characters)"


def test_no_close_match_is_searched_for_a_huge_value():
    assert close_matches("adamm", ["adam", "sgd"]) == ["adam"]
    assert close_matches("adam" * 100, ["adam"]) == []
    with pytest.raises(ValueError, match=r"got 'x+\.\.\.x+'$"):
        look_up_option("optimizer", "x" * 10**6, ["adam"])
