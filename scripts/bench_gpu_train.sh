#!/usr/bin/env bash
# HA-GAN training throughput on a GPU: S=128, batch 4, reference (fp32 eager) vs fast
# (bf16 + channels_last_3d + torch.compile + fused Adam), with and without the encoder phases.
# Usage: scripts/bench_gpu_train.sh [STEPS]   (run from the repository root, venv active)
set -euo pipefail
STEPS="${1:-20}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
uptime
synthct bench train --model hagan --size 128 --batch 4 --steps "$STEPS" --compare
synthct bench train --model hagan --size 128 --batch 4 --steps "$STEPS" --compare --no-encoder
