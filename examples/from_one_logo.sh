#!/usr/bin/env bash
# The seed tutorial's flow (shared/seeds/003): annotate one picture, augment it into a data set, train the
# classic unpadded U-Net with BCE + pos_weight, Adam 1e-4, 5 epochs, batch 1 (as in the U-Net paper).
# Run from the repository root after `make demo` (or any `make` target) has created .venv.
set -euo pipefail
OUT=${1:-runs/from_one_logo}
. .venv/bin/activate
rm -rf "$OUT"
mkdir -p "$OUT"
# the one annotated picture: image 0 of synthetic:shapes (a logo-like shape on a textured background)
unetkit data synthetic shapes --out "$OUT/one" -n 1 --size 192
# 100 augmented copies (elastic deformation, flips, quarter turns, affine, brightness/contrast)
unetkit data from-one "$OUT/one/images/shapes_0000.png" "$OUT/one/masks/shapes_0000.png" --out "$OUT/data" -n 100
# 80 for training, 20 held out for validation; patch 128 = the output tile (input 316 with the context margin)
unetkit train --data "$OUT/data" --model unet_classic --loss bce --set pos_weight=auto \
    --optimizer adam --lr 1e-4 --set weight_decay=0 --set scheduler=constant --set warmup_epochs=0 \
    --epochs 5 --batch-size 1 --patch-size 128 --out "$OUT/run"
