"""The drawing the page shares with the rest of the package (the error colours of the demo's and the run's
overlays): the one place this package imports them from, to repoint when they move to `unetkit.viz`."""

from unetkit.viz import FN, FP, TP, class_colours

__all__ = ["FN", "FP", "TP", "class_colours"]
