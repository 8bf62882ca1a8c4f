"""3D batch augmentation: the mask follows the image through elastic + affine + flips + quarter turns, exact
flips in 3D, slices kept in their plane unless asked, physical-unit rotations with spacing, elastic statistics,
shards, identity cases (small volumes so that the file runs in seconds on two cores)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unetkit.data import _geometry
from unetkit.data.augment import AugmentConfig, augment_batch, elastic_displacement

OFF = {"elastic": False, "flip": False, "rot90": False, "affine": False, "brightness": 0.0, "contrast": 0.0}


def _config(**kwargs: object) -> AugmentConfig:
    return AugmentConfig(**{**OFF, **kwargs})  # type: ignore[arg-type]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labels(batch: int, depth: int, height: int, width: int) -> torch.Tensor:
    """`(B, D, H, W)` int64: a box (1), a ball (2) and a slab (3), shifted per sample."""
    lab = torch.zeros(batch, depth, height, width, dtype=torch.long)
    zz, yy, xx = torch.meshgrid(torch.arange(depth), torch.arange(height), torch.arange(width), indexing="ij")
    for b in range(batch):
        lab[b, 2:8, 3 + b : 12 + b, 2:10] = 1
        ball = (zz - depth // 2) ** 2 + (yy - height * 5 // 8) ** 2 + (xx - width * 5 // 8) ** 2 < (width // 5) ** 2
        lab[b][ball] = 2
        lab[b, depth - 4 : depth - 1, 2:6, width - 8 + b : width - 2] = 3
    return lab


def test_mask_follows_image_in_3d() -> None:
    """The painted-mask test of the 2-D code: the image is the mask painted in (x 50); after every geometric
    transform at once, image and mask still agree voxel for voxel away from the borders between classes."""
    lab = _labels(3, 16, 24, 24)
    img = torch.cat([lab.float()[:, None] * 50.0, torch.ones(3, 1, 16, 24, 24)], dim=1)  # (B, 2, D, H, W)
    config = _config(elastic=True, elastic_sigma=2.0, affine=True, flip=True, rot90=True, rotate_out_of_plane_deg=10.0)
    aug_img, aug_lab, _ = augment_batch(img, lab, config=config, generator=_gen(1))
    assert aug_img.shape == img.shape and aug_lab.shape == lab.shape
    assert not torch.equal(aug_lab, lab)
    match = (aug_img[:, 0] / 50.0).round().long() == aug_lab
    padded = F.pad(aug_lab[:, None].float(), (1,) * 6, mode="replicate")
    interior = (F.max_pool3d(padded, 3, stride=1) == -F.max_pool3d(-padded, 3, stride=1))[:, 0]  # one class around
    assert match.float().mean() >= 0.95
    assert match[interior].float().mean() >= 0.99
    torch.testing.assert_close(aug_img[:, 1], torch.ones(3, 16, 24, 24))  # a constant channel stays constant


def _group(x: torch.Tensor) -> list[torch.Tensor]:
    """The 16 maps of `(..., D, H, W)` reachable by flips of every axis and quarter turns in the (H, W) plane."""
    out = []
    for flip_d in (False, True):
        base = torch.flip(x, dims=(-3,)) if flip_d else x
        for k in range(4):
            r = torch.rot90(base, k, dims=(-2, -1))
            out += [r, torch.flip(r, dims=(-1,))]
    return out


def test_flips_and_quarter_turns_are_exact_in_3d() -> None:
    lab = _labels(12, 10, 16, 16)
    img = torch.rand(12, 2, 10, 16, 16, generator=_gen()).to(torch.bfloat16)
    out_img, out_lab, _ = augment_batch(img, lab, config=_config(flip=True, rot90=True), generator=_gen(3))
    seen = set()
    for i in range(12):
        options = [k for k, t in enumerate(_group(lab[i])) if torch.equal(t, out_lab[i])]
        assert options, i
        assert any(torch.equal(_group(img[i])[k], out_img[i]) for k in options)
        seen.add(options[0])
    assert len(seen) >= 6
    # a non-square slice plane: quarter turns are limited to 0 or 180 degrees
    lab = _labels(8, 10, 16, 20)
    _, out_lab, _ = augment_batch(lab.float()[:, None], lab, config=_config(rot90=True), generator=_gen(4))
    for i in range(8):
        assert torch.equal(out_lab[i], lab[i]) or torch.equal(out_lab[i], torch.rot90(lab[i], 2, dims=(-2, -1)))


def test_in_plane_rotation_keeps_every_slice_in_its_plane() -> None:
    """Labels = slice index: an in-plane rotation and shear leave each slice's label alone; tilting the plane (or
    zooming, which is isotropic) mixes slices."""
    depth = 8
    lab = torch.arange(depth).view(1, depth, 1, 1).expand(4, depth, 20, 20).contiguous()
    img = lab.float()[:, None]
    flat = _config(affine=True, rotate_deg=40.0, scale=0.0, shear=0.2)
    _, out_lab, _ = augment_batch(img, lab, config=flat, generator=_gen(5))
    assert torch.equal(out_lab, lab)
    tilted = _config(affine=True, rotate_deg=0.0, rotate_out_of_plane_deg=30.0, scale=0.0)
    _, out_lab, _ = augment_batch(img, lab, config=tilted, generator=_gen(5))
    assert not torch.equal(out_lab, lab)


class _FixedDraws:
    """Draws that return one fixed row of uniforms (for a hand-checked matrix)."""

    def __init__(self, row: list[float]) -> None:
        self.row = torch.tensor(row)

    def rand(self, n: int) -> torch.Tensor:
        return self.row[None, :n]


def test_rotations_act_in_millimetres_with_spacing() -> None:
    """A 90-degree tilt about x of 4 mm slices with 1 mm pixels: one slice (4 mm) maps to 4 rows (4 mm), one row
    to a quarter slice. M_px = S^-1 R S in (x, y, z) order with S = diag(1, 1, 4)."""
    config = AugmentConfig(rotate_deg=0.0, rotate_out_of_plane_deg=90.0, scale=0.0, shear=0.0)
    uniform = [0.5, 0.5, 0.5, 1.0, 0.5]  # 2u - 1 = (0, 0, 0, 1, 0): only the tilt about x, by +90 degrees
    sizes = (9, 9, 9)  # equal sides, so normalised and pixel matrices agree
    matrix = _geometry.affine(1, sizes, config, _FixedDraws(uniform), torch.device("cpu"), (4.0, 1.0, 1.0))[0]
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -4.0], [0.0, 0.25, 0.0]])
    torch.testing.assert_close(matrix, expected, atol=1e-6, rtol=0)
    plain = _geometry.affine(1, sizes, config, _FixedDraws(uniform), torch.device("cpu"), None)[0]
    torch.testing.assert_close(plain, torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), atol=1e-6, rtol=0)


def test_elastic_displacement_3d_statistics() -> None:
    cpu = torch.device("cpu")
    field = elastic_displacement(500, 9, 9, 4.0, 3, _gen(), cpu, depth=5)  # nodes at 0, 4, 8 (and 0, 2, 4 in depth)
    assert field.shape == (500, 5, 9, 9, 3)
    nodes = field[:, ::2, ::4, ::4]  # (B, 3, 3, 3, 3)
    assert abs(nodes.std().item() - 4.0) < 0.3 and abs(nodes.mean().item()) < 0.2
    again = F.interpolate(nodes.permute(0, 4, 1, 2, 3), size=(5, 9, 9), mode="trilinear", align_corners=True)
    torch.testing.assert_close(again.permute(0, 2, 3, 4, 1), field)
    with pytest.raises(ValueError, match="the field's sides must be >= 2, got 1x9x9"):
        elastic_displacement(1, 9, 9, 4.0, 3, _gen(), cpu, depth=1)


def test_spacing_scales_the_elastic_field_to_the_finest_voxel() -> None:
    """With 4 mm slices and 1 mm pixels, displacements across slices are a quarter as many voxels."""
    lab = torch.zeros(64, 6, 12, 12, dtype=torch.long)
    img = torch.arange(6.0).view(1, 1, 6, 1, 1).expand(64, 1, 6, 12, 12).contiguous()  # intensity = slice index
    config = _config(elastic=True, elastic_sigma=2.0)
    plain, _, _ = augment_batch(img, lab, config=config, generator=_gen(7))
    thick, _, _ = augment_batch(img, lab, config=config, generator=_gen(7), spacing=(4.0, 1.0, 1.0))
    inner = (slice(None), 0, slice(1, 5))  # slices away from the reflecting borders
    moved_plain = (plain[inner] - img[inner]).abs().mean()
    moved_thick = (thick[inner] - img[inner]).abs().mean()
    assert moved_thick.item() == pytest.approx(moved_plain.item() / 4, rel=0.25)


def test_shards_identity_intensity_and_arguments_in_3d() -> None:
    config = AugmentConfig(gamma=0.2, noise=0.1, p=0.8, elastic_sigma=2.0)
    image, target = torch.randn(4, 1, 6, 10, 10), _labels(4, 6, 10, 10)
    weight = torch.rand(4, 6, 10, 10, generator=_gen(9))
    whole = augment_batch(image, target, config=config, generator=_gen(4), extras={"w": weight})
    part = augment_batch(
        image[2:], target[2:], config=config, generator=_gen(4), extras={"w": weight[2:]}, shard=(2, 4)
    )
    torch.testing.assert_close(part[0], whole[0][2:], rtol=1e-5, atol=1e-5)
    assert torch.equal(part[1], whole[1][2:])
    torch.testing.assert_close(part[2]["w"], whole[2]["w"][2:])
    out_img, out_lab, _ = augment_batch(image, target, config=AugmentConfig(p=0.0), generator=_gen())
    assert torch.equal(out_img, image) and torch.equal(out_lab, target)
    out_img, out_lab, _ = augment_batch(image, target, config=_config(brightness=0.3, gamma=0.3), generator=_gen())
    assert torch.equal(out_lab, target) and not torch.equal(out_img, image)
    with pytest.raises(ValueError, match=r"`target` must be an integer \(B, D, H, W\) tensor"):
        augment_batch(image, target[:, 0], config=config, generator=_gen())
    with pytest.raises(ValueError, match=r"`spacing` must give 3 positive numbers"):
        augment_batch(image, target, config=config, generator=_gen(), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="rotate_out_of_plane_deg"):
        AugmentConfig(rotate_out_of_plane_deg=-1.0)
    assert math.isclose(AugmentConfig().rotate_out_of_plane_deg, 0.0)
