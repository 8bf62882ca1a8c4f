"""The tiling engine: identity, the paper's seamless overlap-tile, blended tiles of padded models, TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unetkit import create_model, predict
from unetkit.infer import BLEND_MODES, Predictor, plan_starts, plan_tiles
from unetkit.infer.tiling import reflect_indices
from unetkit.models.inference import forward_whole, mirror_pad


class Twice(nn.Module):
    """A predictor whose right answer is known everywhere: `2 * x`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


@pytest.mark.parametrize("blend", BLEND_MODES)
@pytest.mark.parametrize(("shape", "tile"), [((1, 37, 53), 16), ((3, 100, 7), 24), ((2, 45, 61), 500), ((1, 5, 5), 2)])
def test_identity_comes_back_unchanged(blend, shape, tile):
    x = torch.rand(*shape)
    for overlap in (0.0, 0.25, 0.6):
        y = predict(Twice(), x, tile=tile, blend=blend, overlap=overlap, activation="none", batch_size=3)
        assert y.shape == shape
        np.testing.assert_allclose(y, 2 * x.numpy(), rtol=1e-6, atol=0)  # float rounding of the weighted mean


def test_plan_ends_on_the_edge_and_covers_everything():
    assert plan_starts(100, 40, 30) == [0, 30, 60]
    assert plan_starts(100, 40, 40) == [0, 40, 60]
    assert plan_starts(30, 40, 10) == [0]
    plan = plan_tiles(301, 77, tile=64, overlap=0.25)
    assert plan.ys[-1] + plan.tile_h == 301 and plan.xs[-1] + plan.tile_w == 77
    with pytest.raises(ValueError, match=r"`overlap` must be in \[0, 1\), got 1.0"):
        plan_tiles(10, 10, tile=4, overlap=1.0)
    with pytest.raises(ValueError, match=r"`overlap` must be in \[0, 1\), got -0.1"):
        plan_tiles(10, 10, tile=4, overlap=-0.1)


def test_reflect_indices_match_mirror_padding():
    x = torch.arange(7.0)[None, None, None]
    for pad in (1, 6, 13, 20):
        ref = mirror_pad(x, (pad, pad, 0, 0))[0, 0, 0].long().numpy()
        assert reflect_indices(-pad, 7 + pad, 7).tolist() == ref.tolist()
    assert reflect_indices(-3, 4, 1).tolist() == [0] * 7


def test_classic_overlap_tile_equals_the_whole_mirror_padded_image():
    torch.manual_seed(0)
    model = create_model("unet_classic", base_channels=8).eval()
    x = torch.rand(1, 333, 517)  # 4 x 6 output tiles of 100 -> 100 is raised to the legal 100 (4 + 16 k)
    tiled = predict(model, x, tile=100, activation="none", batch_size=5)
    with torch.no_grad():
        whole = forward_whole(model, x[None])[0].numpy()
    assert tiled.shape == (2, 333, 517)
    assert np.abs(tiled - whole).max() < 1e-4


def test_classic_tiles_start_on_the_pooling_grid():
    model = create_model("unet_classic", base_channels=4)
    pred = Predictor(model)
    plan = plan_tiles(1000, 1000, tile=388, overlap=0.0, margin=pred.margin, legal_output=pred.legal_output, align=16)
    assert plan.tile_h == 388 and plan.margin == 92
    assert all(y % 16 == 0 for y in plan.ys) and plan.ys[-1] + 388 >= 1000


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory):
    """A small `unet` trained for a few seconds on synthetic cells: its labels mean something."""
    from unetkit import TrainConfig, load_model, train

    run = tmp_path_factory.mktemp("unet") / "run"
    config = TrainConfig(
        data="synthetic:cells",
        out=str(run),
        model="unet",
        model_options={"base_channels": 8, "depth": 3},
        epochs=5,  # confident labels: 3 epochs left 0.3% of the pixels near 0.5, where tiles may differ
        batch_size=8,
        patch_size=64,
        synthetic_train=16,
        synthetic_val=2,
        synthetic_size=96,
        lr=3e-3,
        threads=2,
        samples=0,
    )
    train(config)
    return load_model(run)


def test_padded_unet_tiled_labels_agree_with_untiled(trained_unet):
    from unetkit.data.synthetic import make_synthetic

    data, _ = make_synthetic("cells", 1, 320, seed=7)
    image = torch.from_numpy(data.images[0])
    tiled = predict(trained_unet, image, tile=96).argmax(0)  # default overlap 0.25, gaussian blend
    whole = predict(trained_unet, image, tile=320).argmax(0)  # one tile: the untiled forward pass
    agree = (tiled == whole).mean()
    assert agree >= 0.999, agree
    assert 0.05 < whole.mean() < 0.95  # the labels are not trivial


def test_tta_averages_the_eight_transforms(trained_unet):
    image = torch.rand(1, 64, 64)
    pred = Predictor(trained_unet, tta=True)
    with_tta = predict(pred, image, tile=64)
    plain = Predictor(trained_unet)
    manual = []
    for k in range(8):
        x = torch.rot90(image.flip(-1) if k >= 4 else image, k % 4, dims=(-2, -1))
        y = predict(plain, x, tile=64)
        y = torch.rot90(torch.from_numpy(y), -(k % 4), dims=(-2, -1))
        manual.append(y.flip(-1) if k >= 4 else y)
    np.testing.assert_allclose(with_tta, torch.stack(manual).mean(0).numpy(), atol=1e-5)
    twice = predict(Twice(), image, tile=20, tta=True, activation="none")
    np.testing.assert_allclose(twice, 2 * image.numpy(), rtol=1e-6)


def test_probabilities_sum_to_one_and_integer_images_are_scaled(trained_unet):
    image = (np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)
    probs = predict(trained_unet, image, tile=32)
    assert probs.shape == (2, 50, 70)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, predict(trained_unet, image.astype(np.float32) / 255, tile=32), atol=1e-5)


def test_bad_arguments_name_themselves(trained_unet):
    with pytest.raises(ValueError, match="has 3 channels, the model expects 1"):
        predict(trained_unet, np.zeros((3, 40, 40), np.float32))
    with pytest.raises(ValueError, match="`tile` 4 is smaller than the model's smallest tile"):
        predict(trained_unet, np.zeros((40, 40), np.float32), tile=4)
    with pytest.raises(ValueError, match=r"`overlap` must be in \[0, 1\)"):
        predict(trained_unet, np.zeros((40, 40), np.float32), overlap=1.5)
    with pytest.raises(ValueError, match="`blend` must be one of"):
        predict(trained_unet, np.zeros((40, 40), np.float32), blend="median")
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict(trained_unet, np.full((40, 40), np.nan, np.float32))
    classic = create_model("unet_classic", base_channels=4)
    with pytest.raises(ValueError, match="smallest output tile, 4"):
        predict(classic, np.zeros((40, 40), np.float32), tile=3)


class Counting(nn.Module):
    """An elementwise predictor (each tile's output independent of its batch) that records the batch sizes
    it gets and the torch threads it runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        self.threads.append(torch.get_num_threads())
        return torch.sigmoid(3 * x - 1)


@pytest.mark.parametrize("blend", BLEND_MODES)
def test_batches_run_across_bands_with_the_same_result_for_every_batch_size(blend):
    """3 tiles per row and batch 4: full batches of 4 across band boundaries, not 3 + 1 forward passes per
    row, and the same bits whatever the batch size (tiles are added in the same order)."""
    x = torch.rand(1, 70, 50)
    plan = plan_tiles(70, 50, tile=24, overlap=0.25, blend=blend)
    assert (len(plan.ys), len(plan.xs)) == (4, 3)
    results = {}
    for batch_size in (1, 3, 4, 5, 12, 13):
        model = Counting()
        results[batch_size] = predict(model, x, tile=24, blend=blend, activation="none", batch_size=batch_size)
        full, rest = divmod(plan.num_tiles, batch_size)
        assert model.batches == [batch_size] * full + [rest] * (rest > 0)
    for batch_size, y in results.items():
        np.testing.assert_array_equal(y, results[1], err_msg=f"batch size {batch_size}")
    np.testing.assert_allclose(results[4], torch.sigmoid(3 * x - 1).numpy(), rtol=1e-6, atol=0)


def test_the_predictor_gets_the_callers_threads_and_they_are_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = Counting()
        predict(model, torch.rand(1, 40, 40), tile=16, activation="none", batch_size=2)
        assert model.threads and set(model.threads) == {2}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
