"""``orchestrate bench-sweep SPEC``: a study file, unchanged (but for ``--set``), timed as a user runs it, from
``orchestrate run`` (a process of its own) to its report, on data of the real shape; then the seeds' plain loop (a
process per trial, PIL decoding, fp32, eager) on a fixed sample of the same trials, and the ratio of the two.

Data: ``--root`` (real data, as the spec's dataset reads it), else synthetic road scenes written in the IDD-lite
layout with IDD-lite's shape: 281 train / 204 val images of 227x320. The figures: wall time, trained and validated
images, GPU busy (NVML) over the run and over the fit, trials running over time, the wall split by phase (the
driver's phases from the store, the trials' start-up, training, validation, checkpointing and queueing from their
epochs, the driver's tracking and store writes, and the time no trial trained), and for the seeds' sample its epochs'
seconds and validation metrics beside the sweep's for the same trials.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.data.synthetic import generate_synthetic
from orchestrator.errors import SegsweepError
from orchestrator.gpu import GpuSampler
from orchestrator.pool.resident import STATE_ENV, USER_ENV, start_holder, stop_holder
from orchestrator.spec.load import load_spec
from orchestrator.store import Store, TrialRow


@dataclass(frozen=True)
class SweepBench:
    spec: Path
    sets: tuple[str, ...] = ()
    root: Path | None = None  # real data; None: synthetic in the IDD-lite layout, of ``shape``
    shape: tuple[int, int, int, int] = (281, 204, 227, 320)  # synthetic train and val images, height, width
    seeds_sample: int = 3  # trials of the study timed again the seeds' way (0: none)
    seeds_workers: int = 8  # the seeds' DataLoader workers
    timeout_s: float = 3600.0


def run_bench_sweep(b: SweepBench, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    root = b.root or generate_synthetic(out / "data", *b.shape)
    result = timed_run(b, root, out, "run")
    save(result, out)
    if b.seeds_sample:
        store = Store.of_run(result["run_dir"])
        result["seeds"] = seeds_sample(store.trials(history=True), store.meta(), b, out, result["wall_s"])
        save(result, out)
    return result


def run_command(b: SweepBench, root: Path, run_dir: Path, address: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(b.spec), "--out", str(run_dir)]
    for item in [*b.sets, f"data.root={root}"]:
        command += ["--set", item]
    return command + (["--address", address] if address else [])


def timed_run(b: SweepBench, root: Path, out: Path, name: str, address: str | None = None,
              user: str | None = None, pool_state: Path | None = None) -> dict[str, Any]:
    """One ``orchestrate run`` of the study (on the pool at ``address``, whose state file holds its token, where
    given), timed from its start to its report, with the GPU sampled; its figures from the store. Its log:
    ``out/orchestrate_<name>.log``."""
    run_dir = out / f"{name}-{time.strftime('%H%M%S')}"
    env = {**os.environ, "IDD_LITE_ROOT": str(root), "PYTHONUNBUFFERED": "1", **({USER_ENV: user} if user else {}),
           **({STATE_ENV: str(pool_state)} if pool_state else {})}
    with GpuSampler(interval_s=0.2) as sampler:
        started = time.time()
        done = subprocess.run(run_command(b, root, run_dir, address), capture_output=True, text=True,
                              timeout=b.timeout_s, env=env)
        wall = time.time() - started
    (out / f"orchestrate_{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SegsweepError(f"orchestrate run {b.spec} failed (exit {done.returncode}): {last}")
    store = Store.of_run(run_dir)
    trials = store.trials(history=True)
    return {"spec": str(b.spec), "sets": [*b.sets, f"data.root={root}"], "root": str(root), "synthetic": b.root is None,
            "wall_s": round(wall, 2), "run_dir": str(run_dir), "first_step_s": first_step(trials, started),
            **sweep_figures(store.meta(), trials, started, wall, sampler), "workers": worker_timelines(run_dir, started)}


def first_step(trials: list[TrialRow], started: float) -> float | None:
    """Seconds from ``orchestrate run`` to the end of the study's first training step (a trial's start in its
    worker plus its start-up)."""
    steps = [t.history[0]["perf/started_at"] + t.history[0].get("perf/startup_s", 0.0) - started for t in trials
             if t.history and "perf/started_at" in t.history[0]]
    return round(min(steps), 2) if steps else None


POOL_RUNS = ("cold", "first", "warm", "two-users")  # "first": the pool's first study (done for any but cold)


def run_pool_bench(b: SweepBench, out: Path, runs: tuple[str, ...] = POOL_RUNS) -> dict[str, Any]:
    """Cold, warm and two users, in one run: the study on its own Ray; ``orchestrate pool start``; the study on the
    pool twice (the first run of an architecture warms its kernels there); two users submitting it at once to the
    pool; ``pool stop``. The figures of each, and the two users' walls against the warm one. ``runs``: which of
    ``POOL_RUNS`` (pools of several shapes compared by their first studies alone, for example)."""
    unknown = sorted(set(runs) - set(POOL_RUNS))
    if unknown or not runs:
        raise SegsweepError(f"--pool-runs {','.join(runs)}: expected some of {','.join(POOL_RUNS)}")
    out.mkdir(parents=True, exist_ok=True)
    root = b.root or generate_synthetic(out / "data", *b.shape)
    result: dict[str, Any] = {"spec": str(b.spec), "sets": [*b.sets, f"data.root={root}"]}

    def keep(key: str, value: Any) -> None:  # each figure saved as it comes: a run cut short keeps the earlier ones
        result[key] = value
        (out / "bench_pool.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "bench_pool.md").write_text(pool_markdown(result))

    if "cold" in runs:
        keep("cold", timed_run(b, root, out, "cold"))
    if set(runs) == {"cold"}:
        return result
    state = out / "pool.json"
    started = time.time()
    info = start_holder(state, pool_resources(b, root), log=out / "pool.log")
    keep("pool_start_s", round(time.time() - started, 2))
    keep("pool", {"workers": len(info["workers"]), "slots": info.get("slots"), "mps": info.get("mps")})
    try:
        keep("warm_first", timed_run(b, root, out, "warm1", info["address"], pool_state=state))
        if "warm" in runs:
            keep("warm", timed_run(b, root, out, "warm2", info["address"], pool_state=state))
        if "two-users" in runs:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                both = list(pool.map(lambda user: timed_run(b, root, out, f"two-{user}", info["address"], user,
                                                            state), ("alice", "bob")))
            result["two_users"] = both
            warm = result.get("warm", result["warm_first"])
            keep("two_users_x_warm", round(max(r["wall_s"] for r in both) / warm["wall_s"], 2))
    finally:
        stop_holder(state)
    return result


def pool_resources(b: SweepBench, root: Path) -> dict[str, Any]:
    """The pool shaped by the study's own resources (after its --set), as its cold run packs its trials."""
    return load_spec(b.spec, [*b.sets, f"data.root={root}"]).spec.resources.model_dump(mode="json")


def pool_markdown(r: dict[str, Any]) -> str:
    def row(label: str, x: dict[str, Any]) -> str:
        busy = f"{x['gpu_busy_fit'][0]:.0%}" if x.get("gpu_busy_fit") else "not sampled"
        return (f"| {label} | {x['wall_s']:.1f} s | {x['first_step_s'] if x['first_step_s'] is not None else '–'} s | "
                f"{x['train_images_per_s_fit']:,.0f} | {busy} | {next(iter(x['best'].values())) or float('nan'):.4f} |")
    lines = [f"`orchestrate bench-sweep {r['spec']} --pool` ({' '.join(r['sets'])})", "",
             "| run | wall, run to report | first step after `orchestrate run` | train images/s (fit) | GPU busy (fit)"
             " | best |", "|---|---:|---:|---:|---:|---:|"]
    for key, label in (("cold", "cold: its own Ray and workers"), ("warm_first", "on the pool, first (its kernels "
                       "compile)"), ("warm", "on the pool, warm")):
        if key in r:
            lines.append(row(label, r[key]))
    lines += [row(f"two users at once: {x['run_dir'].split('/')[-1].split('-')[1]}", x) for x in r.get("two_users", [])]
    if "pool_start_s" in r:
        shape = r.get("pool", {})
        lines += ["", f"`orchestrate pool start`: {r['pool_start_s']:.1f} s ({shape.get('workers')} worker(s), "
                      f"{shape.get('slots')} trial(s) at once{', under CUDA MPS' if shape.get('mps') else ''})."]
    if "two_users_x_warm" in r:
        lines += [f"Two users at once: the later finished **{r['two_users_x_warm']}x** the "
                  f"{'warm' if 'warm' in r else 'first pool'} run's wall."]
    return "\n".join(lines) + "\n"


def sweep_figures(meta: dict, trials: list[TrialRow], started: float, wall: float,
                  sampler: GpuSampler) -> dict[str, Any]:
    """What the store and the GPU sampler say about one run of the study (pure over its inputs but the sampler)."""
    train_images, val_images = meta["data"]["train"]["images"], meta["data"]["val"]["images"]
    epochs = [h for t in trials for h in t.history]
    timings = meta.get("timings", {})
    intervals = [(t.history[0]["perf/started_at"], max(h["perf/at"] for h in t.history)) for t in trials
                 if t.history and "perf/started_at" in t.history[0]]
    fit_start, fit_end = meta.get("fit_window", (started, started + wall))
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    busy, fit_busy = sampler.busy(), sampler.busy(fit_start, fit_end)
    return {
        "trials": len(trials), "statuses": counts, "epochs": len(epochs),
        "trained_images": len(epochs) * train_images, "validated_images": len(epochs) * val_images,
        "train_images_per_s_fit": round(len(epochs) * train_images / max(fit_end - fit_start, 1e-9), 1),
        "mps": bool(meta.get("mps", False)),
        "gpu_busy": busy, "gpu_busy_fit": fit_busy, "gpu_sampler": sampler.source,
        "phases_s": {k: round(v, 2) for k, v in timings.items()},
        "trial_seconds": trial_seconds(trials),
        "first_epochs": first_epochs(trials, started),
        "running_over_time": running_over_time(intervals, started, wall),
        "no_trial_training_s": round(idle_seconds(intervals, fit_start, fit_end), 2),
        "idle_gpu_s": round(wall * (1 - busy[0]), 2) if busy else None,
        "best": {meta["metric"]: max((t.best.get(meta["metric"], float("nan")) for t in trials), default=None)},
    }


def worker_timelines(run_dir: Path, started: float) -> list[dict[str, Any]]:
    """Each worker's start, readiness (imports done), attachment, warm-up steps and first trial, in seconds since
    ``orchestrate run`` started (from ``RUN_DIR/pool/worker-*.json``)."""
    out = []
    for path in sorted((run_dir / "pool").glob("worker-*.json")):
        events = json.loads(path.read_text())
        first = {e["event"]: round(e["at"] - started, 2) for e in reversed(events)}
        trials = [e for e in events if e["event"] == "trial"]
        out.append({"pid": int(path.stem.split("-")[1]), "process": first.get("process"), "ready": first.get("ready"),
                    "attached": first.get("attached"),
                    "warm_up": [{"arch": e["arch"], "s": e["seconds"]} for e in events if e["event"] == "warm-up"],
                    "first_trial_started": round(min(e["started"] for e in trials) - started, 2) if trials else None,
                    "trials": len(trials)})
    return out


def trial_seconds(trials: list[TrialRow]) -> dict[str, float]:
    """Seconds of all trials together (they overlap: trial-seconds, not wall): queueing in a worker, start-up (build,
    first step), training, validation, checkpoint and best-weight saving, and the first epochs' excess over the
    trial's later epochs (cuDNN planning and graph capture), and the waits for Tune's word on an epoch (the worker
    runs one epoch ahead of it, none at an ASHA rung)."""
    out = {"queued": 0.0, "startup": 0.0, "train": 0.0, "validation": 0.0, "saving": 0.0, "first_epoch_excess": 0.0,
           "waiting_for_tune": 0.0}
    for t in trials:
        if not t.history:
            continue
        first = t.history[0]
        out["queued"] += first.get("perf/queued_s", 0.0)
        out["startup"] += first.get("perf/startup_s", 0.0)
        out["train"] += sum(h.get("perf/train_s", 0.0) for h in t.history)
        out["validation"] += sum(h.get("perf/val_s", 0.0) for h in t.history)
        out["saving"] += sum(h.get("perf/save_s", 0.0) for h in t.history)
        out["waiting_for_tune"] += sum(h.get("perf/wait_s", 0.0) for h in t.history)
        later = [h.get("perf/train_s", 0.0) for h in t.history[1:]]
        if later:
            out["first_epoch_excess"] += max(0.0, first.get("perf/train_s", 0.0) - statistics.median(later))
    return {k: round(v, 2) for k, v in out.items()}


def first_epochs(trials: list[TrialRow], started: float) -> list[dict[str, Any]]:
    """Per trial, in the order they started: when (seconds since ``orchestrate run``), its architecture and loss,
    how many trials ran beside it, and its first epoch's training seconds against its later epochs' median (the JSON
    only: where the first-epoch excess goes)."""
    rows = []
    for t in trials:
        if not t.history or "perf/started_at" not in t.history[0]:
            continue
        first, later = t.history[0], [h.get("perf/train_s", 0.0) for h in t.history[1:]]
        rows.append({"at": round(first["perf/started_at"] - started, 2), "arch": t.config.get("model.arch"),
                     "loss": t.config.get("loss.name"), "concurrent": first.get("perf/concurrent"),
                     "first_s": round(first.get("perf/train_s", 0.0), 2),
                     "later_s": round(statistics.median(later), 2) if later else None})
    return sorted(rows, key=lambda r: r["at"])


def running_over_time(intervals: list[tuple[float, float]], start: float, wall: float, step: float = 1.0) -> list:
    """Trials training (between their start in a worker and their last epoch) every ``step`` seconds of the run."""
    return [sum(a <= start + s < b for a, b in intervals) for s in [i * step for i in range(int(wall // step) + 1)]]


def idle_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds between ``start`` and ``end`` in which no trial was training (the union's gaps)."""
    covered, cursor = 0.0, start
    for a, b in sorted(intervals):
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return max(0.0, (end - start) - covered)


def sample(trials: list[TrialRow], k: int) -> list[TrialRow]:
    """``k`` finished trials spread evenly over the study's order (the first, the last, and between)."""
    done = [t for t in trials if t.status in ("completed", "early_stopped") and t.epochs]
    if len(done) <= k:
        return done
    return [done[round(i * (len(done) - 1) / max(1, k - 1))] for i in range(k)]


def seeds_sample(trials: list[TrialRow], meta: dict, b: SweepBench, out: Path, sweep_wall: float) -> dict[str, Any]:
    """The sampled trials, each the seeds' way in a process of its own for the epochs it trained in the sweep; their
    whole study estimated from them (per architecture: a process's start plus epochs x seconds per epoch)."""
    rows = []
    for t in sample(trials, b.seeds_sample):
        request = out / f"seeds-{t.id}.json"
        request.write_text(json.dumps({"config": t.config, "data": meta["data"], "epochs": t.epochs,
                                       "workers": b.seeds_workers}))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "orchestrator.bench.seeds", str(request)], capture_output=True,
                              text=True, timeout=b.timeout_s)
        if done.returncode != 0:
            raise SegsweepError(f"the seeds' loop failed on trial {t.id}: "
                                f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        metric = meta["metric"]
        rows.append({"trial": t.id, "arch": t.config.get("model.arch"), "loss": t.config.get("loss.name"),
                     "epochs": t.epochs, "process_s": round(time.perf_counter() - started, 2),
                     "epoch_s": result["epoch_s"],
                     "seeds_best": max((h.get(metric, float("nan")) for h in result["history"]), default=None),
                     "sweep_best": t.best.get(metric)})
    estimate = seeds_estimate(trials, rows)
    return {"trials": rows, "estimated_study_s": round(estimate, 1),
            "x_sweep": round(estimate / sweep_wall, 2) if sweep_wall else None}


def seeds_estimate(trials: list[TrialRow], rows: list[dict[str, Any]]) -> float:
    """The whole study run the seeds' way, one trial after another: per trial, a process's fixed cost (its seconds
    less its epochs') plus its epochs at the seconds per epoch of sampled trials of its architecture (of all sampled
    trials where none has it)."""
    if not rows:
        return 0.0
    per_epoch = {}
    for r in rows:
        per_epoch.setdefault(r["arch"], []).append(sum(r["epoch_s"]) / max(1, len(r["epoch_s"])))
    overall = statistics.mean(s for v in per_epoch.values() for s in v)
    fixed = statistics.mean(r["process_s"] - sum(r["epoch_s"]) for r in rows)
    return sum(fixed + t.epochs * statistics.mean(per_epoch.get(t.config.get("model.arch"), [overall]))
               for t in trials if t.epochs)


def save(result: dict[str, Any], out: Path) -> None:
    (out / "bench_sweep.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "bench_sweep.md").write_text(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    busy = ", ".join(f"{v:.0%}" for v in r["gpu_busy"]) if r.get("gpu_busy") else "not sampled"
    fit_busy = ", ".join(f"{v:.0%}" for v in r["gpu_busy_fit"]) if r.get("gpu_busy_fit") else "not sampled"
    lines = [f"`orchestrate run {r['spec']}` {' '.join('--set ' + s for s in r['sets'])}", "",
             "| figure | value |", "|---|---:|",
             f"| wall, `orchestrate run` to report | {r['wall_s']:.1f} s |",
             f"| trials (statuses) | {r['trials']} ({', '.join(f'{k} {v}' for k, v in r['statuses'].items())}) |",
             f"| epochs; images trained / validated | {r['epochs']}; {r['trained_images']:,} / "
             f"{r['validated_images']:,} |",
             f"| training images per second of the fit | {r.get('train_images_per_s_fit', float('nan')):,.0f} |",
             f"| GPU busy over the run / over the fit | {busy} / {fit_busy} |",
             f"| workers under CUDA MPS | {'yes' if r.get('mps') else 'no'} |",
             f"| no trial training during the fit | {r['no_trial_training_s']:.1f} s |",
             f"| best {next(iter(r['best']))} | {next(iter(r['best'].values())) or float('nan'):.4f} |"]
    lines += ["", "Driver phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items()),
              "", "Trial-seconds (overlapping): " + ", ".join(f"{k} {v:.1f}" for k, v in r["trial_seconds"].items()),
              "", "Workers (s since orchestrate run): " + "; ".join(
                  f"process {w['process']}, ready {w['ready']}, attached {w['attached']}, warm-up "
                  f"{'+'.join(str(x['s']) for x in w['warm_up']) or 'none'}, first trial {w['first_trial_started']}"
                  for w in r.get("workers", [])),
              "", "Trials training (the most in each 5 s of the run): " + " ".join(
                  str(max(r["running_over_time"][i:i + 5])) for i in range(0, len(r["running_over_time"]), 5))]
    if "seeds" in r:
        s = r["seeds"]
        lines += ["", f"Seeds' plain loop (a process per trial, PIL, fp32, eager) on {len(s['trials'])} of the "
                      f"trials: the study estimated at {s['estimated_study_s']:.0f} s, **{s['x_sweep']}x** the "
                      "sweep's wall.", "",
                  "| trial | arch | loss | epochs | seeds process s | seeds s/epoch | best (seeds) | best (sweep) |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for t in s["trials"]:
            per = sum(t["epoch_s"]) / max(1, len(t["epoch_s"]))
            lines.append(f"| {t['trial']} | {t['arch']} | {t['loss']} | {t['epochs']} | {t['process_s']:.1f} | "
                         f"{per:.2f} | {t['seeds_best']:.4f} | {t['sweep_best']:.4f} |")
    return "\n".join(lines) + "\n"
