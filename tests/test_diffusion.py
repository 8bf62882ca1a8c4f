"""Noise schedules and the DDPM / DDIM samplers: shapes, endpoints, monotonicity, seeded determinism."""

import math

import pytest
import torch
from torch import nn

import unetkit
from unetkit.diffusion import NoiseSchedule, cosine_betas, linear_betas, sample, timestep_subset


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 1000])
def test_alphas_cumprod_decrease_from_near_one_to_near_zero(name, steps):
    schedule = NoiseSchedule.make(name, steps)
    abar = schedule.alphas_cumprod
    assert abar.shape == (steps,) and schedule.steps == steps
    assert (abar[1:] < abar[:-1]).all()
    assert 0.9 < abar[0] < 1 and 0 < abar[-1] < 1e-3
    assert ((schedule.betas > 0) & (schedule.betas < 1)).all()


def test_linear_schedule_is_ho_et_al_at_1000_steps():
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    # abar_T of Ho et al.'s schedule: about 4.04e-5
    assert torch.cumprod(1 - betas, 0)[-1].item() == pytest.approx(4.04e-5, rel=0.01)


def test_cosine_schedule_endpoints_follow_nichol_and_dhariwal():
    steps, s = 1000, 0.008
    betas = cosine_betas(steps)
    abar = torch.cumprod(1 - betas, 0)

    def f(t: float) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    # abar(t) = f(t) / f(0), evaluated at t = 1 and t = T / 2 (before the 0.999 clip matters)
    assert abar[0].item() == pytest.approx(f(1) / f(0), rel=1e-9)
    assert abar[steps // 2 - 1].item() == pytest.approx(f(steps // 2) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)  # the clip at the end
    assert abar[-1].item() < 1e-8


def test_unknown_schedule_has_a_close_match():
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        NoiseSchedule.make("cosin", 100)


def test_q_sample_and_predict_x0_invert_each_other():
    schedule = NoiseSchedule.make("cosine", 100)
    x0, eps = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 50, 99])
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.predict_x0(x_t, t, eps), x0, atol=1e-3, rtol=1e-3)


def test_timestep_subset_is_descending_and_ends_at_the_last_step():
    assert timestep_subset(1000, 1000) == list(range(999, -1, -1))
    picked = timestep_subset(1000, 50)
    assert len(picked) == 50 and picked[0] == 999 and picked[-1] == 0 and picked == sorted(picked, reverse=True)
    with pytest.raises(ValueError, match="`steps` must be an integer in"):
        timestep_subset(10, 11)


class _ZeroNoise(nn.Module):
    """Predicts no noise: DDIM (eta 0) then returns the clipped starting noise itself."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_ddim_with_a_zero_noise_model_returns_the_clipped_start():
    schedule = NoiseSchedule.make("linear", 20)
    drawn = sample(_ZeroNoise(), schedule, 3, (1, 4, 4), sampler="ddim", seed=5)
    start = torch.randn((3, 1, 4, 4), generator=torch.Generator().manual_seed(5))
    abar_last = schedule.alphas_cumprod[-1].item()
    expected = ((start / math.sqrt(abar_last)).clamp(-1, 1) + 1) / 2  # x0 at the first step, kept after
    torch.testing.assert_close(drawn.images, expected)


@pytest.fixture(scope="module", params=["basic_unet", "ddpm_unet"])
def tiny_model(request) -> nn.Module:
    torch.manual_seed(0)
    model = unetkit.create_model(request.param, channels=[4, 8], time_embedding=8).eval()
    with torch.no_grad():  # as after training: DDPM's zero-initialised last convs would predict zero noise
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_sampling_is_deterministic_under_a_seed(tiny_model, sampler, eta):
    schedule = NoiseSchedule.make("linear", 30)
    kwargs = dict(sampler=sampler, steps=10, eta=eta, batch_size=3)
    a = sample(tiny_model, schedule, 5, (1, 12, 12), seed=7, **kwargs)
    b = sample(tiny_model, schedule, 5, (1, 12, 12), seed=7, **kwargs)
    c = sample(tiny_model, schedule, 5, (1, 12, 12), seed=8, **kwargs)
    assert a.images.shape == (5, 1, 12, 12)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_sampling_records_the_refinement_steps(tiny_model):
    schedule = NoiseSchedule.make("cosine", 40)
    drawn = sample(tiny_model, schedule, 2, (1, 8, 8), sampler="ddpm", record=4)
    assert drawn.timesteps == [39, 26, 13, 0]
    assert len(drawn.frames) == len(drawn.predicted) == 4 and drawn.frames[0].shape == (2, 1, 8, 8)


def test_sampling_refuses_bad_arguments(tiny_model):
    schedule = NoiseSchedule.make("linear", 10)
    with pytest.raises(ValueError, match="`sampler` must be one of"):
        sample(tiny_model, schedule, 1, (1, 8, 8), sampler="dpm")
    with pytest.raises(ValueError, match="`n` must be"):
        sample(tiny_model, schedule, 0, (1, 8, 8))
