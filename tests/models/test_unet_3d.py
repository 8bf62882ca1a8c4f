"""The U-Net family in 3D (`spatial_dims=3`): the 3D U-Net of Çiçek et al. 2016 as the paper states it, tiny
odd volumes through every 3D-capable model, anisotropic kernels and pooling, and the per-axis size rules."""

import numpy as np
import pytest
import torch
from torch import nn

import unetkit
from unetkit.layers import DropBlock3d, SpatialAttention
from unetkit.models.inference import context_margins, forward_whole, mirror_pad, output_shape, valid_input_shape


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# every 3D-capable family, narrow and shallow so that a forward and backward pass takes milliseconds
THREE_D = {
    "unet": ("unet", {"spatial_dims": 3, "base_channels": 4, "depth": 2, "in_channels": 2}),
    "unet-bilinear": ("unet", {"spatial_dims": 3, "base_channels": 4, "depth": 2, "upsample": "bilinear"}),
    "sa_unet": ("sa_unet", {"spatial_dims": 3, "base_channels": 4, "depth": 2, "block_size": 3}),
    "unet_classic": ("unet_classic", {"spatial_dims": 3, "base_channels": 2, "depth": 1}),
    "unet_classic_3d": ("unet_classic_3d", {"base_channels": 2, "depth": 2}),
}


def test_unet_classic_3d_has_the_papers_parameters_layers_and_shapes():
    """Çiçek et al. 2016, Sec. 2 and Fig. 1: 19,069,955 parameters, 132x132x116 -> 44x44x28."""
    with torch.device("meta"):
        model = unetkit.create_model("unet_classic_3d")
        y = model(torch.empty(1, 3, 132, 132, 116))
    assert _count(model) == 19_069_955
    assert y.shape == (1, 3, 44, 44, 28)
    assert model.output_shape((132, 132, 116)) == (44, 44, 28)
    assert model.context_margins() == (44, 44, 44) and model.context_margin() == 44
    assert model.valid_input_size(116) == 116 and model.valid_input_size(117) == 124  # legal sides step by 8
    assert model.downsample_factor == 8
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    # 14 unpadded 3x3x3 convs and the 1x1x1 head; doubling before each pool: 32 -> 64, 64 -> 128, ...
    assert [m.out_channels for m in convs] == [32, 64, 64, 128, 128, 256, 256, 512, 256, 256, 128, 128, 64, 64, 3]
    assert all(m.padding == (0, 0, 0) and m.bias is not None for m in convs)
    assert [m.kernel_size for m in convs[:-1]] == [(3, 3, 3)] * 14 and convs[-1].kernel_size == (1, 1, 1)
    # 2x2x2 up-convolutions that keep their channels (Fig. 1: 512 -> 512 concatenated with 256 = 768)
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in ups] == [
        (512, 512, (2, 2, 2), (2, 2, 2)),
        (256, 256, (2, 2, 2), (2, 2, 2)),
        (128, 128, (2, 2, 2), (2, 2, 2)),
    ]
    assert [m.in_channels for m in convs[8::2][:3]] == [768, 384, 192]
    assert all(m.bias is None for m in ups)
    # batch normalisation before each ReLU, without learnable scale or shift
    assert len(norms) == 14 and not any(m.affine for m in norms)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert len(pools) == 3 and all(m.kernel_size == 2 and m.stride == 2 for m in pools)


def test_the_papers_count_pins_what_its_text_leaves_open():
    """What 19,069,955 implies: one bias per 3x3x3 conv and none in the up-convolutions, no learnable BatchNorm
    scale / shift; up-convolutions that halved their channels (Ronneberger's rule) would give 15.4 M."""
    with torch.device("meta"):
        paper = _count(unetkit.create_model("unet_classic_3d"))
        affine = _count(unetkit.create_model("unet_classic_3d", norm_affine=True))
        up_bias = _count(unetkit.create_model("unet_classic_3d", upconv_bias=True))
        no_bias = _count(unetkit.create_model("unet_classic_3d", conv_bias=False))
    conv_channels = 32 + 64 + 64 + 128 + 128 + 256 + 256 + 512 + 2 * (256 + 128 + 64)  # the 14 3x3x3 convs
    assert affine - paper == 2 * conv_channels == 4672  # a scale and a shift per channel
    assert up_bias - paper == 512 + 256 + 128
    assert paper - no_bias == conv_channels
    # the same weights by hand: 27 * c_in * c_out per 3x3x3 conv, 8 * c * c per up-conv, 64 * 3 + 3 for the head
    pairs = [(3, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
    pairs += [(768, 256), (256, 256), (384, 128), (128, 128), (192, 64), (64, 64)]
    by_hand = sum(27 * a * b + b for a, b in pairs) + sum(8 * c * c for c in (512, 256, 128)) + 64 * 3 + 3
    assert by_hand == paper == 19_069_955


def test_unet_classic_3d_runs_on_a_real_volume_with_anisotropic_shape():
    torch.manual_seed(0)
    model = unetkit.create_model("unet_classic_3d", base_channels=2).eval()
    assert model.valid_input_size(1) == 92  # 4^3 output: the smallest legal tile
    with torch.no_grad():
        y = model(torch.randn(1, 3, 92, 100, 108))
    assert y.shape == (1, 3, 4, 12, 20)
    with pytest.raises(ValueError, match=r"input depth 93 is not legal.*92 \(output 4\) and 100 \(output 12\)"):
        model(torch.randn(1, 3, 93, 100, 108))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, D, H, W\)"):
        model(torch.randn(1, 3, 92, 92))


@pytest.mark.parametrize("case", list(THREE_D))
def test_tiny_odd_volumes_shapes_and_gradients(case):
    name, options = THREE_D[case]
    torch.manual_seed(0)
    model = unetkit.create_model(name, **options).train()
    assert model.spatial_dims == 3
    if model.padding == "same":
        shapes = [(1, 1, 1), (5, 3, 7), (9, 6, 4)]
    else:
        smallest = model.valid_input_size(1)
        shapes = [(smallest,) * 3, (smallest, model.valid_input_size(smallest + 1), smallest)]
    for shape in shapes:
        x = torch.randn(2, model.in_channels, *shape)
        y = model(x)
        assert y.shape == (2, model.out_channels, *model.output_shape(shape)), shape
        assert torch.isfinite(y).all()
        model.zero_grad(set_to_none=True)
        y.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"no finite gradient for {missing[:5]} at {shape}"
    again = unetkit.create_model(name, **model.model_config)  # what a checkpoint stores rebuilds it
    again.load_state_dict(model.state_dict())
    assert again.spatial_dims == 3


@pytest.mark.parametrize("case", ["unet", "sa_unet", "unet_classic_3d"])
def test_grad_checkpointing_parity_in_3d(case):
    name, options = THREE_D[case]
    torch.manual_seed(0)
    plain = unetkit.create_model(name, **options).train()
    ckpt = unetkit.create_model(name, **options).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    side = plain.valid_input_size(8)
    x = torch.randn(2, plain.in_channels, side, side, side)
    outputs = []
    for model in (plain, ckpt):
        torch.manual_seed(42)  # the same DropBlock masks for both
        y = model(x)
        y.square().mean().backward()
        outputs.append(y)
    torch.testing.assert_close(outputs[1], outputs[0])
    grads = dict(ckpt.named_parameters())
    for n, p in plain.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, msg=n)
    buffers = dict(ckpt.named_buffers())
    for n, b in plain.named_buffers():
        torch.testing.assert_close(buffers[n], b, msg=n)


def test_sa_unet_3d_has_dropblock3d_and_a_7x7x7_attention_and_is_deterministic_in_eval():
    model = unetkit.create_model("sa_unet", spatial_dims=3, base_channels=4, depth=2)
    blocks = [m for m in model.modules() if isinstance(m, DropBlock3d)]
    assert len(blocks) == 10 and all(b.block_size == 7 for b in blocks)  # 2 per block, 5 blocks
    attention = [m for m in model.modules() if isinstance(m, SpatialAttention)]
    assert len(attention) == 1 and attention[0].conv.weight.shape == (1, 2, 7, 7, 7)
    assert _count(attention[0]) == 2 * 7**3 + 1
    x = torch.randn(2, 1, 12, 12, 12)
    model.train()
    assert not torch.equal(model(x), model(x))  # new DropBlock masks each call
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_time_embedding_in_3d_changes_the_output_with_t():
    torch.manual_seed(0)
    options = {"spatial_dims": 3, "base_channels": 4, "depth": 1, "time_embedding": 8, "num_classes": 1}
    model = unetkit.create_model("unet", **options).eval()
    x = torch.randn(2, 3, 4, 6, 6)
    with torch.no_grad():
        early, late, mixed = model(x, 0), model(x, 500), model(x, torch.tensor([0, 500]))
    assert not torch.allclose(early, late)
    torch.testing.assert_close(mixed[0], early[0])
    torch.testing.assert_close(mixed[1], late[1])


def test_anisotropic_kernels_and_pooling_as_nnunet_plans():
    """Thick slices: no pooling and in-plane kernels along the first axis at the first level."""
    model = unetkit.create_model(
        "unet",
        spatial_dims=3,
        base_channels=4,
        depth=2,
        kernel_size=[(1, 3, 3), (3, 3, 3), (3, 3, 3)],
        pool=[(1, 2, 2), (2, 2, 2)],
    )
    assert model.downsample_factors == (2, 4, 4) and model.downsample_factor == 4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs[0].kernel_size == (1, 3, 3) and convs[0].padding == (0, 1, 1)
    assert convs[2].kernel_size == (3, 3, 3)
    assert convs[-2].kernel_size == (1, 3, 3)  # the decoder's first level mirrors the encoder's
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [m.stride for m in ups] == [(2, 2, 2), (1, 2, 2)]
    y = model(torch.randn(1, 3, 3, 9, 11))  # odd and thin: padded to (4, 12, 12) inside
    assert y.shape == (1, 2, 3, 9, 11)
    assert model.model_config["pool"] == [[1, 2, 2], [2, 2, 2]]  # lists, so configs write to YAML / JSON
    again = unetkit.create_model("unet", **model.model_config)
    again.load_state_dict(model.state_dict())


def test_unpadded_anisotropic_sizes_by_hand():
    """One level, kernels (1, 3, 3) then (3, 3, 3), pooling (1, 2, 2):
    axis 0: n - 0 (level 0) -> pool 1 -> - 4 (bottom) -> up 1 -> - 0 = n - 4;
    axes 1, 2: n - 4 (even) -> / 2 -> - 4 -> x 2 -> - 4 = n - 16."""
    model = unetkit.create_model(
        "unet_classic", spatial_dims=3, base_channels=2, depth=1, kernel_size=[(1, 3, 3), 3], pool=(1, 2, 2)
    )
    assert model.output_shape((7, 20, 22)) == (3, 4, 6)
    assert model.output_shape((7, 21, 22)) is None  # 21 - 4 = 17 does not pool
    assert model.context_margins() == (2, 8, 8)
    assert model.valid_input_shape((1, 1, 21)) == (5, 18, 22)
    assert model.output_size(21, axis=0) == 17 and model.output_size(21, axis=-1) is None
    with pytest.raises(ValueError, match="pass `axis`"):
        model.output_size(20)
    with pytest.raises(ValueError, match=r"`axis` must be a spatial axis in \[-3, 2\]"):
        model.output_size(20, axis=3)
    y = model(torch.randn(1, 1, 7, 20, 22))
    assert y.shape == (1, 2, 3, 4, 6)
    # the generic helpers read the per-axis rules; whole-volume inference mirrors the missing context
    assert context_margins(model) == (2, 8, 8) and valid_input_shape(model, (5, 5, 5)) == (5, 18, 18)
    assert output_shape(model, (7, 20, 22)) == (3, 4, 6)
    assert forward_whole(model.eval(), torch.randn(1, 1, 3, 5, 7)).shape == (1, 2, 3, 5, 7)


def test_forward_whole_in_3d_equals_the_model_on_the_mirror_padded_volume():
    torch.manual_seed(0)
    model = unetkit.create_model("unet_classic", spatial_dims=3, base_channels=2, depth=1).eval()
    x = torch.randn(1, 1, 6, 9, 5)
    margin = model.context_margin()  # 8 on every axis
    legal = model.valid_input_shape([n + 2 * margin for n in x.shape[2:]])
    # numpy's "reflect" is the same mirroring (repeated where the pad exceeds the side)
    pads = [(0, 0), (0, 0)] + [(margin, t - n - margin) for n, t in zip(x.shape[2:], legal, strict=True)]
    padded = torch.from_numpy(np.pad(x.numpy(), pads, mode="reflect"))
    with torch.no_grad():
        expected = model(padded)[..., :6, :9, :5]
        torch.testing.assert_close(forward_whole(model, x), expected)


@pytest.mark.parametrize("pad", [(2, 1, 0, 3, 1, 1), (7, 5, 9, 0, 4, 12)])
def test_mirror_pad_in_3d_matches_numpy_reflect(pad):
    x = torch.arange(3 * 4 * 5, dtype=torch.float32).view(1, 1, 3, 4, 5)
    expected = np.pad(x.numpy(), [(0, 0), (0, 0), pad[4:6], pad[2:4], pad[0:2]], mode="reflect")
    assert torch.equal(mirror_pad(x, pad), torch.from_numpy(expected))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"spatial_dims": 4}, "`spatial_dims` must be 2 or 3"),
        ({"spatial_dims": 3, "pool": (1, 2)}, r"`pool` must be an integer >= 1 or 3 of them"),
        ({"spatial_dims": 3, "depth": 2, "pool": [(1, 2, 2)]}, r"one entry per level \(2 levels\)"),
        ({"spatial_dims": 3, "kernel_size": (3, 2, 3)}, "`kernel_size` must be odd"),
        ({"spatial_dims": 3, "depth": 1, "kernel_size": [3, (3, 3)]}, r"`kernel_size\[1\]` must be"),
        ({"double_channels": "before"}, "`double_channels` must be one of"),
    ],
)
def test_bad_3d_options_name_the_argument(options, message):
    with pytest.raises(ValueError, match=message):
        unetkit.create_model("unet", **options)


def test_3d_checkpoints_round_trip_and_2d_checkpoints_from_before_load(tmp_path):
    """A 3D model with per-level kernels and pooling rebuilds from its checkpoint; a 2D checkpoint written before
    `spatial_dims` existed (its config lacks the new options) loads into the same model as before."""
    import json

    from unetkit.models.checkpoint import load_model, save_model

    torch.manual_seed(0)
    model = unetkit.create_model(
        "sa_unet", spatial_dims=3, base_channels=4, depth=2, pool=[(1, 2, 2), 2], block_size=(1, 3, 3)
    ).eval()
    save_model(model, tmp_path / "ckpt3d")
    loaded = load_model(tmp_path / "ckpt3d")
    x = torch.randn(1, 1, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.downsample_factors == (2, 4, 4)
    old = unetkit.create_model("sa_unet", base_channels=4, depth=2).eval()
    save_model(old, tmp_path / "ckpt2d")
    config = json.loads((tmp_path / "ckpt2d" / "config.json").read_text())
    new_options = ("spatial_dims", "kernel_size", "pool", "double_channels", "norm_affine", "upconv_bias")
    config["model_config"] = {k: v for k, v in config["model_config"].items() if k not in new_options}
    (tmp_path / "ckpt2d" / "config.json").write_text(json.dumps(config))
    again = load_model(tmp_path / "ckpt2d")
    y = torch.randn(2, 1, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(again(y), old(y), rtol=0, atol=0)
