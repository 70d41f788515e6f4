#!/usr/bin/env bash
# One device call: install the small wheels the GPU image lacks (carry .whl), then the latency benchmark.
#   run: bash benchmarks/gpu_latency.sh [backends]     (writes into $OUT)
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ort', onnxruntime.__version__, onnxruntime.get_available_providers())" | tee -a "$OUT/gpu.txt"
python3 benchmarks/latency.py --out "$OUT" --backends "${1:-torch,ort-cpu,torch-compile}" 2>&1 | tee "$OUT/log.txt"
