"""Architectures and the registry. Importing this package registers every model."""

from unetkit.models._registry import ModelEntry, create_model, get_model_entry, list_models, register_model
from unetkit.models.basic_unet import BasicUNet
from unetkit.models.ddpm_unet import DDPMUNet
from unetkit.models.dense_bottleneck import DenseBottleneckUNet
from unetkit.models.unet import UNet

__all__ = [
    "BasicUNet",
    "DDPMUNet",
    "DenseBottleneckUNet",
    "ModelEntry",
    "UNet",
    "create_model",
    "get_model_entry",
    "list_models",
    "register_model",
]
