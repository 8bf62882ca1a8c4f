"""The `auto` mask reading under what real label images go through, checked with hypothesis on data made by a
generator apart from the one the rules were first tuned on (`unetkit.data.scenes`, not `synthetic`'s `cells`).

Instance label sets are built as people build them from a large annotated scene: a grid of tiles (any tile size,
offset and overlap), any subset of the tiles (sparse ones beside crowded ones), then any numbering of the ids (the
scene's own, one injective relabelling of the whole set with gaps and huge values, an independent one per tile,
1..N per tile in raster or random order) and any integer or integer-valued float dtype that holds them. Class
maps (VOC palettes and the same maps stored as grey values, grey-value classes of a few large regions, small
lesions of a few kinds, an atlas whose region codes recur from image to image) must stay classes.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from unetkit.data.errors import DataError
from unetkit.data.folder import load_folder
from unetkit.data.io import write_image
from unetkit.data.masks import MANY_IDS, mask_evidence, resolve_mask_mode
from unetkit.data.realistic import VOC_VOID, _voc_scene
from unetkit.data.scenes import nuclei_scene

EXAMPLES = 40
RULES = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMBERINGS = ("scene", "global", "per_tile_random", "per_tile_order", "per_tile_raster")
DTYPES = ("uint8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64")


@functools.cache
def _scene2d() -> np.ndarray:
    return nuclei_scene((640, 640), seed=11).labels


@functools.cache
def _scene3d() -> np.ndarray:
    return nuclei_scene((24, 160, 160), seed=12).labels


def _tiles(labels: np.ndarray, side: int, overlap: float, offset: tuple[int, ...], take: list[int]) -> list[np.ndarray]:
    """The grid tiles of `side` (per spatial axis; a 3-D scene keeps its depth) with `overlap`, from `offset`."""
    step = max(1, int(side * (1 - overlap)))
    in_plane = labels.shape[-2:]
    starts = [range(o, n - side + 1, step) for o, n in zip(offset, in_plane, strict=True)]
    grid = [(y, x) for y in starts[0] for x in starts[1]]
    chosen = [grid[i] for i in dict.fromkeys(i % len(grid) for i in take)] if grid else []  # distinct tiles
    return [labels[..., y : y + side, x : x + side] for y, x in chosen]


def _renumber(tiles: list[np.ndarray], how: str, rng: np.random.Generator, high: int) -> list[np.ndarray]:
    """The tiles' ids numbered as `how` says; every relabelling is injective (within a tile, or over the set)."""
    if how == "scene":
        return tiles
    if how == "global":
        ids = np.unique(np.concatenate([t.ravel() for t in tiles]))
        ids = ids[ids > 0]
        codes = np.concatenate([[0], rng.choice(high - 1, ids.size, replace=False) + 1])
        return [codes[np.searchsorted(ids, t) * (t > 0) + (t > 0)] * (t > 0) for t in tiles]
    out = []
    for tile in tiles:
        ids, inverse = np.unique(tile, return_inverse=True)
        n = int(np.count_nonzero(ids))
        if how == "per_tile_random":
            new = rng.choice(high - 1, n, replace=False) + 1
        elif how == "per_tile_order":
            new = rng.permutation(n) + 1
        else:  # raster order of first appearance
            first = np.unique(tile.ravel(), return_index=True)[1][ids > 0]
            new = np.empty(n, dtype=np.int64)
            new[np.argsort(first)] = np.arange(1, n + 1)
        lut = np.zeros(ids.size, dtype=np.int64)
        lut[ids > 0] = new
        out.append(lut[inverse].reshape(tile.shape))
    return out


def _holds(dtype: str, high: int) -> bool:
    return high <= (2**24 if dtype == "float32" else np.iinfo(dtype).max if dtype[0] in "ui" else 2**53)


def _decide(masks: list[np.ndarray], dtype: str):
    evidence = [mask_evidence(m.astype(dtype).astype(np.int64), Path(f"t{i}.tif"), dtype=dtype) for i, m in
                enumerate(masks)]  # fmt: skip
    return resolve_mask_mode(evidence, "auto", Path("root"))


@st.composite
def tile_sets(draw: st.DrawFn, scene: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Tiles of `scene` numbered and stored in one of the ways real sets come."""
    side = draw(st.sampled_from((64, 96, 128, 160)))
    overlap = draw(st.sampled_from((0.0, 0.1, 0.25)))
    offset = (draw(st.integers(0, 40)), draw(st.integers(0, 40)))
    take = draw(st.lists(st.integers(0, 99), min_size=1, max_size=8))
    tiles = _tiles(scene, side, overlap, offset, take)
    assume(tiles)
    how = draw(st.sampled_from(NUMBERINGS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    high = draw(st.sampled_from((256, 2**16, 2**31 - 1)))
    most = max(int(np.unique(np.concatenate([t.ravel() for t in tiles])).size), 1)
    tiles = _renumber(tiles, how, rng, max(high, most + 2))
    top = max(int(t.max()) for t in tiles)
    dtype = draw(st.sampled_from([d for d in DTYPES if _holds(d, top)]))
    return tiles, dtype


def _crowded(tiles: list[np.ndarray]) -> bool:
    return max(np.unique(t[t > 0]).size for t in tiles) >= MANY_IDS


@RULES
@given(data=tile_sets(_scene2d()))
def test_tiles_with_a_crowded_one_read_as_instances_however_numbered_and_stored(data):
    tiles, dtype = data
    assume(_crowded(tiles))  # as real sets: at least one tile with many nuclei (sparse ones beside it)
    info = _decide(tiles, dtype)
    assert info.mode == "instances", info.reason


@RULES
@given(data=tile_sets(_scene2d()))
def test_tiles_stored_as_label_images_read_as_instances_even_when_all_are_sparse(data):
    tiles, dtype = data
    ids = np.unique(np.concatenate([t[t > 0] for t in tiles]))
    assume(dtype != "uint8" and ids.size >= 4)  # uint16 / int32 / float label images with a few nuclei
    info = _decide(tiles, dtype)
    assert info.mode == "instances", info.reason


@RULES
@given(data=tile_sets(_scene2d()), seed=st.integers(0, 2**16))
def test_the_reading_does_not_depend_on_how_the_objects_are_numbered(data, seed):
    """Tiles keeping the slide's ids, renumbered by any injective map of the objects (gaps, huge values, any
    order) and stored at the same width: the same decision, whatever the tiles hold."""
    tiles, dtype = data
    scene = _scene2d()
    ids = np.unique(np.concatenate([t[t > 0] for t in tiles]))
    assume(np.isin(ids, scene).all())  # drawn with the scene's own ids: numbered by object
    rng = np.random.default_rng(seed)
    wide = dtype != "uint8"
    again = _renumber(tiles, "global", rng, 2**31 - 1 if wide else 256)
    assert _decide(again, "int32" if wide else "uint8").mode == _decide(tiles, "int32" if wide else "uint8").mode


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tile_sets(_scene3d()))
def test_stacks_cut_from_a_3d_scene_read_as_instances(data):
    tiles, dtype = data
    assume(_crowded(tiles) or dtype != "uint8")
    info = _decide(tiles, dtype)
    assert info.mode == "instances", info.reason


def _voc_masks(seed: int, n: int) -> list[np.ndarray]:
    from scipy import ndimage

    masks = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        _, labels = _voc_scene(rng, int(rng.integers(120, 200)), int(rng.integers(120, 200)))
        edge = ndimage.maximum_filter(labels, 3) != ndimage.minimum_filter(labels, 3)
        masks.append(np.where(ndimage.binary_dilation(edge), VOC_VOID, labels))
    return masks


@RULES
@given(seed=st.integers(0, 2**16), n=st.integers(2, 8), dtype=st.sampled_from(("palette", "uint8", "uint16")))
def test_voc_class_maps_stay_classes_as_palette_or_grey_values(seed, n, dtype):
    masks = _voc_masks(seed, n)
    evidence = [mask_evidence(m, Path(f"{i}.png"), dtype=dtype) for i, m in enumerate(masks)]
    info = resolve_mask_mode(evidence, "auto", Path("voc"))
    assert info.mode == "classes", info.reason


@RULES
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), dtype=st.sampled_from(("uint8", "uint16", "float32")))
def test_grey_value_classes_of_a_few_large_regions_stay_classes(seed, n, dtype):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(48, 160, 2))
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), np.int64)
        for value in rng.choice([128, 255], int(rng.integers(1, 4))):  # 0/128/255 regions, large
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.25, 0.5) * min(h, w)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = value
        masks.append(mask)
    evidence = [mask_evidence(m, Path(f"{i}.png"), dtype=dtype) for i, m in enumerate(masks)]
    assert resolve_mask_mode(evidence, "auto", Path("grey")).mode in ("classes", "binary")


@RULES
@given(seed=st.integers(0, 2**16), n=st.integers(3, 8), dtype=st.sampled_from(("uint8", "uint16", "int32")))
def test_small_lesions_of_a_few_kinds_stay_classes(seed, n, dtype):
    """CT-like class maps: several small blobs per kind in most images, the kinds coded 1, 2, 3."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros((128, 128), np.int64)
        for _ in range(int(rng.integers(3, 9))):
            y, x, r = *rng.integers(10, 118, 2), int(rng.integers(3, 8))
            mask[y - r : y + r, x - r : x + r] = int(rng.integers(1, 4))
        masks.append(mask)
    evidence = [mask_evidence(m, Path(f"{i}.tif"), dtype=dtype) for i, m in enumerate(masks)]
    assert resolve_mask_mode(evidence, "auto", Path("ct")).mode == "classes"


@RULES
@given(seed=st.integers(0, 2**16), n=st.integers(2, 10), side=st.integers(200, 240))
def test_an_atlas_whose_region_codes_recur_from_image_to_image_stays_classes(seed, n, side):
    """Many small regions, each one blob, coded by arbitrary values (AAL's 2001..9170) that every subject's image
    holds (each shows the whole atlas, shifted a little)."""
    rng = np.random.default_rng(seed)
    codes = np.sort(rng.choice(np.arange(1000, 10000), 40, replace=False))
    points = rng.uniform(0, 256, (40, 2))
    yy, xx = np.mgrid[:256, :256]
    nearest = np.argmin((yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2, axis=-1)
    atlas = codes[nearest]
    masks = []
    for _ in range(n):  # crops of the atlas in each subject, slightly shifted
        y, x = (int(v) for v in rng.integers(0, 256 - side + 1, 2))
        masks.append(atlas[y : y + side, x : x + side])
    evidence = [mask_evidence(m, Path(f"s{i}.tif"), dtype="int16") for i, m in enumerate(masks)]
    info = resolve_mask_mode(evidence, "auto", Path("atlas"))
    assert info.mode == "classes", info.reason


def test_tiles_keeping_a_slides_ids_read_as_instances_with_the_evidence_named(tmp_path, caplog):
    """The issue's case: a crop of an annotated slide keeps ids up to 183 for 74 objects; 8-bit and 16-bit."""
    scene = _scene2d()
    for k, (y, x) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        tile = scene[y : y + 256, x : x + 256]
        write_image(tmp_path / "images" / f"r{k}.tif", np.zeros(tile.shape, np.uint16))
        write_image(tmp_path / "masks" / f"r{k}.tif", tile.astype(np.uint16))
    with caplog.at_level(logging.INFO, logger="unetkit.data.masks"):
        _, info = load_folder(tmp_path, val_fraction=0)
    assert info.mode == "instances"
    line = next(r.getMessage() for r in caplog.records if "masks read as" in r.getMessage())
    assert "ids in one mask" in line and "distinct ids over the masks" in line and "connected blob" in line


def test_sparse_tiles_keeping_their_ids_read_as_instances_in_8_bit_pngs(tmp_path):
    """Tiles of 0-3 nuclei each, 8-bit PNG: the ids of different tiles are different objects (spread)."""
    labels = np.zeros((64, 256), np.uint8)
    for k, x in enumerate(range(8, 250, 24)):  # 10 nuclei along a row, ids 17, 34, ...
        labels[20:30, x : x + 10] = 17 * (k + 1)
    for k in range(4):
        write_image(tmp_path / "images" / f"t{k}.png", np.zeros((64, 64), np.uint8))
        write_image(tmp_path / "masks" / f"t{k}.png", labels[:, 64 * k : 64 * (k + 1)])
    _, info = load_folder(tmp_path, val_fraction=0)
    assert info.mode == "instances", info.reason


def test_ignore_index_equal_to_the_foreground_of_binary_masks_is_an_error_naming_both(tmp_path):
    for k in range(2):
        write_image(tmp_path / "images" / f"b{k}.png", np.zeros((16, 16), np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 255
        write_image(tmp_path / "masks" / f"b{k}.png", mask)
    with pytest.raises(DataError, match=r"ignore_index \(--ignore-index\) 255 is the only label other than background"):
        load_folder(tmp_path, val_fraction=0, ignore_index=255)
    with pytest.raises(DataError, match=r"--ignore-index\) 300 cannot occur in 8-bit masks"):
        load_folder(tmp_path, val_fraction=0, ignore_index=300)
    _, info = load_folder(tmp_path, val_fraction=0)
    assert info.mode == "binary"
