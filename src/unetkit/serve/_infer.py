"""The prediction code the page runs, the very functions behind `unetkit predict`: the one place this package
imports them from (the file readers are private to `unetkit.infer.predictor` until its readers are public)."""

from unetkit.infer.engine import image_pixels, load_for_prediction
from unetkit.infer.predictor import Predictor, predict_file
from unetkit.infer.predictor import _ImageSource as ImageSource
from unetkit.infer.predictor import _tiff_memmap as tiff_memmap

__all__ = ["ImageSource", "Predictor", "image_pixels", "load_for_prediction", "predict_file", "tiff_memmap"]
