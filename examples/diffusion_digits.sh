#!/usr/bin/env bash
# A small DDPM on digits, trained on 2 CPU cores in under 10 minutes (8.1 min measured, see README): `basic_unet` (the diffusion course's
# compact U-Net) with a timestep embedding (width 32, MLP to 128, added after every layer), linear beta schedule
# over T = 1000 steps (Ho et al. 2020), noise-prediction MSE, AdamW 2e-3, batch 64, 1,980 steps, EMA 0.997.
# Then 64 samples (DDIM, 50 steps, seed 0) and the refinement steps of the first 8.
# DATA=mnist needs the extra `pip install -e '.[digits]'`; DATA=synthetic:digits needs nothing.
set -euo pipefail
DATA=${DATA:-mnist}
OUT=${1:-runs/diffusion_digits}
IMAGES=${IMAGES:-docs/images}
. .venv/bin/activate
rm -rf "$OUT"
start=$(date +%s)
unetkit train --task diffusion --data "$DATA" --model basic_unet --epochs 18 --batch-size 64 --lr 2e-3 \
    --set steps_per_epoch=110 --set beta_schedule=linear --set warmup_epochs=0.3 --set ema_decay=0.997 \
    --set threads=2 \
    --set synthetic_train=3600 --set synthetic_val=900 --out "$OUT"  # the two sizes apply to synthetic:digits
echo "training wall time: $(( $(date +%s) - start )) s"
unetkit sample "$OUT" -n 64 --sampler ddim --steps 50 --seed 0 --zoom 3 --out "$IMAGES/diffusion_samples.png" \
    --trajectory "$IMAGES/diffusion_steps.png" --frames 10
# the same model with DDPM ancestral sampling over all 1,000 timesteps (about 4 min for 64 images on 2 cores)
unetkit sample "$OUT" -n 64 --sampler ddpm --seed 0 --zoom 3 --out "$IMAGES/diffusion_samples_ddpm.png"
