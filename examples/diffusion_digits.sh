#!/usr/bin/env bash
# A small DDPM on digits, trained on 2 CPU cores in under 10 minutes (see README for the measured time):
# `ddpm_unet` (Ho et al. 2020's residual U-Net with GroupNorm and self-attention, small: channels 16/32/64,
# 0.73 M parameters with the timestep embedding), linear beta schedule over T = 1000 steps, noise-prediction MSE,
# AdamW 2e-3 with warm-up and cosine decay, batch 64, 2,100 steps, EMA 0.995, bf16 autocast (the CPU's
# AVX-512 bf16 makes it 1.4x faster than fp32 here; use --amp off on a CPU without it) and channels-first
# memory (channels-last makes this small network 1.35x slower to train on a CPU).
# Then 64 samples by DDPM ancestral sampling over all 1,000 timesteps (seed 0) with the refinement steps of the
# first 8, and the digit-likeness score of 256 more samples (examples/eval_diffusion.py).
# DATA=mnist needs the extra `pip install -e '.[digits]'`; DATA=synthetic:digits needs nothing.
set -euo pipefail
DATA=${DATA:-mnist}
OUT=${1:-runs/diffusion_digits}
IMAGES=${IMAGES:-docs/images}
. .venv/bin/activate
rm -rf "$OUT"
start=$(date +%s)
unetkit train --task diffusion --data "$DATA" --patch-size 0 --model ddpm_unet --epochs 10 --batch-size 64 --lr 2e-3 --amp bf16 \
    --set steps_per_epoch=210 --set beta_schedule=linear --set warmup_epochs=0.15 --set ema_decay=0.995 \
    --set threads=2 --set channels_last=false \
    --set synthetic_train=3600 --set synthetic_val=900 --out "$OUT"  # the two sizes apply to synthetic:digits
echo "training wall time: $(( $(date +%s) - start )) s"
unetkit sample "$OUT" -n 64 --sampler ddpm --seed 0 --zoom 3 --out "$IMAGES/diffusion_samples.png" \
    --trajectory "$IMAGES/diffusion_steps.png" --frames 10
python examples/eval_diffusion.py "$OUT" --n 256 --sampler ddpm --seed 1
