#!/usr/bin/env bash
# The GPU machine's one benchmark entry point: each part is an `orchestrate` command (bench-sweep, bench-train,
# run/evaluate) or the gpu tests; figures and their commands go into docs/benchmarks.md.
#   bash benchmarks/gpu_sweep.sh [PART ...]          (default: binary multiclass)
# Parts (the shipped sweeps/idd_lite_loss.yaml, unchanged but for --set; synthetic scenes of IDD-lite's shape):
#   binary              the study as shipped (under the sweep's own CUDA MPS where the machine has it)
#   binary-nomps        the same without MPS (4 trials in 2 processes)
#   binary-native       with trainer.native_depthwise (no run-time compiled depthwise kernels)
#   binary-fp16         with trainer.precision=16-mixed
#   binary-1proc, binary-4proc, binary-8   one / four worker processes per GPU, eight trials at once
#   multiclass          the multiclass variant (100 epochs, 16 trials)
#   real                the study on the real IDD-lite subset (.data/idd_lite_train_subset, val: 20% of it)
#   enet-check          the shipped ENet study, shortened, on the real subset; then evaluate on val (issue 24)
#   pool                cold, then on a pool started for the study: warm twice, two users at once (issue 26)
#   pool-shapes         pools packed otherwise (SHAPES="8x4 12x6 16x8": trials x worker processes per GPU), each
#                       timed by its first study (RUNS=first; RUNS=first,warm adds a warm one)
#   train               orchestrate bench-train (the seeds' pipeline, one trial, each lever, a sweep)
#   imports             where a worker's and the driver's imports go
#   gpu-tests           pytest -m gpu
# DRY_RUN=1: on any machine, check every part's study and --set keys with `orchestrate validate` and run nothing
# (tests/test_benchmarks.py does, on CPU). Time limits: BINARY_S, MULTICLASS_S, REAL_S, ENET_S, POOL_S, SHAPE_S, TRAIN_S, TESTS_S.
# Needs the wheels (../shared/offline-wheels/build.sh): the earlier calls copied every part but the last to
# /tmp/segsweep-parts; this one carries the last (.wheels/part3, or .wheels2/partB when repacked into two parts of
# <= 64 MiB with the tree) and, for `real` and `enet-check`, .data. Summaries land in $OUT (runs stay in /tmp).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-sweep-out}
mkdir -p "$OUT"
if [ -z "${DRY_RUN:-}" ]; then
  last=$(ls -d .wheels/part3 .wheels2/partB 2>/dev/null | head -1)  # the last part carried (three parts, or two)
  if [ -n "$last" ]; then
    bash "$last/install.sh" > /dev/null || exit 1
    # the wheels go in with --no-compile (one call's time): compile them as pip's own install does, so that the
    # first study of a call does not pay the bytecode compilation of Ray, W&B and smp in every process
    python3 -m compileall -q -j 0 /tmp/site > /dev/null 2>&1
  fi
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
fi
STUDY=sweeps/idd_lite_loss.yaml
REAL=.data/idd_lite_train_subset

validate() {  # SPEC [--set k=v ...]: what a part would run, checked (DRY_RUN)
  local spec=$1; shift
  local sets=() a
  while [ $# -gt 0 ]; do
    a=$1; shift
    case $a in
      --set) sets+=(--set "$1"); shift ;;
      --root) sets+=(--set "data.root=$PWD"); shift ;;  # the keys are checked, not the data (not here on CI)
      --seeds-sample|--out|--shape) shift ;;
    esac
  done
  IDD_LITE_ROOT=${IDD_LITE_ROOT:-/tmp} CAMVID_ROOT=${CAMVID_ROOT:-/tmp} \
    python3 -m orchestrator.cli validate "$spec" "${sets[@]}" > /dev/null || { echo "DRY_RUN: $spec ${sets[*]} does not validate"; exit 1; }
}

bench() {  # name timeout args...: orchestrate bench-sweep of the shipped study
  local name=$1 limit=$2; shift 2
  if [ -n "${DRY_RUN:-}" ]; then validate "$STUDY" "$@"; echo "$name: ok"; return; fi
  rm -rf "/tmp/bs-$name"
  timeout "$limit" python3 -m orchestrator.cli bench-sweep "$STUDY" --out "/tmp/bs-$name" "$@" \
    > "/tmp/bs-$name.log" 2>&1
  echo "$name rc=$?"
  cp "/tmp/bs-$name/bench_sweep.md" "$OUT/$name.md" 2>/dev/null && cat "$OUT/$name.md"
  cp "/tmp/bs-$name/bench_sweep.json" "$OUT/$name.json" 2>/dev/null
  tail -3 "/tmp/bs-$name/orchestrate_run.log" 2>/dev/null
  cp "/tmp/bs-$name/orchestrate_run.log" "$OUT/$name.run.log" 2>/dev/null
}

enet_check() {
  local args=(sweeps/camvid_enet.yaml --set data.dataset=idd_lite --set data.val_fraction=0.2
              --set "data.size=[224,320]" --set "model.stage1_epochs=${STAGE1:-20}"
              --set "trainer.max_epochs=${EPOCHS:-60}" --set schedule.step_epochs=40
              --set tracking.wandb.mode=disabled)
  if [ -n "${DRY_RUN:-}" ]; then CAMVID_ROOT=$PWD validate "${args[@]}"; echo "enet-check: ok"; return; fi
  rm -rf /tmp/enet-check
  CAMVID_ROOT=$REAL timeout "${ENET_S:-300}" python3 -m orchestrator.cli run "${args[@]}" --out /tmp/enet-check \
    > "$OUT/enet-check.log" 2>&1
  echo "enet-check rc=$?"; tail -6 "$OUT/enet-check.log"
  timeout 120 python3 -m orchestrator.cli evaluate /tmp/enet-check --split val --top-k 2 >> "$OUT/enet-check.log" 2>&1
  echo "evaluate rc=$?"; tail -5 "$OUT/enet-check.log"; cp /tmp/enet-check/report.md "$OUT/enet-check.md"
}

for part in ${@:-binary multiclass}; do
  case $part in
    binary) bench binary "${BINARY_S:-290}" --seeds-sample "${SEEDS:-2}" ;;
    binary-nomps) bench binary-nomps "${BINARY_S:-290}" --seeds-sample 0 --set resources.mps=false ;;
    binary-native) bench binary-native "${BINARY_S:-290}" --seeds-sample 0 --set trainer.native_depthwise=true ;;
    binary-fp16) bench binary-fp16 "${BINARY_S:-290}" --seeds-sample 0 --set trainer.precision=16-mixed ;;
    binary-1proc) bench binary-1proc "${BINARY_S:-290}" --seeds-sample 0 --set resources.workers_per_gpu=1 ;;
    binary-4proc) bench binary-4proc "${BINARY_S:-290}" --seeds-sample 0 --set resources.workers_per_gpu=4 ;;
    binary-8) bench binary-8 "${BINARY_S:-290}" --seeds-sample 0 --set resources.trials_per_gpu=8 \
      --set resources.workers_per_gpu=4 ;;
    multiclass) bench multiclass "${MULTICLASS_S:-190}" --seeds-sample 0 --set data.task=multiclass \
      --set search.metric=val/miou --set trainer.max_epochs=100 --set search.num_samples=16 ;;
    real) bench real "${REAL_S:-300}" --root "$REAL" --set data.val_fraction=0.2 --seeds-sample "${SEEDS:-2}" ;;
    enet-check) enet_check ;;
    pool)  # issue 26: cold, then a pool started for the study, warm twice, two users at once (bench-sweep --pool)
      if [ -n "${DRY_RUN:-}" ]; then validate "$STUDY"; echo "pool: ok"; continue; fi
      rm -rf /tmp/bs-pool
      timeout "${POOL_S:-590}" python3 -m orchestrator.cli bench-sweep "$STUDY" --pool --seeds-sample 0 \
        --out /tmp/bs-pool > "$OUT/pool.log" 2>&1
      echo "pool rc=$?"; cat /tmp/bs-pool/bench_pool.md; cp /tmp/bs-pool/bench_pool.md /tmp/bs-pool/bench_pool.json "$OUT/"
      for f in /tmp/bs-pool/orchestrate_*.log; do tail -2 "$f"; done
      tail -3 /tmp/bs-pool/pool.log ;;
    pool-shapes)  # pools of other packings (SHAPES: TRIALSxWORKERS per GPU), each by its first study (RUNS)
      for shape in ${SHAPES:-8x4 12x6 16x8}; do
        sets=(--set "resources.trials_per_gpu=${shape%x*}" --set "resources.workers_per_gpu=${shape#*x}")
        if [ -n "${DRY_RUN:-}" ]; then validate "$STUDY" "${sets[@]}"; continue; fi
        rm -rf "/tmp/bs-shape-$shape"
        timeout "${SHAPE_S:-200}" python3 -m orchestrator.cli bench-sweep "$STUDY" --pool --pool-runs "${RUNS:-first}" \
          --seeds-sample 0 "${sets[@]}" --out "/tmp/bs-shape-$shape" > "$OUT/shape-$shape.log" 2>&1
        echo "pool-shapes $shape rc=$?"; cat "/tmp/bs-shape-$shape/bench_pool.md"
        cp "/tmp/bs-shape-$shape/bench_pool.json" "$OUT/shape-$shape.json" 2>/dev/null
      done
      [ -n "${DRY_RUN:-}" ] && echo "pool-shapes: ok" ;;
    train)
      if [ -n "${DRY_RUN:-}" ]; then python3 -m orchestrator.cli bench-train --help > /dev/null && echo "train: ok"
      else timeout "${TRAIN_S:-300}" python3 -m orchestrator.cli bench-train --out /tmp/bench-train \
          --parts seeds,trial,levers,sweep > "$OUT/train.log" 2>&1; echo "train rc=$?"
        cp /tmp/bench-train/bench_train.md "$OUT/train.md" 2>/dev/null && cat "$OUT/train.md"; fi ;;
    imports)
      [ -n "${DRY_RUN:-}" ] && { echo "imports: ok"; continue; }
      for m in orchestrator.study orchestrator.pool.worker; do
        python3 -X importtime -c "import $m" 2> "$OUT/importtime-$m.txt"
        echo "import $m (cumulative us, the slowest 25):"; sort -t'|' -k2 -n "$OUT/importtime-$m.txt" | tail -25
      done ;;
    gpu-tests)
      [ -n "${DRY_RUN:-}" ] && { echo "gpu-tests: ok"; continue; }
      timeout "${TESTS_S:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -15 ;;
    *) echo "unknown part '$part' (see the header of $0)"; exit 2 ;;
  esac
done
