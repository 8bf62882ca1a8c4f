"""The package's error policy, shared by the command line and the page (`unetkit serve`): which exceptions
mean bad input rather than a bug, and the one line that reports one (moved here from `unetkit.cli.main`)."""

from __future__ import annotations

from unetkit._options import shorten

__all__ = ["USER_ERRORS", "one_line"]

# the exceptions that mean bad input, not a bug: reported in one line (the CLI: exit status 2)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    OSError,  # the machine: a full disk, a quota, a read-only folder (`unetkit._fs.WriteError` names the file)
    ImportError,  # a missing optional dependency: the message says what to install
)


def one_line(err: BaseException) -> str:
    """The first line of the message (at most `MAX_LINE` characters); an `OSError` from the system as
    `FILE: reason` without `[Errno N]`."""
    if isinstance(err, OSError) and type(err).__str__ is OSError.__str__ and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
        if err.filename2 is not None:
            text += f" (and {err.filename2})"
    else:
        text = str(err).strip()
    return shorten(text.splitlines()[0]) if text else type(err).__name__
