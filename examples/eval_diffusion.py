"""How many samples of a diffusion run read as digits? (`unetkit.metrics.digit_score`)

    python examples/eval_diffusion.py RUN [--n 256] [--sampler ddpm] [--steps 1000] [--seed 1]
    python examples/eval_diffusion.py --grid SAMPLES.png --zoom 3 [--data mnist]   # score a saved grid

Trains the small digit classifier (ten digits and "no digit") on the non-test digits of the data the
run learnt from, reports its accuracy on the held-out test digits, then for real training digits and
for the samples: the share it gives one digit with probability >= 0.9, the share it calls "no digit",
the class histogram, and the Fréchet distance of their features to those of the test digits (the same
number of real digits as samples, so the two distances compare). The samples are drawn with a seed
other than the README grid's (`--seed 1`), so the figures are not about one picture.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unetkit.data.digits import load_digits
from unetkit.metrics.digit_score import digit_features, frechet_distance, score_digits, train_digit_classifier


def grid_tiles(path: Path, zoom: int, size: int, pad: int = 2) -> torch.Tensor:
    """The images of a grid written by `unetkit sample --zoom ZOOM` (`report.image_grid`, pad 2)."""
    from PIL import Image

    grid = np.asarray(Image.open(path).convert("L"), dtype=np.float32)[::zoom, ::zoom] / 255
    rows, cols = (grid.shape[0] - pad) // (size + pad), (grid.shape[1] - pad) // (size + pad)
    step = size + pad
    tiles = [
        grid[pad + r * step : pad + r * step + size, pad + c * step : pad + c * step + size]
        for r in range(rows)
        for c in range(cols)
    ]
    return torch.from_numpy(np.stack(tiles))[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="diffusion run or checkpoint")
    parser.add_argument("--n", type=int, default=256, help="samples to draw")
    parser.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: all for ddpm, 100 for ddim)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grid", type=Path, default=None, help="score the tiles of this sample grid instead")
    parser.add_argument("--zoom", type=int, default=3, help="the grid's --zoom")
    parser.add_argument("--data", default=None, help="digits the classifier learns (default: the run's)")
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args()
    if (args.run is None) == (args.grid is None):
        parser.error("give a RUN or --grid, not both")
    torch.set_num_threads(2)

    data, size = args.data or "mnist", 28
    if args.run is not None:
        from unetkit.diffusion import load_diffusion_model, sample
        from unetkit.models.checkpoint import read_checkpoint_config, resolve_checkpoint

        train_config = read_checkpoint_config(resolve_checkpoint(args.run))["train_config"]
        data, size = args.data or train_config["data"], int(train_config["digits_size"])
    splits = load_digits(data, size=size, seed=0)
    start = time.perf_counter()
    classifier = train_digit_classifier(
        torch.from_numpy(np.concatenate([splits.train, splits.val])),
        torch.from_numpy(np.concatenate([splits.train_labels, splits.val_labels])),
    )
    test = torch.from_numpy(splits.test)
    with torch.no_grad():
        accuracy = (classifier(test).argmax(1) == torch.from_numpy(splits.test_labels)).float().mean().item()
    print(f"classifier: {data} {size}², trained in {time.perf_counter() - start:.0f} s, test accuracy {accuracy:.3f}")
    reference = digit_features(classifier, test)

    def report(what: str, images: torch.Tensor) -> None:
        score = score_digits(classifier, images, args.threshold)
        distance = frechet_distance(digit_features(classifier, images), reference)
        print(
            f"{what}: {score.confident:.1%} read as digits (p >= {args.threshold}), {score.no_digit:.1%} "
            f"'no digit', {score.classes_seen} digits seen, Fréchet distance to the test digits {distance:.1f}"
        )
        print(f"  confident per digit 0-9: {score.counts}")

    if args.grid is not None:
        images, what = grid_tiles(args.grid, args.zoom, size), str(args.grid)
    else:
        model, schedule, shape = load_diffusion_model(args.run)
        steps = args.steps or (schedule.steps if args.sampler == "ddpm" else 100)
        start = time.perf_counter()
        images = sample(model, schedule, args.n, shape, sampler=args.sampler, steps=steps, seed=args.seed).images
        what = f"{args.n} samples of {args.run} ({args.sampler}, {steps} steps, seed {args.seed}, "
        what += f"{time.perf_counter() - start:.0f} s)"
    count = min(len(images), len(splits.train))
    pick = np.random.default_rng(args.seed).choice(len(splits.train), size=count, replace=False)
    real = torch.from_numpy(splits.train[np.sort(pick)])
    report(f"{len(real)} real training digits", real)
    report(what, images)


if __name__ == "__main__":
    main()
