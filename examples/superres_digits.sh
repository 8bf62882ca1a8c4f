#!/usr/bin/env bash
# x4 super-resolution of digits with `basic_unet` (the same machinery as denoise): input area-down-sampled by 4
# and bicubic-up-sampled back, target the original; PSNR of the model vs the bicubic input on 500 held-out digits.
# DATA=mnist needs the extra `pip install -e '.[digits]'`; DATA=synthetic:digits needs nothing.
set -euo pipefail
DATA=${DATA:-mnist}
OUT=${1:-runs/superres_digits}
FIGURE=${FIGURE:-docs/images/superres_digits.png}
. .venv/bin/activate
rm -rf "$OUT"
unetkit train --task superres --data "$DATA" --patch-size 0 --model basic_unet --epochs 8 --batch-size 64 --lr 2e-3 \
    --set scale_factor=4 --set steps_per_epoch=100 --set warmup_epochs=0.3 --set threads=2 \
    --set synthetic_train=3600 --set synthetic_val=900 --out "$OUT"  # the two sizes apply to synthetic:digits
python examples/eval_restoration.py "$OUT" --figure "$FIGURE"
