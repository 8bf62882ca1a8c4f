"""Score a denoise or superres run on held-out digits (the test split training never reads) and draw it.

    python examples/eval_restoration.py RUN [--amounts 0.2 0.4 0.6] [--n 500] [--figure FILE.png]

Denoise: for each noise amount a, the PSNR / SSIM of the noisy input `x (1 - a) + u a` and of the
denoised output against the clean digits, and the figure: clean digits on top, then a noisy and a
denoised row per amount. Superres: the same for the bicubic input and the output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unetkit.infer.restore import evaluate_denoiser, evaluate_superres, held_out_digits, load_restoration_model
from unetkit.viz import save_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.2, 0.4, 0.6])
    parser.add_argument("--n", type=int, default=500, help="held-out digits")
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--zoom", type=int, default=3)
    args = parser.parse_args()
    model = load_restoration_model(args.run)
    config = model.checkpoint_config
    images = held_out_digits(model, n=args.n)
    data = config["train_config"]["data"]
    print(f"held-out {data} digits: {len(images)} images, {images.shape[-1]}x{images.shape[-1]} ({args.run})")
    if config["task"] == "denoise":
        rows, figure = evaluate_denoiser(model, images, args.amounts)
        print("| noise amount | PSNR noisy (dB) | PSNR denoised (dB) | gain (dB) | SSIM noisy | SSIM denoised |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['amount']:.1f} | {r['psnr_input']:.2f} | {r['psnr_output']:.2f} | {r['psnr_gain']:+.2f} "
                f"| {r['ssim_input']:.3f} | {r['ssim_output']:.3f} |"
            )
    else:
        factor = config["superres"]["scale_factor"]
        scores, figure = evaluate_superres(model, images, factor)
        print(f"| x{factor} | PSNR bicubic (dB) | PSNR model (dB) | gain (dB) | SSIM bicubic | SSIM model |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| x{factor} | {scores['psnr_input']:.2f} | {scores['psnr_output']:.2f} | {scores['psnr_gain']:+.2f} "
            f"| {scores['ssim_input']:.3f} | {scores['ssim_output']:.3f} |"
        )
    if args.figure is not None:
        save_png(figure.repeat(args.zoom, axis=0).repeat(args.zoom, axis=1), args.figure)
        print(f"figure written to {args.figure}")


if __name__ == "__main__":
    main()
