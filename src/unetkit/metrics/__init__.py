"""Segmentation metrics."""

from unetkit.metrics.pixel import PixelMeter

__all__ = ["PixelMeter"]
