"""Validation helpers shared by the whole package: option look-up with close-match hints.

Follows MONAI's `look_up_option`: a bad value names the argument, the value and the accepted
choices, and suggests the closest ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches", "look_up_option"]


def close_matches(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to `n` entries of `choices` that look like `value`, best first."""
    return difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.5)


def look_up_option(arg_name: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise a `ValueError` that names them.

    Args:
        arg_name: the argument's name, quoted in the error.
        value: the value given by the user (compared case-insensitively).
        choices: the accepted values.
    """
    options = list(choices)
    if isinstance(value, str):
        lowered = value.lower()
        for option in options:
            if option.lower() == lowered:
                return option
    hint = close_matches(str(value), options)
    did_you_mean = f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint else ""
    raise ValueError(f"`{arg_name}` must be one of {', '.join(repr(o) for o in options)}, got {value!r}{did_you_mean}")
