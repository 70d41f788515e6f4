#!/usr/bin/env bash
# Issue 5 on the GPU machine, last of three calls (parts 1 and 2 already in /tmp/segsweep-parts):
#   bash benchmarks/gpu_scaling.sh           two GPUs: the seeds' pipeline and one trial on GPU 0, then the same
#                                            16-trial sweep on one GPU and on both
#   bash benchmarks/gpu_scaling.sh preload   one GPU: an 8-trial sweep with resources.preload_workers on, then off
# Each bench writes $OUT/<name>/bench_train.{json,md}.
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
if [ "${1:-}" = preload ]; then
  TRIALS=8 COMMON="--images 1024 --epochs 3 --workers 8 --trials 8 --sweep-epochs 8"
  bench preload_on 270 0 --parts sweep
  bench preload_off 270 0 --parts sweep --set resources.preload_workers=false
else
  bench one_gpu 290 0 --parts seeds,trial,sweep
  bench two_gpus 170 0,1 --parts sweep
fi
