"""The self-configuring plan: rules on a fingerprint, overrides kept, the saved config re-creates the run;
the BCE stall's causes: BatchNorm statistics in the first epoch and the head's starting offset."""

import numpy as np
import pytest
import torch

from unetkit.models import create_model
from unetkit.train.config import TrainConfig
from unetkit.train.plan import MIN_EDGE, MIN_EDGE_3D, PATCH_VOXELS, make_plan, volume_patch, volume_pools


def _fingerprint(mode="instances", classes=2, touching=0.6, size=(190, 174)):
    return {
        "sizes": {"height": [150, size[0], 212], "width": [150, size[1], 212]},
        "counts": {"train": 19, "val": 5, "test": 0},
        "channels": 1,
        "mask": {"mode": mode, "num_classes": classes, "label_values": list(range(classes)), "reason": "r"},
        "objects": {"touching": touching},
        "normalization": {"scheme": "image", "reason": "per image"},
    }


def test_rules_pick_patch_depth_loss_and_instances():
    config = TrainConfig(data="DIR", device="cpu", time_budget="1m").validate()
    planned, _ = make_plan(config, _fingerprint(), given=set(), measure=False)
    assert planned.patch_size == 128  # the median 174 capped at 128 on a CPU, a multiple of 2**depth
    depth = planned.model_options["depth"]
    assert planned.patch_size // 2**depth >= MIN_EDGE and depth == 4
    assert (planned.loss, planned.out_channels) == ("dice_ce", 2)
    assert planned.separation == "distance" and planned.tune_instances  # touching instances: the distance output
    assert not planned.weight_map  # ... and no border weight map beside it
    mask_only = TrainConfig(data="DIR", device="cpu", time_budget="1m", separation="none").validate()
    alone, _ = make_plan(mask_only, _fingerprint(), given={"separation"}, measure=False)
    assert alone.weight_map and alone.separation == "none"  # the mask alone: the paper's weight map
    assert planned.foreground_oversample == pytest.approx(1 / 3, abs=1e-3) and planned.plan == "off"
    classes, _ = make_plan(config, _fingerprint("classes", 4, 0.0, (60, 90)), given=set(), measure=False)
    assert classes.patch_size == 60 and classes.model_options["depth"] == 2  # 60 / 8 = 7 px < 8 at depth 3
    assert (classes.out_channels, classes.weight_map, classes.tune_instances) == (4, False, False)


def test_given_settings_are_kept():
    config = TrainConfig(data="DIR", device="cpu", loss="ce", patch_size=64, batch_size=2).validate()
    planned, plan = make_plan(config, _fingerprint(), given={"loss", "patch_size", "batch_size"}, measure=False)
    assert (planned.loss, planned.patch_size, planned.batch_size) == ("ce", 64, 2)
    assert "loss" not in plan.settings and "patch_size" not in plan.settings


@pytest.fixture
def step_of(monkeypatch):
    """The timed trial replaced by a fixed step time (seconds): the plan's arithmetic, not this machine's speed."""
    from unetkit.train import plan as plan_module

    def fix(seconds: float) -> None:
        monkeypatch.setattr(plan_module, "_trial_seconds", lambda *args, **kwargs: seconds)

    return fix


def test_timed_plan_fills_the_budget(step_of):
    step_of(0.1)
    config = TrainConfig(data="DIR", device="cpu", time_budget="30s", threads=1).validate()
    planned, plan = make_plan(config, _fingerprint(size=(64, 64)), given={"model_options", "threads"}, measure=True)
    assert plan.measured["seconds_per_step"] == 0.1
    steps = planned.epochs * planned.steps_per_epoch
    validation = plan.measured["validation_seconds"] + 1.5  # per epoch, with the overhead
    used = steps * 0.1 + planned.epochs * validation
    assert 0.8 * 30 * 0.85 <= used <= 30 * 0.85  # the training share of the budget, filled
    assert planned.time_budget == "30s"


def test_given_epochs_get_steps_that_fill_the_budget_and_the_budget_is_kept(step_of):
    """`--epochs 30` on a small folder: not 30 passes of one step each, but 30 epochs that fill the budget."""
    step_of(0.05)
    config = TrainConfig(data="DIR", device="cpu", epochs=30, threads=1).validate()
    fingerprint = _fingerprint(size=(128, 128)) | {"counts": {"train": 4, "val": 1, "test": 0}}
    planned, plan = make_plan(config, fingerprint, given={"epochs", "threads"}, measure=True)
    assert planned.epochs == 30 and planned.steps_per_epoch > 1  # one pass over 4 images is 1 step of 8
    assert planned.epochs * planned.steps_per_epoch * 0.05 <= 180 * 0.85  # within the default 3m budget
    assert planned.epochs * planned.steps_per_epoch >= 1000
    assert "--epochs 30 given" in plan.reasons["steps_per_epoch"] and "one pass" in plan.reasons["steps_per_epoch"]
    assert planned.time_budget == "3m"  # the default budget, enforced by the engine
    kept, _ = make_plan(config, fingerprint, given={"epochs", "steps_per_epoch", "threads"}, measure=True)
    assert kept.steps_per_epoch == 0 and kept.time_budget == ""  # steps given: nothing fitted, no budget set


def test_batchnorm_statistics_are_averaged_in_the_first_epoch():
    from unetkit.train.engine import _batchnorm_momentum

    bn = torch.nn.BatchNorm2d(1)
    model = torch.nn.Sequential(bn)
    _batchnorm_momentum(model, None)
    batches = [torch.full((2, 1, 2, 2), float(v)) for v in (4.0, 8.0)]
    for batch in batches:
        model(batch)
    assert bn.running_mean.item() == pytest.approx(6.0)  # the plain average; momentum 0.1 gives 1.16
    _batchnorm_momentum(model, 0.1)
    assert bn.momentum == 0.1


def test_head_starts_at_the_class_prior():
    from unetkit.models import create_model
    from unetkit.train.head_init import class_priors, init_head_to_prior

    torch.manual_seed(1)
    model = create_model("unet", in_channels=1, num_classes=1, base_channels=4, depth=2)
    images = torch.randn(4, 1, 32, 32)
    targets = [torch.from_numpy((np.arange(32 * 32).reshape(32, 32) % 10 == 0).astype(np.int64))]
    priors = class_priors(targets, [torch.ones(32, 32, dtype=torch.bool)], 2)
    assert priors == pytest.approx([0.9, 0.1], abs=0.01)
    buffers = [b.clone() for b in model.buffers()]
    assert init_head_to_prior(model, images, priors, 1)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))  # running stats kept
    with torch.no_grad():
        mean = model(images).mean().item()  # train mode: the batch statistics training sees
    assert mean == pytest.approx(np.log(priors[1] / priors[0]), abs=1e-3)


def test_foreground_oversampling_centres_patches_on_valid_foreground():
    from unetkit.train.data import PatchSampler, TensorSet

    target = torch.zeros(64, 64, dtype=torch.long)
    target[50:52, 5:7] = 1
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[50, 5] = False  # ignored: never a centre, travels as invalid
    data = TensorSet([torch.randn(1, 64, 64)], [target], [valid], None, ["a"])
    sampler = PatchSampler(data, 16, foreground_oversample=1.0)
    batch = sampler.batch([0] * 8, torch.Generator().manual_seed(0))
    assert bool((batch["target"].flatten(1).sum(1) > 0).all())  # every patch holds the foreground
    assert int((~batch["valid"]).sum()) == 8  # the ignored pixel is in every patch, invalid
    uniform = PatchSampler(data, 16).batch([0] * 8, torch.Generator().manual_seed(0))
    assert int((uniform["target"].flatten(1).sum(1) > 0).sum()) < 8


def test_time_budget_parses_durations():
    from unetkit.train.config import parse_duration

    assert [parse_duration(t) for t in ("10m", "90s", "1h30m", "45", "2.5m")] == [600, 90, 5400, 45, 150]
    for bad in ("", "10x", "0s", "abc", "9" * 400 + "h", "1000000000h", "745h"):
        with pytest.raises(ValueError, match="`time_budget` must be"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="`time_budget` must be a duration"):
        TrainConfig(time_budget="soon").validate()


def test_volumes_get_a_patch_shape_shortest_along_the_coarse_axis():
    # 256 x 256 x 40 voxels of 0.5 x 0.5 x 3 mm (thick slices): 128 x 128 x 120 mm
    fingerprint = {**_fingerprint(mode="binary", touching=0.0), "shape": [256, 256, 40], "spacing": [0.5, 0.5, 3.0]}
    config = TrainConfig(data="DIR", device="cpu").validate()
    planned, plan = make_plan(config, fingerprint, given=set(), measure=False)
    patch = planned.patch_size
    assert isinstance(patch, list) and np.prod(patch) <= PATCH_VOXELS["cpu"]
    options = planned.model_options
    pools, kernels = options["pool"], options["kernel_size"]
    assert len(pools) == options["depth"] and len(kernels) == options["depth"] + 1
    factors = [int(np.prod([p[axis] for p in pools])) for axis in range(3)]
    assert all(n % f == 0 and n // f >= MIN_EDGE_3D for n, f in zip(patch, factors, strict=True))
    # nnU-Net's rule for 3 mm slices at 0.5 mm in-plane: in-plane kernels and pooling until the in-plane spacing
    # (0.5 -> 1 -> 2) is within twice the slice spacing, then 3x3x3 kernels and pooling on every axis
    assert kernels[0] == [3, 3, 1] and pools[0] == [2, 2, 1] and kernels[-1] == [3, 3, 3]
    assert factors[0] == factors[1] > factors[2]
    assert "pooling" in plan.reasons["model_options"]
    channels = fingerprint["channels"]
    create_model("unet", **options, in_channels=channels)(
        torch.zeros(1, channels, *patch)
    )  # the planned model runs on the planned patch
    assert patch[2] < patch[0] == patch[1]  # fewer voxels along the 3 mm axis ...
    extent = [n * s for n, s in zip(patch, fingerprint["spacing"], strict=True)]
    assert max(extent) / min(extent) < 2.5  # ... so the patch spans a similar length in mm on every axis
    assert planned.model_options["spatial_dims"] == 3 and planned.batch_size == 2
    assert "coarsest axis" in plan.reasons["patch_size"] and not planned.tune_instances
    # isotropic voxels: a cube from the median shape; a volume smaller than the budget keeps its shape
    cube, kernels, pools = volume_patch([160, 160, 160], [1.0, 1.0, 1.0], 48**3)
    assert cube == [48, 48, 48] and pools == [[2, 2, 2]] * 3 and kernels == [[3, 3, 3]] * 4
    assert volume_patch([24, 24, 16], [1.0, 1.0, 2.0], 48**3) == ([24, 24, 16], [[3, 3, 3]] * 3, [[2, 2, 2]] * 2)
    # isotropic voxels keep the uniform plan: no per-axis options
    iso = {**_fingerprint(mode="binary", touching=0.0), "shape": [160, 160, 160], "spacing": [1.0, 1.0, 1.0]}
    planned, _ = make_plan(config, iso, given=set(), measure=False)
    assert "pool" not in planned.model_options and planned.model_options["depth"] == 3


def test_a_given_patch_or_depth_keeps_uniform_pooling():
    fingerprint = {**_fingerprint(mode="binary", touching=0.0), "shape": [256, 256, 40], "spacing": [0.5, 0.5, 3.0]}
    config = TrainConfig(data="DIR", device="cpu", patch_size=[64, 64, 16]).validate()
    planned, _ = make_plan(config, fingerprint, given={"patch_size"}, measure=False)
    # the per-axis plan is for the planned patch; with the user's patch, the depth every axis of it allows
    assert "pool" not in planned.model_options and planned.model_options["depth"] == 1
    config = TrainConfig(data="DIR", device="cpu", model_options={"depth": 2}).validate()
    planned, _ = make_plan(config, fingerprint, given={"model_options"}, measure=False)
    assert planned.model_options["depth"] == 2 and "pool" not in planned.model_options


def test_volume_pools_let_an_axis_stop_where_it_runs_out_of_voxels():
    # a flat patch of isotropic voxels: the short axis stops pooling at 4 voxels, the others go on (nnU-Net)
    kernels, pools = volume_pools([64, 64, 16], [1.0, 1.0, 1.0])
    assert pools == [[2, 2, 2], [2, 2, 2], [2, 2, 1], [2, 2, 1]] and kernels == [[3, 3, 3]] * 5
    # 5 mm slices at 0.6 mm: kernel 1 along z while its spacing is over twice the in-plane one
    kernels, pools = volume_pools([128, 128, 16], [0.6, 0.6, 5.0])
    assert pools[:3] == [[2, 2, 1]] * 3 and kernels[:3] == [[3, 3, 1]] * 3 and kernels[3] == [3, 3, 3]


def test_model_options_given_for_volumes_still_time_a_3d_step(tmp_path):
    """`-m base_channels=32` on a folder of volumes: the timed trial builds the 3D model (it built a 2-D one and
    crashed with an internal error before)."""
    from tests.train.volumes import make_volume_folder
    from unetkit.cli.main import main

    data = make_volume_folder(tmp_path / "vols", 3)
    argv = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "-m",
        "base_channels=4",
        "--time-budget",
        "5s",
    ]
    assert main(argv) == 0
    plan = (tmp_path / "run" / "plan.json").read_text()
    assert "ms per step measured" in plan
