#!/usr/bin/env bash
# One device call (carry .whl): the depthwise lever on a GPU. Parity and capture (gpu_checks.py depthwise), where a
# fresh process spends its first seconds with and without it (startup_profile.py), and one trial's throughput with
# every lever on and each off in turn (bench-train's trial and levers parts, without Ray).
#   run: bash benchmarks/gpu_levers.sh          (writes into $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/gpu.txt"
timeout "${CHECKS_S:-120}" python3 benchmarks/gpu_checks.py /tmp/chk depthwise > "$OUT/checks.log" 2>&1
echo "checks rc=$?"; grep '"check"' "$OUT/checks.log" | cut -c1-400
timeout "${PROFILE_S:-200}" python3 benchmarks/startup_profile.py --out /tmp/sp --images 512 --epochs 2 \
  --variants "${VARIANTS:-default,native_depthwise,concurrent4}" > "$OUT/sp.log" 2>&1
echo "profile rc=$?"; cp /tmp/sp/startup_profile.jsonl "$OUT/" 2>/dev/null; tail -8 "$OUT/sp.log"
timeout "${BENCH_S:-240}" python3 -c "
import sys; from pathlib import Path
from orchestrator.bench.train import BenchSettings, run_bench
run_bench(BenchSettings(images=1024, epochs=3, workers=8, parts=('trial', 'levers')), Path('/tmp/bt'))
" > "$OUT/bt.log" 2>&1
echo "bench rc=$?"; mkdir -p "$OUT/bt"; cp /tmp/bt/bench_train.* "$OUT/bt/" 2>/dev/null
cat "$OUT/bt/bench_train.md" 2>/dev/null || tail -5 "$OUT/bt.log"
