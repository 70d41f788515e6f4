#!/usr/bin/env bash
# Issue 5 on the GPU machine, one call (after the wheel parts are in /tmp/segsweep-parts):
#   bash benchmarks/gpu_train.sh [bench-train options]
# Writes $OUT/bench_train.{json,md}, $OUT/checks.jsonl and logs.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -f .wheels/part3/install.sh ]; then bash .wheels/part3/install.sh >/dev/null || exit 1; fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/gpu_checks.py /tmp/checks > "$OUT/checks.jsonl" 2> "$OUT/checks.err"; echo "checks rc=$?"
cp /tmp/checks/gpu_memory.json "$OUT/" 2>/dev/null
cat "$OUT/checks.jsonl"
python3 -m orchestrator.cli bench-train --out /tmp/bench "$@" > "$OUT/bench.log" 2>&1; echo "bench rc=$?"
cp /tmp/bench/bench_train.json /tmp/bench/bench_train.md "$OUT"/ 2>/dev/null
cat "$OUT/bench_train.md" 2>/dev/null || tail -40 "$OUT/bench.log"
