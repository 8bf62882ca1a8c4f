"""Data: image IO, folder datasets, synthetic generators, batch augmentation, weight maps."""

from unetkit.data.errors import DataError
from unetkit.data.io import read_image, write_image
from unetkit.data.types import MaskInfo, SegmentationSet

__all__ = ["DataError", "MaskInfo", "SegmentationSet", "read_image", "write_image"]
