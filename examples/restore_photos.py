"""Real photos for the image-to-image recipe (`examples/restore_photos.sh`): scikit-image's bundled pictures
(a core dependency; the files ship inside the package, no download), as a grey folder data set with held-out
test photos, their corrupted versions, and the PSNR / SSIM of inputs and outputs against the originals.

    python examples/restore_photos.py make DATA                    # DATA/train, DATA/val, DATA/test (PNG)
    python examples/restore_photos.py noisy DATA/test NOISY --sigma 25 --seed 0
    python examples/restore_photos.py small DATA/test SMALL --factor 2
    python examples/restore_photos.py score DATA/test INPUT OUTPUT [--upsample 2] [--json FILE]
    python examples/restore_photos.py figure OUT.png DATA/test/camera.png NOISY/camera.png DENOISED/camera.png ...

`score` compares each test photo with the file of the same stem in INPUT (the corrupted input; with
`--upsample F` first bicubic-up-sampled by F, the baseline a super-resolution model must beat) and in OUTPUT
(the model's restoration, from `unetkit predict`). PSNR and SSIM are `unetkit.metrics.image`'s (torchmetrics;
SSIM with an 11-px Gaussian window), on images in [0, 1].
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.data import read_image, write_image
from unetkit.metrics.image import psnr, ssim

# held out: three classic test pictures training never sees; one validation picture picks best/
SPLITS = {
    "test": ["camera", "coffee", "chelsea"],
    "val": ["astronaut"],
    "train": [
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "moon",
        "brick",
        "grass",
        "gravel",
        "coins",
        "page",
        "text",
        "clock",
        "cell",
    ],
}


def _grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey: RGB by the ITU-R BT.601 luma weights, as photo editors convert."""
    if image.ndim == 2:
        return image
    luma = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)


def make(root: Path) -> None:
    import skimage.data

    for split, names in SPLITS.items():
        for name in names:
            write_image(root / split / f"{name}.png", _grey(getattr(skimage.data, name)()))
    counts = ", ".join(f"{len(names)} {split}" for split, names in SPLITS.items())
    print(f"wrote {counts} grey photos (scikit-image {skimage.__version__}) under {root}")


def _load(path: Path) -> torch.Tensor:
    """A grey 8-bit image as `(1, 1, H, W)` float in [0, 1]."""
    return torch.from_numpy(read_image(path).astype(np.float32) / 255.0)[None, None]


def _save(image: torch.Tensor, path: Path) -> None:
    write_image(path, np.round(image[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8))


def noisy(src: Path, out: Path, sigma: float, seed: int) -> None:
    """Additive white Gaussian noise of `sigma` (out of 255), clipped and saved as 8-bit PNG."""
    for i, path in enumerate(sorted(src.glob("*.png"))):
        clean = _load(path)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed + i))
        _save(clean + noise * sigma / 255.0, out / path.name)
    print(f"wrote noisy copies (sigma {sigma:g}/255, seed {seed}) under {out}")


def small(src: Path, out: Path, factor: int) -> None:
    """Area down-sampling by `factor` (the sides cropped to multiples of it first), saved as 8-bit PNG."""
    for path in sorted(src.glob("*.png")):
        image = _load(path)
        h, w = (image.shape[-2] // factor) * factor, (image.shape[-1] // factor) * factor
        _save(F.avg_pool2d(image[..., :h, :w], factor), out / path.name)
    print(f"wrote {factor}x smaller copies under {out}")


def score(clean_dir: Path, inputs: Path, outputs: Path, upsample: int | None) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for path in sorted(clean_dir.glob("*.png")):
        clean = _load(path)
        given = _load(inputs / path.name)
        if upsample:
            given = F.interpolate(given, scale_factor=upsample, mode="bicubic", align_corners=False).clamp(0, 1)
        restored = _load(outputs / path.name)
        h, w = given.shape[-2:]  # super-resolution: the photo cropped as `small` cropped it
        clean = clean[..., :h, :w]
        row: dict[str, float | str] = {"image": path.stem}
        for label, image in (("input", given), ("output", restored)):
            row[f"psnr_{label}"] = psnr(image, clean).item()
            row[f"ssim_{label}"] = ssim(image, clean).item()
        rows.append(row)
    mean: dict[str, float | str] = {"image": "mean"}
    for key in rows[0]:
        if key != "image":
            mean[key] = float(np.mean([float(r[key]) for r in rows]))
    rows.append(mean)
    print(f"{'image':<10} {'PSNR in':>8} {'PSNR out':>9} {'gain':>6} {'SSIM in':>8} {'SSIM out':>9}")
    for r in rows:
        gain = float(r["psnr_output"]) - float(r["psnr_input"])
        print(
            f"{r['image']:<10} {r['psnr_input']:>8.2f} {r['psnr_output']:>9.2f} {gain:>+6.2f} "
            f"{r['ssim_input']:>8.3f} {r['ssim_output']:>9.3f}"
        )
    return rows


def figure(out: Path, images: list[Path], crop: int = 160) -> None:
    """The same centre crop of each image side by side (a low-resolution input is first up-sampled to the
    first image's size, bicubic), as one PNG."""
    from unetkit import viz

    first = _load(images[0])
    side = min(crop, *first.shape[-2:])
    top, left = (first.shape[-2] - side) // 2, (first.shape[-1] - side) // 2
    tiles = []
    for path in images:
        image = _load(path)
        if image.shape[-2:] != first.shape[-2:]:
            image = F.interpolate(image, size=first.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        tiles.append(image[0, :, top : top + side, left : left + side].numpy())
    viz.save_png(viz.image_grid(np.stack(tiles), columns=len(tiles)), out)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("make").add_argument("root", type=Path)
    for name in ("noisy", "small"):
        each = sub.add_parser(name)
        each.add_argument("src", type=Path)
        each.add_argument("out", type=Path)
    sub.choices["noisy"].add_argument("--sigma", type=float, default=25.0)
    sub.choices["noisy"].add_argument("--seed", type=int, default=0)
    sub.choices["small"].add_argument("--factor", type=int, default=2)
    scoring = sub.add_parser("score")
    for name in ("clean", "inputs", "outputs"):
        scoring.add_argument(name, type=Path)
    scoring.add_argument("--upsample", type=int, default=None)
    scoring.add_argument("--json", type=Path, default=None)
    drawing = sub.add_parser("figure")
    drawing.add_argument("out", type=Path)
    drawing.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "make":
        make(args.root)
    elif args.command == "noisy":
        noisy(args.src, args.out, args.sigma, args.seed)
    elif args.command == "small":
        small(args.src, args.out, args.factor)
    elif args.command == "figure":
        figure(args.out, args.images)
    else:
        rows = score(args.clean, args.inputs, args.outputs, args.upsample)
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
