"""The GPU-memory probe: the peak GPU memory of a few real training steps of one configuration, measured in a child
process (``python -m orchestrator.trial.probe``) so that the driver holds no CUDA context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from orchestrator.data.cache import PreparedData
from orchestrator.errors import SegsweepError
from orchestrator.gpu import process_bytes
from orchestrator.trial.build import build_module
from orchestrator.trial.config import TrialConfig
from orchestrator.trial.data import normalise, to_model_input

CONTEXT_BYTES = 600 * 2**20  # a CUDA context where the per-process figure cannot be read


def probe_memory(config: dict[str, Any], groups: dict, data: PreparedData) -> dict[str, float]:
    """Peak GPU memory of a few training steps of ``config`` on ``data`` (a PreparedData; graph capture included),
    measured in a child process so that the driver holds no CUDA context."""
    payload = json.dumps({"config": config, "groups": groups, "data": data.to_json()}, default=str)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.trial.probe"], input=payload, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegsweepError(f"GPU memory probe failed ({last}); set resources.trial_gpu_memory_gb and "
                            f"resources.gpu_memory_gb, or resources.memory_aware: false")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["probe_s"] = round(time.perf_counter() - t0, 2)
    return result


def main() -> None:
    """Child side of ``probe_memory``: the trial's own module (``build_module``), 5 steps on random data of its shape,
    graph capture included."""
    request = json.loads(sys.stdin.read())
    cfg = TrialConfig.from_flat(request["config"], request["groups"])
    data = PreparedData.from_json(request["data"])
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device in the driver's process")
    device = torch.device("cuda")
    module = build_module(cfg, data, use_gpu=True).to(device)
    levers, step, optimizer = module.levers, module.step, module.build_optimizer()
    classes = max(2, len(data.classes))
    n, (h, w) = cfg.trainer.batch_size, cfg.data.size
    before = process_bytes()
    for _ in range(step.WARMUP + 2):
        images = torch.randint(0, 255, (n, h, w, 3), dtype=torch.uint8, device=device)
        labels = torch.randint(0, classes, (n, h, w), device=device)
        x = to_model_input(images)
        step(normalise(x, levers.channels_last), labels, optimizer)
    torch.cuda.synchronize()
    used = process_bytes()
    peak = torch.cuda.max_memory_reserved()
    if used is not None:  # the whole process as the driver sees it: context + allocator peak
        peak = max(used, peak + (before or 0))
    else:
        peak += CONTEXT_BYTES
    total = torch.cuda.get_device_properties(device).total_memory
    print(json.dumps({"peak_bytes": peak, "gpu_bytes": total, "graphs": step.graphed,
                      "device": torch.cuda.get_device_name(device)}))


if __name__ == "__main__":
    main()
