"""Reusable blocks: conv blocks, DropBlock, spatial attention, crop/pad helpers, checkpointing."""

from unetkit.layers.attention import SpatialAttention
from unetkit.layers.checkpoint import GradCheckpointMixin, checkpoint_module
from unetkit.layers.conv import ConvBlock, make_act, make_norm
from unetkit.layers.dropblock import DropBlock2d, drop_block_gamma
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
    "DropBlock2d",
    "GradCheckpointMixin",
    "SpatialAttention",
    "TimeProjection",
    "TimestepEmbedding",
    "as_timesteps",
    "center_crop",
    "checkpoint_module",
    "drop_block_gamma",
    "embed_timesteps",
    "make_act",
    "make_norm",
    "pad_to_multiple",
    "sinusoidal_embedding",
    "unpad",
]
