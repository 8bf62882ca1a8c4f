"""The prediction code the page runs, the very functions behind `unetkit predict`: the one place this package
imports them from."""

from unetkit.infer.engine import image_pixels, load_for_prediction
from unetkit.infer.predictor import Predictor, predict_file
from unetkit.infer.readers import open_source

__all__ = ["Predictor", "image_pixels", "load_for_prediction", "open_source", "predict_file"]
