"""GPU checks behind issue 5's levers, printed as JSON lines (run on the GPU machine by gpu_train.sh):

1. CUDA-graph capture per loss and optimizer: graphed, or the fallback reason;
2. the same 6 steps eager and graphed from the same weights in fp32: loss difference;
3. the driver's memory probe and the share it admits a small and a large trial with (4 per GPU asked);
4. ``python3 benchmarks/gpu_checks.py OUT probe-cache``: only this one: a probe, then a second run on the same machine
   that finds the peak in the machine's file instead of probing again (both timed);
5. ``python3 benchmarks/gpu_checks.py OUT depthwise``: only this one: 6 steps from the same weights and batches with
   depthwise convolutions through cuDNN and through PyTorch's kernels (``trainer.native_depthwise``), fp32 eager and
   bf16 graphed: loss differences, and whether the native ones capture.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
from orchestrator.driver.admission import TrialResources, machine_memory_file

from models.depthwise import native_depthwise
from models.losses import create_loss
from models.registry import create_model
from orchestrator.data.prepare import prepare_data
from orchestrator.gpu import gpu_identity
from orchestrator.spec.schema import DataSpec
from orchestrator.trial.data import normalise, to_model_input
from orchestrator.trial.levers import Levers
from orchestrator.trial.module import SegmentationModule

device = torch.device("cuda")


def steps(loss_name: str, optimizer: str, graphs: bool, precision: str = "bf16-mixed", model=None, n: int = 6,
          binary: bool = False, native: bool = False):
    torch.manual_seed(0)
    model = model or create_model("unet", "mobilenet_v2", classes=1 if binary else 7)
    levers = Levers(precision, True, True, graphs, True, native)
    model = model.to(device).to(memory_format=torch.channels_last)
    if native:
        native_depthwise(model)
    loss = create_loss(loss_name, "binary" if binary else "multiclass", 255).to(device)
    module = SegmentationModule(model, loss, tuple("abcdefg") if not binary else ("bg", "fg"), 255,
                                1 if binary else None, optim={"name": optimizer, "lr": 1e-3, "weight_decay": 0.0,
                                                              "momentum": 0.9},
                                schedule={"name": "constant"}, max_epochs=1, levers=levers, batch_size=8).to(device)
    opt = module.build_optimizer()
    g = torch.Generator(device="cpu").manual_seed(1)
    losses = []
    for _ in range(n):
        images = torch.randint(0, 255, (8, 128, 160, 3), dtype=torch.uint8, generator=g).to(device)
        labels = torch.randint(0, 2 if binary else 7, (8, 128, 160), generator=g).to(device)
        losses.append(float(module.step(normalise(to_model_input(images), True), labels, opt)))
    return module.step, losses


def probe_cache(out: Path) -> None:
    import time

    config = {"data.dataset": "synthetic", "data.root": "/tmp/segsweep-probe", "data.task": "multiclass",
              "loss.name": "ce", "optimizer.name": "adam", "optimizer.lr": 1e-3, "model.arch": "unet",
              "model.encoder": "mobilenet_v2", "data.size": [224, 320], "trainer.batch_size": 16}
    data = prepare_data(DataSpec(dataset="synthetic", root="/tmp/segsweep-probe", size=[32, 32],
                                 synthetic={"train": 4, "val": 2, "height": 32, "width": 32}), out / "cache")
    for run in ("run1", "run2"):
        (out / run).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        peak, total = TrialResources(1, 0.25, True, str(out / run), data=data).estimate(config)
        print(json.dumps({"check": "probe kept per machine", "run": run, "seconds": round(time.perf_counter() - t0, 2),
                          "peak_gb": round(peak / 2**30, 2), "gpu": gpu_identity(),
                          "machine_file": str(machine_memory_file())}), flush=True)


def depthwise() -> None:
    base = create_model("unet", "mobilenet_v2", classes=7)
    for precision, graphs in (("32", False), ("bf16-mixed", True)):
        _, cudnn = steps("ce", "adam", graphs, precision, copy.deepcopy(base), native=False)
        step, native = steps("ce", "adam", graphs, precision, copy.deepcopy(base), native=True)
        print(json.dumps({"check": f"depthwise cuDNN vs native, {precision}, graphs {graphs}", "cudnn": cudnn,
                          "native": native, "native_graphed_replays": step.graphed, "fallback": step.fallback,
                          "max_abs_diff": max(abs(a - b) for a, b in zip(cudnn, native))}), flush=True)


MODES = {"probe-cache": lambda: probe_cache(Path(sys.argv[1])), "depthwise": depthwise}
if len(sys.argv) > 2:
    if sys.argv[2] not in MODES:
        sys.exit(f"gpu_checks.py: unknown check {sys.argv[2]!r}; give one of {', '.join(MODES)} or none for the rest")
    MODES[sys.argv[2]]()
    sys.exit(0)

for loss_name, binary in (("ce", False), ("weighted_ce_enet", False), ("dice", False), ("focal", False),
                          ("tversky", False), ("lovasz", False), ("bce_dice", True)):
    for optimizer in ("adam", "adamw", "sgd"):
        if loss_name == "weighted_ce_enet":
            continue  # needs class counts; same kernels as ce
        try:
            step, losses = steps(loss_name, optimizer, True, binary=binary)
            print(json.dumps({"check": "capture", "loss": loss_name, "optimizer": optimizer,
                              "graphed_replays": step.graphed, "fallback": step.fallback}), flush=True)
        except Exception as e:  # noqa: BLE001
            print(json.dumps({"check": "capture", "loss": loss_name, "optimizer": optimizer,
                              "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)

base = create_model("unet", "mobilenet_v2", classes=7)
_, eager = steps("ce", "adam", False, "32", copy.deepcopy(base))
step, graphed = steps("ce", "adam", True, "32", copy.deepcopy(base))
print(json.dumps({"check": "parity fp32 eager vs graphed (6 steps, same weights and batches)", "eager": eager,
                  "graphed": graphed, "graphed_replays": step.graphed,
                  "max_abs_diff": max(abs(a - b) for a, b in zip(eager, graphed))}), flush=True)

for name, cfg in {
    "unet-mobilenet_v2 224x320 b16": {"model.arch": "unet", "model.encoder": "mobilenet_v2", "data.size": [224, 320],
                                      "trainer.batch_size": 16},
    "unet-resnet50 1024x2048 b16": {"model.arch": "unet", "model.encoder": "resnet50", "data.size": [1024, 2048],
                                    "trainer.batch_size": 16},
}.items():
    config = {"data.dataset": "synthetic", "data.root": "/tmp/segsweep-probe", "data.task": "multiclass",
              "loss.name": "ce", "optimizer.name": "adam", "optimizer.lr": 1e-3, **cfg}
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    data = prepare_data(DataSpec(dataset="synthetic", root="/tmp/segsweep-probe", size=[32, 32],
                                 synthetic={"train": 4, "val": 2, "height": 32, "width": 32}), Path(out) / "cache")
    planner = TrialResources(1, 0.25, True, out, data=data)
    share = planner.share(config)
    peak, total = planner.estimate(config)
    print(json.dumps({"check": "memory admission", "trial": name, "peak_gb": round(peak / 2**30, 2),
                      "gpu_gb": round(total / 2**30, 1), "asked": 0.25, "admitted": share}), flush=True)
