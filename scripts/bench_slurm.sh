#!/usr/bin/env bash
# What SLURM adds to synthct's jobs, on the cluster that scripts/ci/slurm-up.sh starts (or any
# cluster whose nodes see /tmp and this checkout): a tiny HA-GAN training (configs/hagan-tiny.yaml,
# S=32, STEPS steps) in this process against the same run as a SLURM job (`--executor slurm
# --wait`: submit, schedule, train, record); then a 4-point HPO grid (`--metric hu_w1`) with one
# local worker against two SLURM workers sharing the study. One CPU per job, one torch thread.
# Prints markdown lines for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-40}
tmp=$(mktemp -d /tmp/synthct-bench-slurm.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export SYNTHCT_WORKSPACE=$tmp/ws OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
unset SYNTHCT_DATABASE_URL
synthct() { "$PY" -m synthct "$@"; }
timed() {  # timed CMD...: run CMD quietly, print its wall time in seconds
  local start=$EPOCHREALTIME
  "$@" >"$tmp/out.log" 2>&1 || { cat "$tmp/out.log" >&2; return 1; }
  "$PY" -c "print(f'{$EPOCHREALTIME - $start:.1f}')"
}

timed synthct phantom --out "$tmp/cases" --n 6 --seed 4 --scale 0.125 >/dev/null
timed synthct ingest "$tmp/cases" --test-fraction 0.3 >/dev/null
timed synthct preprocess --size 32 --workers 1 >/dev/null

here=$(timed synthct train --config configs/hagan-tiny.yaml --run here --steps "$STEPS")
slurm=$(timed synthct train --config configs/hagan-tiny.yaml --run onslurm --steps "$STEPS" \
  --executor slurm --cpus-per-task 1 --time 10 --wait)

cat >"$tmp/grid.yaml" <<GRID
name: g
base: $PWD/configs/hagan-tiny.yaml
stages:
  - grid: {model.lr_g: [1.0e-4, 2.0e-4, 4.0e-4, 8.0e-4]}
GRID
sed 's/^name: g$/name: gs/' "$tmp/grid.yaml" >"$tmp/grid-slurm.yaml"
hpo_here=$(timed synthct hpo "$tmp/grid.yaml" --metric hu_w1 --steps "$STEPS")
start=$EPOCHREALTIME
synthct hpo "$tmp/grid-slurm.yaml" --metric hu_w1 --steps "$STEPS" --executor slurm --workers 2 \
  --cpus-per-task 1 --time 10 >"$tmp/submit.log"
for id in $(sed -n 's/^job \([0-9]*\):.*/\1/p' "$tmp/submit.log"); do
  synthct jobs wait "$id" >/dev/null
done
hpo_slurm=$("$PY" -c "print(f'{$EPOCHREALTIME - $start:.1f}')")
runs=$(synthct hpo "$tmp/grid-slurm.yaml" --metric hu_w1 --show | grep -c '^ *[0-9]' || true)

echo "- tiny HA-GAN, $STEPS steps: $here s in this process, $slurm s as a SLURM job (submit to done)"
echo "- HPO grid of 4 points x $STEPS steps: $hpo_here s with one local worker, $hpo_slurm s with two SLURM workers ($runs ranked rows)"
