#!/usr/bin/env bash
# One device call (carry .whl): where a fresh trial process spends its first epoch, then the latency benchmark.
#   run: bash benchmarks/gpu_profile.sh [latency backends]     (writes into $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout "${PROFILE_S:-330}" python3 benchmarks/startup_profile.py --out /tmp/sp --images 512 --epochs 2 \
  --variants "${VARIANTS:-default,concurrent4,no_graphs,fp32,no_channels_last,no_cudnn,eager_loading}" > "$OUT/sp.log" 2>&1
echo "profile rc=$?"; cp /tmp/sp/startup_profile.jsonl "$OUT/" 2>/dev/null; tail -12 "$OUT/sp.log"
if [ -n "${1:-}" ]; then
  timeout "${LATENCY_S:-240}" python3 benchmarks/latency.py --out "$OUT/lat" --backends "$1" > "$OUT/lat.log" 2>&1
  echo "latency rc=$?"; cat "$OUT/lat/latency.md" 2>/dev/null || tail -5 "$OUT/lat.log"
fi
