"""The config per task: common fields plus each task's options; a field the chosen task does not use is an error
naming the field and the task; `validate()` checks and changes nothing; enum spellings are canonicalised when a
config is parsed; model options are typed by the model's own defaults; constructor bugs stay bugs."""

from __future__ import annotations

import dataclasses

import pytest

from unetkit.train.config import TASK_FIELDS, TASKS, TrainConfig, config_from_dict
from unetkit.train.tasks import TASK_CLASSES


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ema_decay": 5}, r"`ema_decay` must be a finite number in \[0, 1\), got 5"),
        ({"task": "denoise", "weight_map": True}, "`weight_map` is not used by task 'denoise' .*segmentation"),
        ({"noise_amount": 0.5}, "`noise_amount` is not used by task 'segmentation' .*denoise"),
        ({"task": "superres", "noise_type": "gaussian"}, "`noise_type` is not used by task 'superres'"),
        ({"task": "denoise", "time_embedding": 16}, "`time_embedding` is not used by task 'denoise'"),
        ({"task": "diffusion", "augment": {"enabled": False}}, "`augment` is not used by task 'diffusion'"),
        ({"task": "denoising"}, "`task` must be one of .* did you mean 'denoise'"),
        ({"task": "denoise", "digits_size": 30}, "`digits_size` must be one of"),
        ({"task": "denoise", "loss": "bce"}, "`loss` must be one of 'auto', 'mse', 'l1' for task 'denoise'"),
        ({"task": "denoise", "noise_amount": 0}, r"`noise_amount` must be in \(0, 1\]"),
        ({"task": "denoise", "noise_type": "salt"}, "`noise_type` must be one of 'uniform', 'gaussian'"),
        ({"task": "diffusion", "beta_schedule": "cosin"}, "did you mean 'cosine'"),
        ({"task": "diffusion", "monitor": "psnr"}, "`monitor` must be one of 'auto', 'loss' for task 'diffusion'"),
        ({"task": "diffusion", "sample_steps": 2000}, "`sample_steps` must be <="),
        ({"monitor": "psnr"}, "`monitor` must be one of 'auto', 'dice', 'iou', 'loss' for task 'segmentation'"),
        ({"loss": "mse"}, "`loss` must be one of .* for task 'segmentation', got 'mse'"),
        ({"grad_checkpointing": "yes"}, "`grad_checkpointing` must be true or false"),
        ({"timesteps": 10}, "unknown key 'timesteps'; did you mean 'diffusion_steps'"),
        (
            {"model_options": {"keep_prob": "high"}, "model": "sa_unet"},
            "option 'keep_prob' of 'sa_unet' must be a number",
        ),
        ({"model_options": {"num_classes": True}}, "option 'num_classes' of 'unet' must be an integer, got True"),
        ({"model_options": {"channels": 6}, "model": "basic_unet"}, "option 'channels' of 'basic_unet' must be a list"),
        ({"model_options": {"depth": 0}}, "`model_options` for 'unet': `depth` must be an integer >= 1"),
        (
            {"model_options": {"pool": [[2, 2, "1"]], "spatial_dims": 3}},
            "option 'pool' of 'unet' must be an integer or lists of integers",
        ),
    ],
)
def test_a_bad_or_foreign_field_is_refused_naming_it(changes, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(changes)


def test_per_level_kernels_and_pools_of_a_3d_plan_are_accepted():
    # nnU-Net's plan for thick slices (spacing 0.6 x 0.6 x 5 mm): in-plane only for the first two levels
    options = {"spatial_dims": 3, "depth": 3, "kernel_size": [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3]]}
    options["pool"] = [[2, 2, 1], [2, 2, 1], [2, 2, 2]]
    config_from_dict({"model_options": options, "patch_size": [64, 64, 8]})
    with pytest.raises(ValueError, match=r"`model_options` for 'unet': .*pool"):  # the constructor's shape check
        config_from_dict({"model_options": {**options, "pool": [[2, 2, 1]]}})


def test_validate_changes_nothing():
    config = TrainConfig(task="denoise", data="photos", monitor="auto", optimizer="adamw")
    before = dataclasses.asdict(config)
    assert config.validate() is config
    assert dataclasses.asdict(config) == before
    with pytest.raises(ValueError, match="`optimizer` must be one of 'adam', 'adamw', 'sgd', got 'AdamW'"):
        TrainConfig(optimizer="AdamW").validate()  # the Python object is checked as given
    assert config_from_dict({"optimizer": "AdamW", "task": "Denoise"}).optimizer == "adamw"  # parsing canonicalises


def test_the_defaults_pass_for_every_task_and_each_task_field_names_real_tasks():
    for task in TASKS:
        TrainConfig(task=task).validate()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for name, tasks in TASK_FIELDS.items():
        assert name in names and set(tasks) <= set(TASKS), name
    assert set(TASK_CLASSES) == set(TASKS)


def test_fields_used_lists_common_and_own_fields():
    seg, den = TrainConfig().fields_used(), TrainConfig(task="denoise").fields_used()
    assert "weight_map" in seg and "noise_amount" not in seg
    assert "noise_amount" in den and "weight_map" not in den and "ema_decay" in den and "patch_size" in den


def test_a_constructor_bug_is_not_reported_as_bad_input(monkeypatch):
    import functools

    from unetkit.models import unet

    @functools.wraps(unet.UNet.__init__)  # the same signature: only the body is broken
    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise TypeError("unsupported operand type(s)")  # a bug inside a model, not the user's option

    monkeypatch.setattr(unet.UNet, "__init__", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        config_from_dict({"model_options": {"base_channels": 8}})
