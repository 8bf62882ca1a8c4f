"""Validation helpers shared by the whole package: option look-up with close-match hints, and bounded
quoting of user values in messages.

Follows MONAI's `look_up_option`: a bad value names the argument, the value and the accepted
choices, and suggests the closest ones. `quote` is how a message shows a value the user gave: its
`repr`, built by `reprlib` with bounds, so a huge value (a long string, a deep or wide structure) costs
no more than `MAX_QUOTED` characters to show; `shorten` bounds a whole message line.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

__all__ = ["MAX_LINE", "MAX_QUOTED", "close_matches", "look_up_option", "quote", "shorten"]

MAX_QUOTED = 80  # characters of one quoted value
MAX_LINE = 1000  # characters of one error line
_REPR = reprlib.Repr()  # (keyword arguments need Python 3.12)
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = MAX_QUOTED


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """`text`, or its first `limit` characters and how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def quote(value: object) -> str:
    """The `repr` of a user's value for a message, at most about `MAX_QUOTED` characters, however large."""
    return shorten(_REPR.repr(value), MAX_QUOTED)


def close_matches(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to `n` entries of `choices` that look like `value`, best first (none for a value longer
    than `MAX_QUOTED`: no name is that long, and comparing it would cost time)."""
    text = str(value)
    return difflib.get_close_matches(text, list(choices), n=n, cutoff=0.5) if len(text) <= MAX_QUOTED else []


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
    raise ValueError(
        f"`{arg_name}` must be one of {', '.join(repr(o) for o in options)}, got {quote(value)}{did_you_mean}"
    )
