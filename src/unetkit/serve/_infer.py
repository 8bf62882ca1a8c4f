"""The prediction code the page runs, the very functions behind `unetkit predict`: the one place this package
imports them from."""

from unetkit.export import prediction_model
from unetkit.infer.engine import image_pixels
from unetkit.infer.files import predict_file
from unetkit.infer.memory import return_freed_memory, trim_heap
from unetkit.infer.predictor import Predictor
from unetkit.infer.readers import open_source

__all__ = [
    "Predictor",
    "image_pixels",
    "open_source",
    "predict_file",
    "prediction_model",
    "return_freed_memory",
    "trim_heap",
]
