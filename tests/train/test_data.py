"""Patch sampling: reproducible from a generator, and for unpadded models the output tiles reach the
image borders (the context beyond them mirrored and never scored)."""

from __future__ import annotations

import numpy as np
import torch

from unetkit.models import create_model
from unetkit.train.data import PatchSampler, TensorSet


def _set(size: int = 20) -> TensorSet:
    image = torch.arange(size * size, dtype=torch.float32).view(1, size, size)
    target = torch.ones(size, size, dtype=torch.long)
    valid = torch.ones(size, size, dtype=torch.bool)
    return TensorSet([image], [target], [valid], None, ["a"])


def test_same_generator_seed_same_batches():
    sampler = PatchSampler(_set(), 8)
    a = sampler.batch([0, 0, 0], torch.Generator().manual_seed(3))
    b = sampler.batch([0, 0, 0], torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["image"].shape == (3, 1, 8, 8)


def test_unpadded_output_tiles_cover_the_borders_with_mirrored_context():
    margin, out = 5, 4
    sampler = PatchSampler(_set(20), out + 2 * margin, margin)
    generator = torch.Generator().manual_seed(0)
    seen = torch.zeros(20, 20, dtype=torch.bool)
    for _ in range(3000):  # the exact corner tile comes up once in 17 * 17 draws
        batch = sampler.batch([0], generator)
        inner = (slice(margin, margin + out), slice(margin, margin + out))
        values = batch["image"][0, 0][inner].long()
        assert batch["valid"][0][inner].all()  # the scored output tile never lies in the mirrored margin
        seen.view(-1)[values.reshape(-1)] = True  # pixel values are their flat indices
    assert seen.all(), "every pixel, corners included, falls inside some output tile"
    # the context around a corner tile is the mirror image, not zeros
    padded = sampler.data.images[0][0]
    assert torch.equal(padded[margin - 1, margin:-margin], padded[margin + 1, margin:-margin])
    assert not sampler.data.valid[0][:margin].any()


def test_trainer_sizes_classic_patches_as_output_tiles():
    model = create_model("unet_classic", base_channels=4)
    margin = model.context_margin()
    assert margin == 92
    patch = model.valid_input_size(128 + 2 * margin)
    assert model.output_size(patch) >= 128


def test_a_share_of_a_batch_holds_the_same_patches_as_the_whole_batch():
    images = [torch.randn(1, s, s + 3) for s in (12, 20, 7)]  # one smaller than the patch: padded
    data = TensorSet(
        images,
        [torch.ones(x.shape[-2:], dtype=torch.long) for x in images],
        [torch.ones(x.shape[-2:], dtype=torch.bool) for x in images],
        None,
        ["a", "b", "c"],
    )
    sampler = PatchSampler(data, 8)
    indices = [2, 0, 1, 1, 0, 2]
    whole = sampler.batch(indices, torch.Generator().manual_seed(1))
    for rows in (slice(0, 3), slice(3, 6), slice(4, 6)):
        part = sampler.batch(indices, torch.Generator().manual_seed(1), rows)
        assert all(torch.equal(part[k], whole[k][rows]) for k in whole)


def test_the_distance_target_is_cropped_and_warped_with_its_mask():
    from unetkit.data.augment import AugmentConfig, augment_batch
    from unetkit.data.normalize import Normalization
    from unetkit.data.scenes import nuclei_scene
    from unetkit.data.types import SegmentationSet
    from unetkit.train.data import PatchSampler, to_tensors

    scene = nuclei_scene((96, 96), seed=3)
    data = SegmentationSet(
        images=[scene.image[None].astype(np.float32)], targets=[(scene.labels > 0).astype(np.int64)], names=["a"],
        instances=[scene.labels],
    )  # fmt: skip
    tensors = to_tensors(data, Normalization("image"), torch.device("cpu"), distance=True)
    assert tensors.distances is not None and tensors.distances[0].shape == (96, 96)
    generator = torch.Generator().manual_seed(0)
    batch = PatchSampler(tensors, 48, foreground_oversample=1.0).batch([0, 0, 0, 0], generator)
    inside = batch["target"] > 0
    assert batch["distance"].shape == (4, 48, 48) and bool(torch.all(batch["distance"][~inside] == 0))
    _, target, extras = augment_batch(batch["image"], batch["target"], config=AugmentConfig(),
                                          generator=generator, extras={"distance": batch["distance"]})  # fmt: skip
    deep = extras["distance"] > 0.5  # interpolated: the deep part of each object stays inside its warped mask
    assert deep.any() and bool(torch.all(target[deep] > 0))
