#!/usr/bin/env bash
# Issue 11 on the GPU machine, one device call: the whole-study benchmark of sweeps/idd_lite_loss.yaml as shipped.
#   bash benchmarks/gpu_sweep.sh [binary|binary-1proc|binary-4proc|multiclass|real|gpu-tests ...]   (default: binary multiclass)
# binary: the default, which runs under the sweep's own CUDA MPS daemon where the machine has MPS (resources.mps: auto);
# binary-nomps: the same without it (4 trials in 2 processes); binary-native: with trainer.native_depthwise (no
# run-time compiled depthwise kernels); binary-fp16: with trainer.precision=16-mixed; binary-v7: with TORCH_CUDNN_V8_API_DISABLED=1 exported to the sweep's workers
# binary-1proc / binary-4proc: the binary study with one / four worker processes per GPU (default two)
# binary-8: eight trials at once, four processes of two; binary-mps, binary-8-mps: those under CUDA MPS (started and
# stopped here, in its own pipe folder); imports: where a worker's and the driver's imports go; startup: a fresh
# process's first steps with and without the depthwise kernels compiled first (VARIANTS, STARTUP_S)
# Needs the wheels (../shared/offline-wheels/build.sh): the earlier calls copied every part but the last to
# /tmp/segsweep-parts; this one carries the last (.wheels/part3, or .wheels2/partB when repacked into two parts) and,
# for `real`, .data (the IDD-lite subset). Summaries land in $OUT (runs stay in /tmp: too many files).
set -uo pipefail
export PYTHONUNBUFFERED=1
for last in .wheels/part3 .wheels2/partB; do
  if [ -d "$last" ]; then
    bash "$last/install.sh" > /dev/null || exit 1
    # the wheels go in with --no-compile (one call's time): compile them as pip's own install does, so that the first
    # study of a call does not pay the bytecode compilation of Ray, W&B and smp in every process that imports them
    python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1
  fi
done
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
bench() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  rm -rf "/tmp/bs-$name"
  timeout "$limit" python3 -m orchestrator.cli bench-sweep sweeps/idd_lite_loss.yaml --out "/tmp/bs-$name" "$@" \
    > "/tmp/bs-$name.log" 2>&1
  echo "$name rc=$?"
  cp "/tmp/bs-$name/bench_sweep.md" "$OUT/$name.md" 2>/dev/null && cat "$OUT/$name.md"
  cp "/tmp/bs-$name/bench_sweep.json" "$OUT/$name.json" 2>/dev/null
  tail -3 "/tmp/bs-$name/orchestrate_run.log" 2>/dev/null
  cp "/tmp/bs-$name/orchestrate_run.log" "$OUT/$name.run.log" 2>/dev/null
}
for part in ${@:-binary multiclass}; do
  case $part in
    binary) bench binary "${BINARY_S:-290}" --seeds-sample "${SEEDS:-2}" ;;
    binary-nomps) bench binary-nomps "${BINARY_S:-290}" --seeds-sample 0 --set resources.mps=false ;;
    binary-native) bench binary-native "${BINARY_S:-290}" --seeds-sample 0 --set trainer.native_depthwise=true ;;
    binary-fp16)  # fp16 autocast (cuDNN's fp16 depthwise kernels; the step runs eagerly: no CUDA graphs with a scaler)
      bench binary-fp16 "${BINARY_S:-290}" --seeds-sample 0 --set trainer.precision=16-mixed ;;
    binary-v7)  # PyTorch's legacy cuDNN API in every worker (precompiled algorithms, a process-wide algorithm cache)
      (export TORCH_CUDNN_V8_API_DISABLED=1; bench binary-v7 "${BINARY_S:-290}" --seeds-sample 0) ;;
    binary-1proc) bench binary-1proc "${BINARY_S:-290}" --seeds-sample 0 --set resources.workers_per_gpu=1 ;;
    binary-4proc) bench binary-4proc "${BINARY_S:-290}" --seeds-sample 0 --set resources.workers_per_gpu=4 ;;
    multiclass) bench multiclass "${MULTICLASS_S:-190}" --seeds-sample 0 --set data.task=multiclass \
      --set search.metric=val/miou --set trainer.max_epochs=100 --set search.num_samples=16 ;;
    real) bench real "${REAL_S:-300}" --root .data/idd_lite_train_subset --set data.val_fraction=0.2 \
      --seeds-sample "${SEEDS:-2}" ;;
    binary-8) bench binary-8 "${BINARY_S:-290}" --seeds-sample 0 --set resources.trials_per_gpu=8 \
      --set resources.workers_per_gpu=4 ;;
    binary-mps|binary-8-mps)  # the same under CUDA MPS: the worker processes' kernels run side by side, not time-sliced
      export CUDA_MPS_PIPE_DIRECTORY=/tmp/segsweep-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/segsweep-mps/log
      mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY" && nvidia-cuda-mps-control -d && echo "MPS on"
      if [ "$part" = binary-mps ]; then bench binary-mps "${BINARY_S:-290}" --seeds-sample 0
      else bench binary-8-mps "${BINARY_S:-290}" --seeds-sample 0 --set resources.trials_per_gpu=8 \
        --set resources.workers_per_gpu=4; fi
      echo quit | nvidia-cuda-mps-control; sleep 1
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY ;;
    imports)
      python3 -c "import importlib.util as u; print('transformers installed:', u.find_spec('transformers') is not None)"
      for m in orchestrator.study orchestrator.pool.worker; do
        python3 -X importtime -c "import $m" 2> "$OUT/importtime-$m.txt"
        echo "import $m (cumulative us, the slowest 25):"; sort -t'|' -k2 -n "$OUT/importtime-$m.txt" | tail -25
      done ;;
    startup)  # a fresh process's first steps with the depthwise kernels compiled first (benchmarks/startup_profile.py)
      timeout "${STARTUP_S:-150}" python3 benchmarks/startup_profile.py --out /tmp/sp --images 256 --epochs 1 \
        --variants "${VARIANTS:-warm1,warm,concurrent4_warm}" > "$OUT/startup.log" 2>&1
      echo "startup rc=$?"; cp /tmp/sp/startup_profile.jsonl "$OUT/" 2>/dev/null; tail -8 "$OUT/startup.log" ;;
    gpu-tests) timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -15 ;;
  esac
done
