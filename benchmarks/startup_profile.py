"""Where a new trial process spends its first seconds (issue 5: the first epoch of a fresh process takes 12-30 s on an
H100, 1-5 s in a process that has trained before).

    python benchmarks/startup_profile.py --out OUT [--images 512] [--epochs 2] [--variants default,concurrent4,...]

For each variant, fresh child processes train two trials back to back (as a reused actor would) and report, with
the GPU synchronised at each mark: imports, CUDA initialisation, building the trial, the first training steps one by
one (eager warm-up, capture, replays), each epoch, and each validation pass. Variants turn one thing off at a time:

- ``default``: every lever on;            ``concurrent4``: four children at once, as 4 packed trials start;
- ``no_graphs`` / ``fp32`` / ``no_channels_last``: that lever off;  ``native_depthwise``: that opt-in lever on;
- ``no_cudnn``: ``torch.backends.cudnn.enabled = False``;  ``eager_loading``: ``CUDA_MODULE_LOADING=EAGER``;
- ``cudnn_v7``: PyTorch's older cuDNN path (``TORCH_CUDNN_V8_API_DISABLED=1``: cuDNN's legacy convolution API, whose
  algorithms are precompiled, and a process-wide algorithm cache); ``heur_b``: cuDNN's heuristics in mode B
  (``TORCH_CUDNN_USE_HEURISTIC_MODE_B=1``);
- ``jitcache``: the CUDA driver's JIT cache in a fresh folder (``CUDA_CACHE_PATH``, 4 GiB): run it twice to see
  whether a second process finds its kernels there;
- ``warm`` / ``warm1`` / ``warm_here``: before the first trial, the depthwise convolutions' kernels compiled as a
  pool worker does (``compile_depthwise``) on 8 threads / on 1 / in the thread that then trains;
  ``concurrent4_warm``: four children at once, 4 threads each.

Each child also lists the NVRTC and cuDNN libraries its process has mapped after the first trial (NVRTC means kernels
were compiled at run time).

Writes OUT/startup_profile.jsonl (one line per child) and prints a table.
"""

from __future__ import annotations

import time

T_START = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

VARIANTS = {
    "default": {},
    "concurrent4": {},
    "no_graphs": {"trainer.cuda_graphs": False},
    "fp32": {"trainer.precision": "32"},
    "no_channels_last": {"trainer.channels_last": False},
    "native_depthwise": {"trainer.native_depthwise": True},
    "no_cudnn": {},
    "eager_loading": {},
    "cudnn_v7": {},
    "heur_b": {},
    "jitcache": {},
    "warm": {},
    "warm1": {},
    "concurrent4_warm": {},
    "warm_here": {},
}
WARM_THREADS = {"warm": 8, "warm1": 1, "concurrent4_warm": 4, "warm_here": 0}
ENVIRONMENT = {"eager_loading": {"CUDA_MODULE_LOADING": "EAGER"}, "cudnn_v7": {"TORCH_CUDNN_V8_API_DISABLED": "1"},
               "heur_b": {"TORCH_CUDNN_USE_HEURISTIC_MODE_B": "1"}}


def child(variant: str, root: Path, cache: Path, images: int, epochs: int) -> dict:
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.time() - T_START, 3)

    import torch

    mark("import_torch")
    import lightning.pytorch as L

    from orchestrator.bench.settings import BenchSettings, sweep_spec
    from orchestrator.data.prepare import prepare_data
    from orchestrator.spec import build_sweep
    from orchestrator.trial.build import build_trial

    mark("import_rest")
    if variant == "no_cudnn":
        torch.backends.cudnn.enabled = False
    gpu = torch.cuda.is_available()  # a CPU run only checks the script
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    torch.zeros(1, device="cuda" if gpu else "cpu")
    sync()
    mark("cuda_init")

    class Marks(L.Callback):
        def __init__(self, prefix: str) -> None:
            self.prefix, self.epoch = prefix, 0

        def _at(self, name: str) -> None:
            sync()
            mark(f"{self.prefix}{name}")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if self.epoch == 0 and batch_idx < 6:
                self._at(f"e0_step{batch_idx}")

        def on_validation_start(self, trainer, module) -> None:  # Lightning validates inside the training epoch
            self._at(f"e{self.epoch}_val_start")

        def on_validation_end(self, trainer, module) -> None:
            self._at(f"e{self.epoch}_val_end")

        def on_train_epoch_end(self, trainer, module) -> None:
            self._at(f"e{self.epoch}_train_end")
            self.epoch += 1

    settings = BenchSettings(images=images)
    overrides = {"optimizer.lr": 1e-3, "trainer.max_epochs": epochs, **VARIANTS[variant]}
    sweep = build_sweep(sweep_spec(settings, root, overrides, epochs=epochs), source="startup-profile")
    prepared = prepare_data(sweep.spec.data, cache)
    if variant in WARM_THREADS and gpu:
        from benchmarks.depthwise_warm import compile_depthwise, depthwise_runs

        compile_depthwise(depthwise_runs(sweep.fixed_config(), prepared), torch.device("cuda"), WARM_THREADS[variant])
        mark("warm")
    graphed = []
    for number in (1, 2):
        prefix = f"t{number}_"
        run = build_trial(sweep.fixed_config(), prepared, use_gpu=gpu, started=T_START, groups=sweep.groups)
        mark(f"{prefix}built")
        run.trainer.callbacks.append(Marks(prefix))
        run.trainer.fit(run.module, datamodule=run.datamodule)
        mark(f"{prefix}fit_end")
        graphed.append(run.module.step.graphed > 0)
        if number == 1:
            with open("/proc/self/maps") as f:
                libraries = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in f
                                    if "nvrtc" in line or "cudnn" in line})
    return {"variant": variant, "pid": os.getpid(), "marks": marks, "graphed": graphed, "libraries": libraries,
            "gpu_peak_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2) if gpu else None}


def spans(marks: dict[str, float]) -> dict[str, float]:
    """Durations between consecutive marks, named by the mark that ends them."""
    out, last = {}, 0.0
    for name, t in marks.items():
        out[name] = round(t - last, 3)
        last = t
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args()
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.child:
        print(json.dumps(child(args.child, args.root, args.cache, args.images, args.epochs)), flush=True)
        return 0

    from orchestrator.bench.settings import BenchSettings, sweep_spec
    from orchestrator.data.prepare import prepare_data
    from orchestrator.data.synthetic import generate_synthetic
    from orchestrator.spec import build_sweep

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    root, cache = out / "data", out / "cache"
    settings = BenchSettings(images=args.images)
    generate_synthetic(root, settings.images, settings.images // 4, *settings.size)
    prepare_data(build_sweep(sweep_spec(settings, root), source="startup-profile").spec.data, cache)
    lines = []
    for variant in args.variants.split(","):
        env = {**os.environ, **ENVIRONMENT.get(variant, {})}
        if variant == "jitcache":
            env["CUDA_CACHE_PATH"], env["CUDA_CACHE_MAXSIZE"] = str(out / "jitcache"), str(4 * 2**30)
        command = [sys.executable, __file__, "--child", variant, "--root", str(root), "--cache", str(cache),
                   "--images", str(args.images), "--epochs", str(args.epochs)]
        children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(4 if variant.startswith("concurrent4") else 1)]
        for process in children:
            stdout, stderr = process.communicate()
            if process.returncode != 0:
                result = {"variant": variant, "error": (stderr.strip().splitlines() or ["failed"])[-1]}
            else:
                result = json.loads(stdout.strip().splitlines()[-1])
                result["spans"] = spans(result["marks"])
                marks = result["marks"]
                if "t2_e1_train_end" in marks:  # the second trial's second epoch: the steady speed, plans all made
                    result["steady_epoch_s"] = round(marks["t2_e1_train_end"] - marks["t2_e0_train_end"], 3)
                if variant == "jitcache":
                    result["jitcache_mb"] = round(sum(f.stat().st_size for f in (out / "jitcache").rglob("*")
                                                      if f.is_file()) / 2**20, 1)
            lines.append(result)
            print(json.dumps(result), flush=True)
            with (out / "startup_profile.jsonl").open("a") as f:
                f.write(json.dumps(result) + "\n")
    keys = ["import_torch", "import_rest", "cuda_init", "warm", "t1_built", "t1_e0_step0", "t1_e0_step1", "t1_e0_step2",
            "t1_e0_step3", "t1_e0_step4", "t1_e0_val_start", "t1_e0_val_end", "t1_e1_val_start", "t1_e1_val_end",
            "t2_built", "t2_e0_step0", "t2_e0_step3", "t2_e0_val_start", "t2_e0_val_end", "t2_fit_end"]
    print("| variant | " + " | ".join(keys) + " | steady epoch | NVRTC mapped |")
    print("|---" * (len(keys) + 3) + "|")
    for r in lines:
        if "spans" in r:
            compiled = any(name.startswith("libnvrtc") for name in r["libraries"])  # not torch's libcaffe2_nvrtc
            print(f"| {r['variant']} | " + " | ".join(f"{r['spans'].get(k, float('nan')):.2f}" for k in keys)
                  + f" | {r.get('steady_epoch_s', float('nan')):.2f} | {compiled} |")
        else:
            print(f"| {r['variant']} | {r['error']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
