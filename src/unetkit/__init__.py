"""unetkit: U-Net segmentation and image-to-image models, training, tiled prediction and evaluation."""

from unetkit.infer import predict, predict_labels
from unetkit.metrics import evaluate
from unetkit.models import create_model, list_models
from unetkit.models.checkpoint import load_model, save_model
from unetkit.train import TrainConfig, train
from unetkit.version import __version__

__all__ = [
    "TrainConfig",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load_model",
    "predict",
    "predict_labels",
    "save_model",
    "train",
]
