"""Optional dependencies: `MissingDependency` is the one `ImportError` that means "install this", raised by
unetkit itself with the package and the extra to install; the CLI reports it in one line (exit status 2).
Any other `ImportError` under a command is a bug and is shown as one."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "require"]


class MissingDependency(ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


def require(module: str, install: str, feature: str) -> ModuleType:
    """Import `module`, or raise `MissingDependency` naming it, the `feature` that needs it and `install`.

    Args:
        module: the import name, e.g. `"onnxruntime"`.
        install: the command that installs it, e.g. `"pip install 'unetkit[export]'"`.
        feature: what needs it, e.g. `"exporting and running exported models"`.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependency(f"{module} is not installed; {feature} need it: {install}") from err
