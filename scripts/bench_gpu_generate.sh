#!/usr/bin/env bash
# GPU generation benchmark: 1,000 HA-GAN pairs at S = 128 (128x128x64 image + mask), random
# reference-size weights (width 1.0, latent 1024), sampling + postprocessing + int16/uint8
# .nii.gz writing included. Goal: < 60 s on one H100. Paste the printed lines into the
# "Generation" section of docs/benchmarks.md.
#
#   scripts/bench_gpu_generate.sh            # defaults below
#   BATCH=32 WORKERS=12 scripts/bench_gpu_generate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/synthct ]; then SYNTHCT=.venv/bin/synthct; else SYNTHCT=synthct; fi
BATCH=${BATCH:-16}
WORKERS=${WORKERS:-8}
N=${N:-1000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
uptime
"$SYNTHCT" bench generate --size 128 --n "$N" --batch "$BATCH" --workers "$WORKERS" \
  --width 1.0 --latent 1024 --device cuda 2>&1 | grep -v 'pair/s]$'
# S = 256 (256x256x128 pairs) for reference, fewer pairs.
"$SYNTHCT" bench generate --size 256 --n 100 --batch 4 --workers "$WORKERS" \
  --width 1.0 --latent 1024 --device cuda 2>&1 | grep -v 'pair/s]$'
