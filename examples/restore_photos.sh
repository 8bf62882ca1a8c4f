#!/usr/bin/env bash
# Denoising and x2 super-resolution trained on a folder of real photos (scikit-image's bundled pictures, grey),
# through the CLI; scored on three held-out photos (camera, coffee, chelsea) that training never reads.
#   bash examples/restore_photos.sh [OUT]        (needs nothing beyond unetkit's own dependencies)
set -euo pipefail
OUT=${1:-runs/photos}
. .venv/bin/activate
rm -rf "$OUT"
python examples/restore_photos.py make "$OUT/data"     # train/ (13 photos), val/ (1), test/ (3), 8-bit PNG

# denoising: Gaussian noise of a random sigma in [0, 0.2] (0 to 51/255) per patch, one blind model
start=$(date +%s)
unetkit train --task denoise --data "$OUT/data" --model unet -m base_channels=16 -m depth=3 \
    --patch-size 64 --batch-size 16 --epochs 20 --lr 2e-3 --set steps_per_epoch=100 --set warmup_epochs=0.2 \
    --set noise_type=gaussian --set noise_amount=0.2 --set threads=2 --out "$OUT/denoise"
echo "denoise training wall time: $(( $(date +%s) - start )) s"
for sigma in 15 25 50; do
    python examples/restore_photos.py noisy "$OUT/data/test" "$OUT/noisy$sigma" --sigma "$sigma" --seed 0
    unetkit predict "$OUT/denoise" "$OUT/noisy$sigma" --out "$OUT/denoised$sigma"
    python examples/restore_photos.py score "$OUT/data/test" "$OUT/noisy$sigma" "$OUT/denoised$sigma" \
        --json "$OUT/denoise$sigma.json"
done

# x2 super-resolution: the input is the photo area-down-sampled by 2 and bicubic-up-sampled back
start=$(date +%s)
unetkit train --task superres --data "$OUT/data" --model unet -m base_channels=16 -m depth=3 \
    --patch-size 64 --batch-size 16 --epochs 20 --lr 2e-3 --set steps_per_epoch=100 --set warmup_epochs=0.2 \
    --set scale_factor=2 --set threads=2 --out "$OUT/superres"
echo "superres training wall time: $(( $(date +%s) - start )) s"
python examples/restore_photos.py small "$OUT/data/test" "$OUT/small" --factor 2
unetkit predict "$OUT/superres" "$OUT/small" --out "$OUT/upsampled"   # bicubic x2, then the model
python examples/restore_photos.py score "$OUT/data/test" "$OUT/small" "$OUT/upsampled" --upsample 2 \
    --json "$OUT/superres.json"
P="$OUT/data/test/camera.png"
python examples/restore_photos.py figure "${FIGURE:-docs/images/restore_photos.png}" "$P" "$OUT/noisy25/camera.png" \
    "$OUT/denoised25/camera.png" "$OUT/small/camera.png" "$OUT/upsampled/camera.png"
