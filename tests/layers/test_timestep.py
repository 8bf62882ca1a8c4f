"""Sinusoidal timestep features and the embedding MLP."""

import math

import pytest
import torch

from unetkit.layers import TimeProjection, TimestepEmbedding, as_timesteps, sinusoidal_embedding


def test_sinusoidal_features_by_hand():
    emb = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 4)  # frequencies 1 and 10000**-0.5
    assert emb.shape == (2, 4)
    torch.testing.assert_close(emb[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    w = 10_000**-0.5
    torch.testing.assert_close(emb[1], torch.tensor([math.sin(2), math.sin(2 * w), math.cos(2), math.cos(2 * w)]))
    assert sinusoidal_embedding(torch.tensor([3.0]), 5).shape == (1, 5)  # odd widths are zero-padded


def test_embedding_and_projection_shapes():
    embed = TimestepEmbedding(8)
    out = embed(torch.tensor([1.0, 500.0]))
    assert out.shape == (2, 32) and embed.out_dim == 32
    assert TimeProjection(32, 6)(out).shape == (2, 6, 1, 1)
    with pytest.raises(ValueError, match="`time_embedding` must be an integer >= 2"):
        TimestepEmbedding(1)


def test_timesteps_broadcast_and_check():
    assert as_timesteps(3, 4, torch.device("cpu")).tolist() == [3.0] * 4
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        as_timesteps(torch.ones(3), 4, torch.device("cpu"))
    with pytest.raises(ValueError, match="call it as model"):
        as_timesteps(None, 4, torch.device("cpu"))
