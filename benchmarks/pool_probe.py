"""Issue 11, before building the trial pool: what several trials in ONE process (a thread and a CUDA stream each)
give on a GPU, against one trial alone. Prints JSON lines, then a table.

1. cuDNN's run-time compilation: the first step of a fresh thread, a second fresh thread, the main thread again
   (per-thread plan caches would show as a second slow first step);
2. steady images/s of 1, 2, 4, 8 concurrent trials of one architecture (graphed bf16 channels-last steps, the
   trial's own TrainStep), and of three architectures mixed, with NVML's GPU busy;
3. a validation pass (forward only, eval, bf16) in images/s.

Run on the GPU machine: ``python3 benchmarks/pool_probe.py`` (needs segmentation-models-pytorch; ~3 minutes).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import torch

from models.losses import create_loss
from models.registry import create_model
from orchestrator.gpu import GpuSampler
from orchestrator.trial.data import normalise, to_model_input
from orchestrator.trial.levers import Levers
from orchestrator.trial.module import SegmentationModule

H, W, B = 256, 320, 16
LEVERS = Levers("bf16-mixed", True, True, True, True, False)
device = torch.device("cuda")


def module_for(arch: str) -> SegmentationModule:
    model = create_model(arch, "mobilenet_v2", classes=1).to(device).to(memory_format=torch.channels_last)
    module = SegmentationModule(model, create_loss("bce_dice", "binary").to(device), ("background", "road"), 255, 1,
                                {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9},
                                {"name": "constant"}, max_epochs=1, levers=LEVERS, batch_size=B).to(device)
    return module


def run(arch: str, steps: int, out: dict, barrier: threading.Barrier | None = None, warm: int = 6) -> None:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        module = module_for(arch)
        optimizer = module.build_optimizer()
        images = torch.randint(0, 255, (B, H, W, 3), dtype=torch.uint8, device=device)
        labels = torch.randint(0, 2, (B, H, W), device=device)
        x = normalise(to_model_input(images), True)
        t0 = time.perf_counter()
        module.step(x, labels, optimizer)
        stream.synchronize()
        out["first_step_s"] = round(time.perf_counter() - t0, 3)
        for _ in range(warm):
            module.step(x, labels, optimizer)
        stream.synchronize()
        if barrier is not None:
            barrier.wait()
        t0 = time.perf_counter()
        for _ in range(steps):
            module.step(x, labels, optimizer)
        stream.synchronize()
        out["seconds"] = time.perf_counter() - t0
        out["images_per_s"] = steps * B / out["seconds"]
        out["graphed"] = module.step.graphed


def threaded(archs: list[str], steps: int) -> dict:
    results = [{} for _ in archs]
    barrier = threading.Barrier(len(archs) + 1)
    threads = [threading.Thread(target=run, args=(a, steps, r, barrier)) for a, r in zip(archs, results)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    with GpuSampler(interval_s=0.05) as sampler:
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    return {"archs": archs, "aggregate_images_per_s": round(len(archs) * steps * B / wall, 1),
            "per_trial_images_per_s": [round(r["images_per_s"], 1) for r in results],
            "first_step_s": [r["first_step_s"] for r in results], "graphed": [r["graphed"] for r in results],
            "gpu_busy": sampler.busy()}


def validation(arch: str, images: int = 204) -> dict:
    module = module_for(arch).eval()
    x = normalise(to_model_input(torch.randint(0, 255, (B, H, W, 3), dtype=torch.uint8, device=device)), True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            module(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(images // B + 1):
            module(x)
        torch.cuda.synchronize()
    return {"arch": arch, "val_images_per_s": round((images // B + 1) * B / (time.perf_counter() - t0), 1)}


def main() -> None:
    print(json.dumps({"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                      "gpu": torch.cuda.get_device_name(0)}), flush=True)
    rows = []
    for name in ("fresh thread", "second fresh thread", "main thread"):
        out: dict = {}
        if name == "main thread":
            run("unet", 20, out)
        else:
            t = threading.Thread(target=run, args=("unet", 20, out))
            t.start()
            t.join()
        line = {"check": "compile", "where": name, **{k: round(v, 3) for k, v in out.items()}}
        print(json.dumps(line), flush=True)
        rows.append(line)
    # is a fresh thread's ~2 s first step the thread's (its cuDNN plans) or the module's? one thread, two modules
    firsts: list = []

    def two_modules() -> None:
        for _ in range(2):
            out: dict = {}
            run("unet", 5, out)
            firsts.append(out["first_step_s"])

    t = threading.Thread(target=two_modules)
    t.start()
    t.join()
    print(json.dumps({"check": "compile", "where": "one new thread, two modules one after another",
                      "first_step_s": firsts}), flush=True)
    if "--only-compile" in sys.argv:
        return
    for archs in (["unet"], ["unet"] * 2, ["unet"] * 4, ["unet"] * 8, ["unet", "fpn", "deeplabv3plus"] * 2,
                  ["unet"] * 12):
        line = {"check": "concurrent", **threaded(archs, 60)}
        print(json.dumps(line), flush=True)
        rows.append(line)
    for arch in ("unet", "fpn", "deeplabv3plus"):
        print(json.dumps({"check": "validation", **validation(arch)}), flush=True)
    print("\n| trials in one process | aggregate img/s | per trial img/s | GPU busy |\n|---|---:|---:|---:|")
    for r in rows:
        if r["check"] == "concurrent":
            busy = f"{r['gpu_busy'][0]:.0%}" if r["gpu_busy"] else "-"
            print(f"| {len(r['archs'])} ({'/'.join(sorted(set(r['archs'])))}) | {r['aggregate_images_per_s']:,.0f} | "
                  f"{min(r['per_trial_images_per_s']):,.0f}-{max(r['per_trial_images_per_s']):,.0f} | {busy} |")


if __name__ == "__main__":
    main()
