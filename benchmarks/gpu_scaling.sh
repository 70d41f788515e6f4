#!/usr/bin/env bash
# Issue 5 on a two-GPU machine, last of three calls (parts 1 and 2 already in /tmp/segsweep-parts):
#   bash benchmarks/gpu_scaling.sh
# The seeds' pipeline and one trial on GPU 0, then the same sweep on one GPU and on both, then on one GPU with
# resources.preload_workers off. Each bench writes $OUT/<name>/bench_train.{json,md}.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash .wheels/part3/install.sh >/dev/null || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
COMMON="--images 1024 --epochs 3 --workers 8 --trials ${TRIALS:-16} --sweep-epochs 8"
bench() {  # name, seconds, CUDA_VISIBLE_DEVICES, bench-train options...
  local name=$1 limit=$2 gpus=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpus timeout "$limit" python3 -m orchestrator.cli bench-train --out "/tmp/$name" $COMMON "$@" \
    > "$OUT/$name.log" 2>&1
  echo "$name rc=$?"; mkdir -p "$OUT/$name"; cp /tmp/$name/bench_train.* "$OUT/$name/" 2>/dev/null
  grep -E "^\| (seeds|segsweep|sweep)" "$OUT/$name/bench_train.md" 2>/dev/null || tail -3 "$OUT/$name.log"
}
bench one_gpu 290 0 --parts seeds,trial,sweep
bench two_gpus 170 0,1 --parts sweep
bench one_gpu_no_preload 130 0 --parts sweep --set resources.preload_workers=false
