#!/usr/bin/env bash
# Latent diffusion (configs/ldm-128.yaml, S=128) on a GPU: per-step time of each training stage
# (autoencoder with the adversarial term, then the diffusion UNet) in the reference (fp32 eager)
# and fast (bf16 + channels_last_3d + torch.compile + fused Adam) recipes, then sampling time per
# pair at 1/5/10/30/50 rectified-flow steps including NIfTI writing.
# Usage: scripts/bench_gpu_ldm.sh [STEPS] [BATCH]   (run from the repository root, venv active)
set -euo pipefail
STEPS="${1:-20}"
BATCH="${2:-2}"
CONFIG=configs/ldm-128.yaml
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
uptime
# stage 1: autoencoder + patch discriminator (step 10,000 = adv_start: adversarial term on)
synthct bench train --config "$CONFIG" --batch "$BATCH" --steps "$STEPS" --start-step 10000 --compare
# stage 2: diffusion UNet on the 4 x 32 x 32 x 16 latent (from autoencoder_steps = 30,000)
synthct bench train --config "$CONFIG" --batch "$BATCH" --steps "$STEPS" --start-step 30000 --compare
# sampling: 64 pairs, batch 8, 8 writer threads; sampling alone at several step counts
synthct bench generate --config "$CONFIG" --n 64 --batch 8 --workers 8 --device cuda \
  --sampling-steps 1 --sampling-steps 5 --sampling-steps 10 --sampling-steps 30 --sampling-steps 50
