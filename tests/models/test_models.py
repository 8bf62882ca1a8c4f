"""Every registered model: shapes, finite logits, gradients everywhere, odd and tiny inputs."""

import pytest
import torch
from torch import nn

import unetkit
from unetkit.models import get_model_entry

MODELS = unetkit.list_models()
# narrower widths where the defaults would make the tests below slow on two CPU cores (3D: at least 92^3 voxels)
SMALL = {"unet_classic_3d": {"base_channels": 2}}

# shared/DESIGN.md: the seed figures each model must reproduce at default settings
REFERENCE_PARAMS = {
    ("unet_classic", ()): 31_030_658,
    ("unet", ()): 31_037_698,
    ("unet", (("upsample", "bilinear"),)): 17_263_042,
    ("sa_unet", ()): 483_252,
    ("basic_unet", ()): 309_057,
    ("unet_dense_bottleneck", ()): 234_977,
    ("unet_classic_3d", ()): 19_069_955,  # Çiçek et al. 2016, Sec. 3
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _create(name: str, **options: object) -> nn.Module:
    return unetkit.create_model(name, **{**SMALL.get(name, {}), **options})


def _dims(model: nn.Module) -> int:
    return getattr(model, "spatial_dims", 2)


def _accepts_any_size(model: nn.Module) -> bool:
    return all(model.output_size(n) == n for n in range(1, 40))


def _test_sizes(model: nn.Module) -> list[tuple[int, ...]]:
    dims = _dims(model)
    if _accepts_any_size(model):
        return [(1, 1), (7, 13), (33, 17)] if dims == 2 else [(1, 1, 1), (5, 7, 3)]  # tiny and odd
    smallest = model.valid_input_size(1)
    if model.output_size(smallest) == smallest and hasattr(model, "image_size"):
        return [(smallest, smallest)]  # fixed-size model (dense bottleneck)
    next_legal = model.valid_input_size(smallest + 1)
    return [(smallest,) * dims, (*(smallest,) * (dims - 1), next_legal)]  # cube / square, then not


def _unzero(model: nn.Module) -> nn.Module:
    """Give zero-initialised layers (DDPM's last convs) random weights, as training would: with them at
    zero the output does not depend on the input, which the tests below look for."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def _out_side(model: nn.Module, n: int) -> int:
    return model.output_size(n)


def _small_side(model: nn.Module, n: int = 24) -> int:
    """A small legal input side: `n` for any-size models, else the nearest legal one."""
    if hasattr(model, "image_size"):
        return model.image_size
    return model.valid_input_size(n if _dims(model) == 2 else min(n, 12))


def _small_shape(model: nn.Module, n: int = 24) -> tuple[int, ...]:
    return (_small_side(model, n),) * _dims(model)


@pytest.mark.parametrize(("name", "options"), list(REFERENCE_PARAMS))
def test_parameter_counts_match_the_design(name, options):
    with torch.device("meta"):
        model = unetkit.create_model(name, **dict(options))
    assert _count(model) == REFERENCE_PARAMS[(name, options)]


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_on_odd_and_tiny_inputs(name):
    model = _create(name).train()
    assert isinstance(model.downsample_factor, int) and model.downsample_factor >= 1
    for shape in _test_sizes(model):
        x = torch.randn(2, model.in_channels, *shape)
        y = model(x)
        assert y.shape == (2, model.out_channels, *(_out_side(model, n) for n in shape)), shape
        assert torch.isfinite(y).all()
        model.zero_grad(set_to_none=True)
        y.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"no finite gradient for {missing[:5]} at {shape}"


@pytest.mark.parametrize("name", MODELS)
def test_returns_logits_not_probabilities(name):
    model = _unzero(_create(name)).eval()
    last = list(model.modules())[-1]
    assert not isinstance(last, (nn.Sigmoid, nn.Softmax))
    shape = _small_shape(model, get_model_entry(name).example_size // 4)
    with torch.no_grad():
        y = model(10 * torch.randn(1, model.in_channels, *shape))
    assert y.min() < 0 or y.max() > 1  # unbounded outputs


@pytest.mark.parametrize("name", MODELS)
def test_in_channels_and_classes_are_configurable(name):
    out_key = "num_classes" if "num_classes" in _create(name).model_config else "out_channels"
    model = _create(name, in_channels=5, **{out_key: 3}).eval()
    shape = _small_shape(model, 16)
    with torch.no_grad():
        y = model(torch.randn(1, 5, *shape))
    assert y.shape[1] == 3
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.randn(1, 4, *shape))
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.randn(1, 5, *shape, 4))  # one spatial axis too many


@pytest.mark.parametrize("name", MODELS)
def test_model_config_rebuilds_the_same_model(name):
    model = _create(name)
    again = unetkit.create_model(name, **model.model_config)
    again.load_state_dict(model.state_dict())
    assert model.model_name == name and _count(again) == _count(model)


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_parity(name):
    """Same outputs, gradients and BatchNorm statistics; fewer saved activations."""
    torch.manual_seed(0)
    plain = _create(name).train()
    ckpt = _create(name).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(2, plain.in_channels, *_small_shape(plain))

    def run(model: nn.Module) -> tuple[torch.Tensor, int]:
        saved = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        torch.manual_seed(42)  # same DropBlock masks for both
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = model(x)
        y.square().mean().backward()
        return y, saved[0]

    y_plain, bytes_plain = run(plain)
    y_ckpt, bytes_ckpt = run(ckpt)
    torch.testing.assert_close(y_ckpt, y_plain)
    grads = dict(ckpt.named_parameters())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, msg=n)
    buffers = dict(ckpt.named_buffers())
    for n, b in plain.named_buffers():
        torch.testing.assert_close(buffers[n], b, msg=n)  # BN stats updated once, not twice
    assert bytes_ckpt < 0.6 * bytes_plain, (bytes_ckpt, bytes_plain)


def test_unet_classic_572_to_388_with_23_convs():
    model = unetkit.create_model("unet_classic").eval()
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 23  # 18 3x3 convs, 4 up-convs, the 1x1 head
    assert all(m.padding == (0, 0) for m in convs)
    assert model.output_size(572) == 388 and model.context_margin() == 92
    with torch.inference_mode():
        y = model(torch.randn(1, 1, 572, 572))
    assert y.shape == (1, 2, 388, 388)


def test_unet_classic_illegal_size_names_the_nearest_legal_ones():
    model = unetkit.create_model("unet_classic", base_channels=4)
    assert model.output_size(570) is None
    assert model.valid_input_size(570) == 572
    with pytest.raises(ValueError, match=r"556 \(output 372\) and 572 \(output 388\)"):
        model(torch.randn(1, 1, 570, 572))


def test_unet_any_size_and_bilinear_variant():
    for upsample in ("transpose", "bilinear"):
        model = unetkit.create_model("unet", upsample=upsample, base_channels=8).eval()
        assert model.downsample_factor == 16
        y = model(torch.randn(1, 3, 45, 71))
        assert y.shape == (1, 2, 45, 71)


def test_sa_unet_dropblock_only_in_train_and_attention_in_bottleneck():
    from unetkit.layers import DropBlock2d, SpatialAttention

    model = unetkit.create_model("sa_unet")
    blocks = [m for m in model.modules() if isinstance(m, DropBlock2d)]
    assert len(blocks) == 14 and all(b.block_size == 7 and b.keep_prob == 0.9 for b in blocks)
    attention = [n for n, m in model.named_modules() if isinstance(m, SpatialAttention)]
    assert attention == [f"encoder.stages.{model.depth}.block.4"]  # between the bottleneck's two convs
    x = torch.randn(2, 1, 48, 48)
    model.train()
    assert not torch.equal(model(x), model(x))  # DropBlock draws new masks
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_dense_bottleneck_uses_its_mlp():
    model = unetkit.create_model("unet_dense_bottleneck").eval()
    calls = []
    for m in model.bottleneck:
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        before = model(x)
        model.bottleneck[4].weight.mul_(-1.0)  # the middle Linear
        after = model(x)
    assert len(calls) == 6  # three Linear layers, two passes
    assert not torch.allclose(before, after)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        model(torch.randn(1, 1, 20, 20))


def test_unknown_names_and_options_raise_with_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'unet_clasic'; did you mean 'unet_classic'"):
        unetkit.create_model("unet_clasic")
    with pytest.raises(ValueError, match=r"unknown option 'upsampel'.*did you mean 'upsample'"):
        unetkit.create_model("unet", upsampel="bilinear")
    with pytest.raises(ValueError, match=r"`upsample` must be one of .*did you mean 'bilinear'"):
        unetkit.create_model("unet", upsample="bilinaer")
    with pytest.raises(ValueError, match=r"`norm` must be one of"):
        unetkit.create_model("unet", norm="layer")
    with pytest.raises(ValueError, match="base_channels"):
        unetkit.create_model("unet", base_channels=0)


def test_none_options_keep_defaults_and_registry_rejects_duplicates():
    model = unetkit.create_model("sa_unet", keep_prob=None, depth=None)
    assert model.model_config["keep_prob"] == 0.9 and model.depth == 3
    from unetkit.models import register_model
    from unetkit.models._registry import _REGISTRY

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_model(example_size=8)(lambda: None)  # its __name__ is "<lambda>": register twice
            register_model(example_size=8)(lambda: None)
    finally:
        _REGISTRY.pop("<lambda>", None)  # later tests list every model
    assert unetkit.list_models("unet*") == ["unet", "unet_classic", "unet_classic_3d", "unet_dense_bottleneck"]


TIME_MODELS = [
    ("unet", {"base_channels": 4, "depth": 2, "in_channels": 1, "num_classes": 1}, 20),
    ("basic_unet", {}, 20),
    ("unet_dense_bottleneck", {}, 16),
    ("ddpm_unet", {"channels": [8, 16, 16]}, 12),
]


@pytest.mark.parametrize(("name", "options"), [k for k in REFERENCE_PARAMS])
def test_time_embedding_is_off_by_default_so_the_counts_stay(name, options):
    with torch.device("meta"):
        model = unetkit.create_model(name, **dict(options))
        with_time = unetkit.create_model(name, **dict(options), time_embedding=16)
    assert model.model_config["time_embedding"] == 0
    assert not any("time" in n for n, _ in model.named_parameters())
    assert _count(model) == REFERENCE_PARAMS[(name, options)] < _count(with_time)


@pytest.mark.parametrize(("name", "options", "side"), TIME_MODELS)
def test_time_embedding_changes_the_output_with_t(name, options, side):
    model = _unzero(unetkit.create_model(name, **options, time_embedding=16)).eval()
    x = torch.randn(2, 1, side, side)
    with torch.no_grad():
        early, late = model(x, 0), model(x, torch.tensor([700, 700]))
        mixed = model(x, torch.tensor([0, 700]))
    assert early.shape == (2, 1, side, side)
    assert not torch.allclose(early, late)
    torch.testing.assert_close(mixed[0], early[0])
    torch.testing.assert_close(mixed[1], late[1])
    again = unetkit.create_model(name, **model.model_config)  # the checkpoint round trip rebuilds it
    assert sum(p.numel() for p in again.parameters()) == _count(model)
    # a gradient reaches the embedding MLP through the loss
    model.train()
    model(x, torch.tensor([3, 9])).square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "time" in n)


@pytest.mark.parametrize(("name", "options", "side"), TIME_MODELS)
def test_timesteps_are_required_with_an_embedding_and_refused_without(name, options, side):
    x = torch.randn(1, 1, side, side)
    with pytest.raises(ValueError, match="call it as model"):
        unetkit.create_model(name, **options, time_embedding=8)(x)
    with pytest.raises(ValueError, match="has no timestep embedding"):
        unetkit.create_model(name, **options)(x, 5)


def test_ddpm_unet_has_the_papers_blocks_and_starts_at_zero_noise():
    """Ho et al. 2020 (Appendix B): residual blocks with GroupNorm and the timestep, one more block per level
    on the way up than down, attention in the middle and at the chosen levels, zero-initialised last convs."""
    from unetkit.models.ddpm_unet import ResidualBlock, SelfAttention

    model = unetkit.create_model("ddpm_unet", time_embedding=32)
    kinds = [type(m) for m in model.modules()]
    levels, blocks = 3, 1
    assert kinds.count(ResidualBlock) == levels * blocks + 2 + levels * (blocks + 1)
    assert kinds.count(SelfAttention) == blocks + 1 + (blocks + 1)  # coarsest level down, middle, up
    assert nn.BatchNorm2d not in kinds and nn.GroupNorm in kinds  # per-sample statistics
    assert _count(model) == 731_953  # this configuration, recorded so that a change is noticed
    x = torch.randn(3, 1, 28, 28)
    y = model(x, torch.tensor([0, 500, 999]))
    assert y.shape == x.shape and not y.any()  # predicts zero noise before training
    y.sub(x).square().mean().backward()  # the zero-initialised output conv gets a gradient, and trains
    assert model.head[-1].weight.grad.abs().sum() > 0
    deeper = unetkit.create_model("ddpm_unet", blocks=2, attention=[1, -1])
    assert [type(m) for m in deeper.modules()].count(SelfAttention) == 2 * 2 + 1 + 2 * 3
    shallow = unetkit.create_model("ddpm_unet", channels=[8, 16])  # the default -1 is its level 1
    assert [type(m) for m in shallow.modules()].count(SelfAttention) == 1 + 1 + 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": [16]}, "`channels` must list at least two"),
        ({"blocks": 0}, "`blocks` must be an integer >= 1"),
        ({"attention": [3]}, r"`attention` must list levels in \[-3, 2\]"),
        ({"attention": [-4]}, r"`attention` must list levels in \[-3, 2\]"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
    ],
)
def test_ddpm_unet_refuses_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        unetkit.create_model("ddpm_unet", **options)


def test_ddpm_unet_attention_on_a_cpu_equals_scaled_dot_product_attention():
    """The CPU path (plain matmuls, faster to train there) computes what the fused CUDA path computes."""
    from unetkit.models.ddpm_unet import SelfAttention

    torch.manual_seed(0)
    block = _unzero(SelfAttention(16)).eval()
    x = torch.randn(2, 16, 5, 7)
    q, k, v = block.qkv(block.norm(x)).reshape(2, 3, 16, 35).transpose(-1, -2).unbind(1)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    expected = x + block.proj(fused.transpose(-1, -2).reshape(2, 16, 5, 7))
    torch.testing.assert_close(block(x), expected)
    assert not torch.allclose(block(x), x)
