"""The package's error policy, shared by the command line and the page (`unetkit serve`): which exceptions
mean bad input rather than a bug, and the one line that reports one (moved here from `unetkit.cli.main`)."""

from __future__ import annotations

from unetkit._deps import MissingDependency
from unetkit._options import shorten

__all__ = ["BUG_REPORT", "USER_ERRORS", "UserError", "one_line"]


class UserError(Exception):
    """A state the user resolves that is neither a bad value nor the machine (e.g. another process trains in
    the run directory: `unetkit.train.checkpointing.RunLocked`); the message says what to do."""


# the exceptions that mean bad input, not a bug: reported in one line (the CLI: exit status 2). A TypeError, an
# ImportError of ours and the rest are bugs: shown with the traceback and `BUG_REPORT`.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # bad input: a file, a folder, an argument, a config (`DataError` names the file)
    OSError,  # the machine: a full disk, a quota, a read-only folder (`unetkit._fs.WriteError` names the file)
    MissingDependency,  # an optional package is not installed: the message says what to install
    UserError,
)
BUG_REPORT = "this is a bug in unetkit, not a problem with your input; please report it with the traceback above"


def one_line(err: BaseException) -> str:
    """The first line of the message, cut at `MAX_LINE` characters; an `OSError` from the system as
    `FILE: reason` without `[Errno N]`."""
    if isinstance(err, OSError) and type(err).__str__ is OSError.__str__ and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename is not None else err.strerror
        if err.filename2 is not None:
            text += f" (and {err.filename2})"
    else:
        text = str(err).strip()
    return shorten(text.splitlines()[0]) if text else type(err).__name__
