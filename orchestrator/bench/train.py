"""``orchestrate bench-train``: training throughput of the seeds' pipeline against segsweep's, in one run.

Parts (all on the same synthetic data, written as JPEG images and PNG labels in the IDD-lite layout):

- ``seeds``: what the seed projects do by hand: PIL decodes every JPEG/PNG in DataLoader workers every epoch, fp32,
  a plain Lightning loop (automatic optimisation, torch's default Adam).
- ``trial``: one segsweep trial's training as segsweep runs it (decode-once cache, the levers resolved for the
  device), plus the same with each lever turned off in turn and each opt-in lever turned on (``levers``).
- ``sweep``: a whole sweep of N identical-shape trials (learning rates differ) through Ray Tune on every GPU of the
  machine: aggregate images/s over the sweep's wall time, per-trial start-up, GPU memory per trial, GPU busy.
- ``quality``: final ``val/miou`` of a trial with every lever against the plain fp32 eager trial, same seeds.

Images/s of ``seeds`` and ``trial`` exclude the first epoch (cuDNN autotuning, graph capture, worker start-up);
the sweep's figure includes everything a user waits for.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.bench.seeds import EpochTimer, gpu_memory, seeds_pipeline
from orchestrator.bench.settings import BenchSettings, machine, sweep_spec
from orchestrator.data.prepare import prepare_data
from orchestrator.data.synthetic import generate_synthetic
from orchestrator.driver.tuner import cluster_gpus
from orchestrator.gpu import GpuSampler
from orchestrator.spec.load import build_sweep
from orchestrator.store import Store
from orchestrator.study import run_sweep
from orchestrator.trial.build import build_trial

PARTS = ("seeds", "trial", "levers", "sweep", "quality")
LEVER_SWITCHES = {  # spec setting -> what turning it off means
    "trainer.precision": "32",
    "trainer.channels_last": False,
    "trainer.fused_optimizer": False,
    "trainer.cuda_graphs": False,
    "trainer.device_augment": False,
    "data.cache": False,
    "data.device_cache": False,
}
OPT_IN = {"trainer.native_depthwise": True}  # levers that are off by default: measured turned on


def segsweep_trial(s: BenchSettings, root: Path, cache: Path, device: str, overrides: dict[str, Any] | None = None,
                   epochs: int | None = None, seed: int = 0) -> dict[str, Any]:
    """One trial's training exactly as a sweep runs it (``run_trial``'s pieces), without Ray."""
    spec = sweep_spec(s, root, {"optimizer.lr": 1e-3, **(overrides or {})}, epochs=epochs or s.epochs, seed=seed)
    sweep = build_sweep(spec, source="bench-train")
    prepared = prepare_data(sweep.spec.data, cache)
    config = sweep.fixed_config()
    timer = EpochTimer()
    trial = build_trial(config, prepared, use_gpu=device == "cuda", started=time.time(), groups=sweep.groups,
                        callbacks=[timer])
    trial.trainer.fit(trial.module, datamodule=trial.datamodule)
    last = trial.module.history[-1]
    return {"images_per_s": timer.images_per_s(prepared.train.images), "epoch_s": timer.seconds,
            "startup_s": round(trial.module.startup_s or 0, 2), "cuda_graphs": trial.module.step.graphed > 0,
            "graph_fallback": trial.module.step.fallback, "val/miou": last.get("val/miou"),
            "levers": trial.levers.__dict__, **gpu_memory(device)}


def segsweep_sweep(s: BenchSettings, root: Path, out: Path) -> dict[str, Any]:
    """N identical-shape trials through Ray Tune on the machine's GPUs; GPU use sampled throughout."""
    sweep = build_sweep(sweep_spec(s, root, dict(s.sweep_set)), source="bench-train")
    run_dir = out / f"sweep-{time.strftime('%H%M%S')}"
    t0 = time.perf_counter()
    with GpuSampler() as sampler:
        result = run_sweep(sweep, run_dir)
    wall = time.perf_counter() - t0
    store = Store.of_run(result.run_dir)
    trials = store.trials(history=True)
    meta = store.meta()
    images = sum(h.get("perf/images_per_s", 0) * h.get("perf/epoch_s", 0) for t in trials for h in t.history)
    startups = [t.history[0]["perf/startup_s"] for t in trials if t.history and "perf/startup_s" in t.history[0]]
    peaks = [max(h.get("perf/gpu_peak_gb", 0) for h in t.history) for t in trials if t.history]
    steady = [h["perf/images_per_s"] for t in trials for h in t.history[1:]]
    first = [t.history[0]["perf/epoch_s"] for t in trials if t.history and "perf/epoch_s" in t.history[0]]
    preloaded = [t.history[0].get("perf/preloaded", 0) for t in trials if t.history]
    return {
        "trials": len(trials), "completed": result.counts.get("completed", 0), "failed": result.counts.get("failed", 0),
        "images": round(images), "fit_s": round(meta.get("fit_seconds", 0), 2), "wall_s": round(wall, 2),
        "images_per_s": images / max(meta.get("fit_seconds", wall), 1e-9),
        "per_trial_images_per_s": sum(steady) / len(steady) if steady else None,
        "startup_s": {"min": min(startups), "max": max(startups), "mean": sum(startups) / len(startups)}
        if startups else None,
        "first_epoch_s": {"min": min(first), "max": max(first)} if first else None,
        "preloaded": sum(preloaded) / len(preloaded) if preloaded else None,
        "gpus": cluster_gpus(),  # what Ray gave the sweep
        "gpu_peak_gb_per_trial": max(peaks) if peaks else None,
        "gpu_busy": sampler.busy(), "gpu_sampler": sampler.source,
        "concurrent_max": max((h.get("perf/concurrent", 0) for t in trials for h in t.history[:1]), default=0),
        "run_dir": str(result.run_dir),
    }


def cache_footprint(cache: Path) -> dict[str, Any]:
    """Bytes of the decode-once cache against the decoded dataset (images HxWx3 + labels HxW, uint8)."""
    decoded = on_disk = 0
    for labels in cache.glob("*/labels.npy"):
        arr = np.load(labels, mmap_mode="r")
        decoded += arr.size * 4  # 3 image bytes + 1 label byte per pixel
        on_disk += labels.stat().st_size + (labels.parent / "images.npy").stat().st_size
    return {"decoded_mb": round(decoded / 2**20, 1), "cache_mb": round(on_disk / 2**20, 1),
            "ratio": round(on_disk / decoded, 3) if decoded else None,
            "note": "memory-mapped read-only: every trial of a node shares the same page-cache pages"}


def run_bench(s: BenchSettings, out: Path) -> dict[str, Any]:
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = out / "data"
    build_sweep(sweep_spec(s, root, dict(s.sweep_set)), source="bench-train")  # bad names fail here, before any work
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out.mkdir(parents=True, exist_ok=True)
    generate_synthetic(root, s.images, max(4, s.images // 4), s.size[0], s.size[1])
    cache = out / "cache"
    result: dict[str, Any] = {"settings": {**s.__dict__, "size": list(s.size), "parts": list(s.parts),
                                           "sweep_set": dict(s.sweep_set)},
                              "machine": machine(), "device": device}

    def save() -> None:  # after every part, so that a later failure keeps what was measured
        seeds = result.get("seeds", {}).get("images_per_s")
        for part in ("trial", "sweep"):
            if seeds and part in result:
                result[part]["x_seeds"] = result[part]["images_per_s"] / seeds
        (out / "bench_train.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "bench_train.md").write_text(markdown(result))

    if "seeds" in s.parts:
        result["seeds"] = seeds_pipeline(s, root, device)
        save()
    if "trial" in s.parts or "levers" in s.parts:
        result["trial"] = segsweep_trial(s, root, cache, device)
        result["cache"] = cache_footprint(cache)
        save()
    if "levers" in s.parts:
        for part, switches in (("levers_off", LEVER_SWITCHES), ("levers_on", OPT_IN)):
            result[part] = {}
            for key, value in switches.items():
                result[part][key] = segsweep_trial(s, root, cache, device, {key: value})
                save()
    if "sweep" in s.parts:
        result["sweep"] = segsweep_sweep(s, root, out)
        save()
    if "quality" in s.parts:
        plain = {key: off for key, off in LEVER_SWITCHES.items() if not key.startswith("data.")}
        result["quality"] = {}
        for seed in (0, 1):
            for name, overrides in (("fast", {}), ("plain_fp32_eager", plain)):
                trial = segsweep_trial(s, root, cache, device, overrides, s.quality_epochs, seed)
                result["quality"][f"{name}_seed{seed}"] = trial["val/miou"]
                save()
    return result


def markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [f"Training throughput, {s['arch']}-{s['encoder']} at {s['size'][0]}x{s['size'][1]}, batch {s['batch']}, "
             f"{s['images']} training images, on {', '.join(r['machine']['gpus']) or 'CPU'} "
             f"(torch {r['machine']['torch']}, {r['machine']['cpus']} CPUs)", "",
             "| pipeline | images/s | x seeds | notes |", "| --- | ---: | ---: | --- |"]
    seeds = r.get("seeds", {}).get("images_per_s")

    def row(name: str, ips: float | None, note: str) -> None:
        if ips is None:
            return
        ratio = f"{ips / seeds:.2f}" if seeds else ""
        lines.append(f"| {name} | {ips:,.0f} | {ratio} | {note} |")

    if "seeds" in r:
        row("seeds: PIL in DataLoader workers, fp32, plain Lightning", seeds,
            f"{r['seeds']['workers']} workers" + (f", {r['seeds']['gpu_peak_gb']} GB" if "gpu_peak_gb" in r["seeds"]
                                                  else ""))
    if "trial" in r:
        t = r["trial"]
        on = [k for k, v in t["levers"].items() if v not in (False, "32")]
        row("segsweep: one trial", t["images_per_s"],
            f"levers: {', '.join(on) or 'none'}; graphs {'on' if t['cuda_graphs'] else 'off'}"
            + (f"; {t['gpu_peak_gb']} GB" if "gpu_peak_gb" in t else ""))
    for part, state, base in (("levers_off", "off", "all on"), ("levers_on", "on (opt-in)", "the defaults")):
        for key, t in r.get(part, {}).items():
            ratio = t["images_per_s"] / r["trial"]["images_per_s"]
            row(f"segsweep: one trial, {key} {state}", t["images_per_s"], f"{ratio:.2f}x of {base}")
    if "sweep" in r:
        w = r["sweep"]
        busy = ", ".join(f"{b:.0%}" for b in w["gpu_busy"]) if w.get("gpu_busy") else "not sampled"
        start = w.get("startup_s") or {}
        extra = "".join(f", {k}={v}" for k, v in s.get("sweep_set", {}).items())
        row(f"segsweep: sweep of {w['trials']} trials{extra} (aggregate over the sweep's wall time)", w["images_per_s"],
            f"{w.get('gpus', 0):g} GPU(s); start-up {start.get('min', 0):.1f}-{start.get('max', 0):.1f} s; "
            f"first epoch {(w.get('first_epoch_s') or {}).get('max', 0):.1f} s at most; "
            f"{(w.get('preloaded') or 0):.0%} preloaded; GPU busy {busy}; "
            f"peak {w.get('gpu_peak_gb_per_trial') or 0:.2f} GB per trial")
    if "cache" in r:
        c = r["cache"]
        lines += ["", f"Decode-once cache: {c['cache_mb']} MB for {c['decoded_mb']} MB of decoded pixels "
                      f"(ratio {c['ratio']}), {c['note']}."]
    if "quality" in r:
        lines += ["", "Final val/miou: " + ", ".join(f"{k} {v:.4f}" for k, v in r["quality"].items() if v is not None)]
    return "\n".join(lines) + "\n"
