"""unetkit: U-Net segmentation and image-to-image models, training, tiled prediction and evaluation."""

from unetkit.models import create_model, list_models
from unetkit.version import __version__

__all__ = ["__version__", "create_model", "list_models"]
