"""Latency benchmark for docs/benchmarks.md: ``orchestrate bench`` twice per model, shape and backend (separate
processes), to show the figures and how much p50 moves between two runs.

    python benchmarks/latency.py --out OUT_DIR [--backends torch,torch-compile,ort-cpu,ort-cpu@4] [--iters 200]

``BACKEND@N`` runs the backend with ``--threads N``; ``BACKEND@N:CORES`` also pins its processes to those cores
(``taskset -c``), as ``--cpus`` does for every backend. On a GPU each run also records the SM clock NVML read during it.

Writes OUT_DIR/latency.json (every result) and OUT_DIR/latency.md (the table, with the command line).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# (label, bench arguments, shapes): smp models need sides divisible by 32, so Unet runs CamVid's 360x480 padded
MODELS = [
    ("ENet", ["--arch", "enet", "--classes", "12"], ["1x3x256x320", "1x3x360x480"]),
    ("Unet-MobileNetV2", ["--arch", "unet", "--encoder", "mobilenet_v2", "--classes", "12"],
     ["1x3x256x320", "1x3x384x480"]),
]


def bench(args: list[str], cpus: str | None = None) -> dict:
    command = [sys.executable, "-m", "orchestrator.cli", "bench", *args, "--format", "json"]
    if cpus:  # the whole process (every thread, from its start) on these cores
        command = ["taskset", "-c", cpus, *command]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:  # e.g. no taskset here
        return {"error": f"{command[0]}: {e.strerror or e}"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def clocks(run: dict) -> str:
    """The SM clock NVML read during a GPU run, and why it was held below its maximum."""
    gpu = run.get("extra", {}).get("gpu")
    if not gpu:
        return "–"
    mhz = gpu["sm_clock_mhz"]
    reasons = ",".join(gpu["clock_event_reasons"]) or "none"
    return f"{mhz['min']:.0f}-{mhz['p50']:.0f}-{mhz['max']:.0f} ({reasons})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--backends", default="torch,torch-compile,ort-cpu")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--cpus", help="taskset core list for every bench process, e.g. 14,15 (BACKEND@N:CORES "
                                       "overrides it per backend)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, results = [], []
    for column in args.backends.split(","):
        backend, _, rest = column.partition("@")
        threads, _, cpus = rest.partition(":")
        for label, model_args, shapes in MODELS:
            for shape in shapes:
                iters = args.iters if backend.startswith("torch") else max(20, args.iters // 4)
                common = [*model_args, "--backend", backend, "--shape", shape, "--iters", str(iters),
                          "--warmup", str(args.warmup), *(["--threads", threads] if threads else [])]
                start = time.time()
                runs = [bench(common, cpus or args.cpus), bench(common, cpus or args.cpus)]
                results.append({"model": label, "shape": shape, "backend": column, "runs": runs,
                                "seconds": round(time.time() - start, 1)})
                (args.out / "latency.json").write_text(json.dumps(results, indent=2))  # kept if a later cell hangs
                print(label, shape, column, [r.get("p50_ms", r.get("error")) for r in runs],
                      [clocks(r) for r in runs], flush=True)
                if any("error" in r for r in runs):
                    rows.append(f"| {label} | {shape} | {column} | failed: {runs[0].get('error') or runs[1].get('error')} "
                                "| | | | | | | |")
                    continue
                a, b = runs
                drift = abs(a["p50_ms"] - b["p50_ms"]) / min(a["p50_ms"], b["p50_ms"]) * 100
                compute = (f"{a['compute']['p50_ms']:.3f} / {b['compute']['p50_ms']:.3f}" if a.get("compute") else "–")
                rows.append(f"| {label} | {shape} | {column} | {a['p50_ms']:.3f} / {b['p50_ms']:.3f} | {drift:.1f}% | "
                            f"{a['p90_ms']:.3f} | {a['p99_ms']:.3f} | {compute} | {a['throughput_fps']:.0f} | "
                            f"{clocks(a)} / {clocks(b)} | {a['device']} |")
    versions = next((r["runs"][0]["versions"] for r in results if "versions" in r["runs"][0]), {})
    table = ["| model | input | backend | p50 ms (run 1 / run 2) | p50 drift | p90 ms | p99 ms | "
             "compute-only p50 ms | img/s | SM MHz min-p50-max, reasons (run 1 / run 2) | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    (args.out / "latency.md").write_text(
        f"Command: `python benchmarks/latency.py --out OUT --backends {args.backends} --iters {args.iters} "
        f"--warmup {args.warmup}{' --cpus ' + args.cpus if args.cpus else ''}` (each cell: `orchestrate bench --arch ... --backend B --shape S --format json`, "
        f"run twice in separate processes). Versions: {json.dumps(versions)}.\n\n" + "\n".join(table) + "\n")
    print((args.out / "latency.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
