"""Reusable blocks in 2D and 3D (`spatial_dims`): conv blocks, DropBlock, spatial attention, crop/pad
helpers, checkpointing."""

from unetkit.layers.attention import SpatialAttention
from unetkit.layers.checkpoint import GradCheckpointMixin, checkpoint_module
from unetkit.layers.conv import ConvBlock, make_act, make_norm
from unetkit.layers.dims import (
    check_spatial_dims,
    conv_nd,
    conv_transpose_nd,
    max_pool_nd,
    per_axis,
    per_level,
)
from unetkit.layers.dropblock import DropBlock, DropBlock2d, DropBlock3d, drop_block_gamma, make_dropblock
from unetkit.layers.padding import center_crop, pad_to_multiple, unpad
from unetkit.layers.timestep import (
    TimeProjection,
    TimestepEmbedding,
    as_timesteps,
    embed_timesteps,
    sinusoidal_embedding,
)

__all__ = [
    "ConvBlock",
    "DropBlock",
    "DropBlock2d",
    "DropBlock3d",
    "GradCheckpointMixin",
    "SpatialAttention",
    "TimeProjection",
    "TimestepEmbedding",
    "as_timesteps",
    "center_crop",
    "check_spatial_dims",
    "checkpoint_module",
    "conv_nd",
    "conv_transpose_nd",
    "drop_block_gamma",
    "embed_timesteps",
    "make_act",
    "make_dropblock",
    "make_norm",
    "max_pool_nd",
    "pad_to_multiple",
    "per_axis",
    "per_level",
    "sinusoidal_embedding",
    "unpad",
]
