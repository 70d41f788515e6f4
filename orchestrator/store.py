"""The results store: one SQLite file per run, written by the driver only, read by every report.

Tables: ``meta`` (sweep name, metric, mode, ...), ``trials`` (one row per trial: flat config, status, error line,
the budgets it broke, epochs done, best and last metrics, size, train time), ``epochs`` (one row per trial and epoch),
``latency`` (with power and energy where measured) and ``evaluations`` (held-out splits) per trial, and ``checks``
(the self-check: a trial's saved best weights re-scored on the validation split against its recorded best). An epoch
row is keyed by (trial, epoch), so a trial that restarts from a checkpoint after a crash overwrites rather than
duplicates. A store made before a status or a column existed is brought up to date when it is opened (``_migrate``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.budgets import INFEASIBLE
from orchestrator.errors import SegsweepError
from orchestrator.rundir import RunDir

STATUSES = ("pending", "running", "completed", "early_stopped", "infeasible", "failed")
TERMINAL = ("completed", "early_stopped", "infeasible", "failed")
FINISHED = ("completed", "early_stopped")  # trained to their end: weights to evaluate
SETTLED = (*FINISHED, "infeasible")  # ended for good (an infeasible trial is never trained): nothing resumes them

TRIALS_TABLE = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'early_stopped', 'infeasible', 'failed')),
    config TEXT NOT NULL,
    error TEXT,
    infeasible TEXT,
    epochs INTEGER NOT NULL DEFAULT 0,
    best TEXT NOT NULL DEFAULT '{}',
    last TEXT NOT NULL DEFAULT '{}',
    params INTEGER,
    size_mb REAL,
    gmacs REAL,
    train_seconds REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + TRIALS_TABLE + """
CREATE TABLE IF NOT EXISTS latency (
    trial_id TEXT NOT NULL REFERENCES trials(id),
    backend TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    p50_ms REAL,
    result TEXT,
    error TEXT,
    measured_at REAL NOT NULL,
    power_w REAL,
    energy_mj REAL,
    PRIMARY KEY (trial_id, backend, target)
);
CREATE TABLE IF NOT EXISTS evaluations (
    trial_id TEXT NOT NULL REFERENCES trials(id),
    split TEXT NOT NULL,
    tta TEXT NOT NULL,
    images INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    evaluated_at REAL NOT NULL,
    PRIMARY KEY (trial_id, split, tta)
);
CREATE TABLE IF NOT EXISTS checks (
    trial_id TEXT PRIMARY KEY REFERENCES trials(id),
    metric TEXT NOT NULL,
    recorded REAL,
    measured REAL,
    tolerance REAL NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    seconds REAL,
    checked_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    trial_id TEXT NOT NULL REFERENCES trials(id),
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (trial_id, epoch)
);
"""


def metric_mode(name: str) -> str:
    """Direction in which a metric improves: losses, latencies, power and energy go down, everything else up."""
    return "min" if "loss" in name or name.startswith(("latency", "energy/", "power/")) else "max"


STAGE1 = "stage1/"  # prefix of a staged model's first-stage losses and validation metrics (``stage1/val/miou``)
FULL_EPOCH = "full_epoch"  # reported with each epoch of the full network: epochs less the first stage's (ASHA's time)


def ended_as(result: dict[str, Any], max_epochs: int) -> str:
    """How a trial that Tune ended without an error ended, by its last result: ``infeasible`` when it was over a
    budget (never trained), ``completed`` when it trained every epoch, else ``early_stopped`` (the scheduler stopped
    it). The store and Optuna's study both go by this."""
    if result.get(INFEASIBLE):
        return "infeasible"
    return "completed" if int(result.get("epoch", 0)) >= max_epochs else "early_stopped"


def is_metric(key: str) -> bool:
    """Reported metric keys are namespaced (``val/miou``, ``train/loss``, ``stage1/val/miou`` of a staged model's first
    stage, ``latency/p50_ms``, ``power/mean_w`` and ``energy/mj_per_image`` from a trial's latency proxy,
    ``perf/images_per_s`` from the speed levers); Tune's bookkeeping keys are not."""
    return key.startswith(("val/", "train/", STAGE1, "latency/", "energy/", "power/", "perf/"))


@dataclass
class TrialRow:
    id: str
    status: str
    config: dict[str, Any]
    error: str | None
    epochs: int
    best: dict[str, float]
    last: dict[str, float]
    params: int | None
    size_mb: float | None
    gmacs: float | None
    train_seconds: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    infeasible: str | None = None  # the budgets an infeasible trial broke, one line


class Store:
    @classmethod
    def of_run(cls, run_dir: str | Path) -> Store:
        """The store of a run directory; a folder without one is a one-line error."""
        path = RunDir(run_dir).store
        if not path.is_file():
            raise SegsweepError(f"{run_dir}: no {path.name}; is this a segsweep run directory?")
        return cls(path)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with self._db() as db:
            db.executescript(SCHEMA)
            outdated = _outdated(db) is not None
        if outdated:  # a second connection only for an earlier segsweep's store
            _migrate(self.path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ writing (driver only)
    def set_meta(self, **values: Any) -> None:
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def add_trial(self, trial_id: str, config: dict[str, Any], status: str = "pending") -> None:
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO trials (id, status, config, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at "
                "WHERE trials.status NOT IN ('completed', 'early_stopped', 'infeasible')",
                (trial_id, status, json.dumps(config, default=str), now, now),
            )

    def record_epoch(self, trial_id: str, result: dict[str, Any]) -> None:
        """Store one reported epoch and refresh the trial's best/last metrics, size and train time."""
        epoch = int(result["epoch"])
        metrics = {k: float(v) for k, v in result.items() if is_metric(k) and finite(v)}
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)", (trial_id, epoch, json.dumps(metrics)))
            history = [json.loads(m) for (m,) in db.execute(
                "SELECT metrics FROM epochs WHERE trial_id = ? ORDER BY epoch", (trial_id,))]
            best: dict[str, float] = {}
            for row in history:
                for k, v in row.items():
                    if k not in best or (v > best[k] if metric_mode(k) == "max" else v < best[k]):
                        best[k] = v
            db.execute(
                "UPDATE trials SET status = 'running', epochs = ?, best = ?, last = ?, params = ?, size_mb = ?, "
                "gmacs = ?, train_seconds = ?, updated_at = ? WHERE id = ?",
                (len(history), json.dumps(best), json.dumps(metrics), _int(result.get("model/params")),
                 result.get("model/size_mb"), result.get("model/gmacs"), result.get("time_total_s"), time.time(),
                 trial_id),
            )

    def finish_trial(self, trial_id: str, status: str, error: str | None = None) -> None:
        """Record how a trial ended. A trial already completed, early-stopped or infeasible keeps that: after a hard
        kill, Tune may restore it from an older snapshot as unfinished, and its immediate end then is no new
        outcome."""
        if status not in TERMINAL:
            raise ValueError(f"{status} is not a final status")
        with self._db() as db:
            db.execute("UPDATE trials SET status = ?, error = ?, updated_at = ? WHERE id = ? "
                       "AND status NOT IN ('completed', 'early_stopped', 'infeasible')",
                       (status, error, time.time(), trial_id))

    def record_infeasible(self, trial_id: str, result: dict[str, Any], broken: str) -> None:
        """A trial over budget, never trained: its figures (model size and compute, the latency proxy's latency and
        energy) as its metrics, and ``broken``, the budgets it broke in one line."""
        figures = {k: float(v) for k, v in result.items() if is_metric(k) and finite(v)}
        with self._db() as db:
            db.execute(
                "UPDATE trials SET status = 'infeasible', infeasible = ?, epochs = 0, best = ?, last = ?, params = ?, "
                "size_mb = ?, gmacs = ?, updated_at = ? WHERE id = ? AND status NOT IN ('completed', 'early_stopped')",
                (broken, json.dumps(figures), json.dumps(figures), _int(result.get("model/params")),
                 result.get("model/size_mb"), result.get("model/gmacs"), time.time(), trial_id))

    def drop_unfinished_except(self, keep: set[str]) -> list[str]:
        """Delete unfinished trials not in ``keep`` (with their epochs); returns their ids.

        After a hard kill, trials the driver started after Tune's last snapshot are unknown to the restored
        experiment: Tune suggests their configurations again under new ids, so their rows would be duplicates.
        """
        with self._db() as db:
            ids = [i for (i,) in db.execute("SELECT id FROM trials WHERE status IN ('pending', 'running')")
                   if i not in keep]
            db.executemany("DELETE FROM epochs WHERE trial_id = ?", [(i,) for i in ids])
            db.executemany("DELETE FROM trials WHERE id = ?", [(i,) for i in ids])
        return ids

    def record_latency(self, trial_id: str, backend: str, target: str, result: dict[str, Any] | None,
                       error: str | None = None) -> None:
        """One measurement of a trial's exported model (``result``: LatencyResult JSON, with its mean power in W and
        energy per image in mJ where the target measured them), or its failure."""
        energy = (result or {}).get("energy") or {}
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO latency (trial_id, backend, target, status, p50_ms, result, error, "
                       "measured_at, power_w, energy_mj) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (trial_id, backend, target, "ok" if result else "failed",
                        result["p50_ms"] if result else None, json.dumps(result) if result else None, error,
                        time.time(), energy.get("power_w"), energy.get("mj_per_image")))

    def latencies(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT trial_id, backend, target, status, p50_ms, result, error, power_w, energy_mj "
                              "FROM latency ORDER BY trial_id, backend, target").fetchall()
        return [{"trial_id": r[0], "backend": r[1], "target": r[2], "status": r[3], "p50_ms": r[4],
                 "result": json.loads(r[5]) if r[5] else None, "error": r[6], "power_w": r[7], "energy_mj": r[8]}
                for r in rows]

    def record_evaluation(self, trial_id: str, split: str, tta: str, images: int, metrics: dict[str, float]) -> None:
        """A trial's best weights evaluated on a labelled split (``metrics``: ``miou``, ``iou/<class>`` ...)."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?, ?)",
                       (trial_id, split, tta, images, json.dumps(metrics), time.time()))

    def evaluations(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT trial_id, split, tta, images, metrics FROM evaluations "
                              "ORDER BY trial_id, split, tta").fetchall()
        return [{"trial_id": r[0], "split": r[1], "tta": r[2], "images": r[3], "metrics": json.loads(r[4])}
                for r in rows]

    def record_check(self, trial_id: str, metric: str, recorded: float | None, measured: float | None,
                     tolerance: float, ok: bool, error: str | None = None, seconds: float | None = None) -> None:
        """The self-check of a trial: ``measured`` is its saved best weights' ``metric`` on the validation split again,
        ``ok`` whether it came within ``tolerance`` of ``recorded``; ``error`` when it could not be measured."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (trial_id, metric, recorded, measured, tolerance, int(ok), error, seconds, time.time()))

    def checks(self) -> dict[str, dict[str, Any]]:
        """Each checked trial's self-check: ``metric, recorded, measured, tolerance, ok, error, seconds``."""
        with self._db() as db:
            rows = db.execute("SELECT trial_id, metric, recorded, measured, tolerance, ok, error, seconds "
                              "FROM checks ORDER BY trial_id").fetchall()
        return {r[0]: {"metric": r[1], "recorded": r[2], "measured": r[3], "tolerance": r[4], "ok": bool(r[5]),
                       "error": r[6], "seconds": r[7]} for r in rows}

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any]:
        with self._db() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

    def trials(self, history: bool = False) -> list[TrialRow]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, status, config, error, infeasible, epochs, best, last, params, size_mb, gmacs, "
                "train_seconds FROM trials ORDER BY created_at, id").fetchall()
            epochs: dict[str, list[dict[str, float]]] = {}
            if history:
                for trial_id, epoch, metrics in db.execute("SELECT trial_id, epoch, metrics FROM epochs ORDER BY epoch"):
                    epochs.setdefault(trial_id, []).append({"epoch": epoch, **json.loads(metrics)})
        return [
            TrialRow(id=r[0], status=r[1], config=json.loads(r[2]), error=r[3], infeasible=r[4], epochs=r[5],
                     best=json.loads(r[6]), last=json.loads(r[7]), params=r[8], size_mb=r[9], gmacs=r[10],
                     train_seconds=r[11], history=epochs.get(r[0], []))
            for r in rows
        ]

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            found = dict(db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())
        return {s: found.get(s, 0) for s in STATUSES}


def best_of(trials: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """The trial with the best ``metric`` (over its epochs), or None when no trial has it yet."""
    scored = [t for t in trials if metric in t.best]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t.best[metric])


def top_trials(store: Store, k: int) -> list[TrialRow]:
    """The ``k`` best finished trials by the sweep's metric (those with weights to evaluate), best first."""
    meta = store.meta()
    metric, mode = meta["metric"], meta["mode"]
    done = [t for t in store.trials() if t.status in FINISHED and metric in t.best]
    return sorted(done, key=lambda t: t.best[metric], reverse=mode == "max")[:k]


def progress_line(store: Store, total: int | None = None) -> str:
    """``[segsweep] 3/8 done (2 completed, 1 early-stopped, 0 failed), 2 running, best val/miou 0.61 (id)``; a study
    with budgets also counts its infeasible trials (over budget, never trained)."""
    meta, counts = store.meta(), store.counts()
    metric, mode = meta.get("metric", "val/miou"), meta.get("mode", "max")
    done = sum(counts[s] for s in TERMINAL)
    best = best_of(store.trials(), metric, mode)
    best_text = f", best {metric} {best.best[metric]:.4f} ({best.id})" if best else ""
    over = f", {counts['infeasible']} infeasible" if meta.get("constraints") or counts["infeasible"] else ""
    return (f"[segsweep] {done}/{total or meta.get('trials', '?')} done ({counts['completed']} completed, "
            f"{counts['early_stopped']} early-stopped, {counts['failed']} failed{over}), {counts['running']} running"
            f"{best_text}")


def every_trial_failed(store: Store) -> str | None:
    """One line when the study ended with trials and none of them trained (nothing to compare; the CLI exits
    non-zero with it): every one failed (how many, and the most common error), or was over budget, or both. None
    otherwise."""
    counts = store.counts()
    unfit = ("failed", "infeasible")
    if not any(counts[s] for s in unfit) or any(counts[s] for s in STATUSES if s not in unfit):
        return None
    if counts["failed"] == 0:
        return (f"every trial was over budget ({counts['infeasible']} infeasible, none trained); loosen "
                f"search.constraints or search smaller models")
    error, n = Counter(t.error or "no error recorded" for t in store.trials() if t.status == "failed").most_common(1)[0]
    over = f" and {counts['infeasible']} over budget" if counts["infeasible"] else ""
    return f"every trial failed ({counts['failed']}){over}; {n} of them with: {error}"


def _migrate(path: Path) -> None:
    """Bring a store made by an earlier segsweep up to date, in one transaction (a store is left old or new, never
    half-way). SQLite cannot change a table's CHECK constraint, so a ``trials`` table that predates the
    ``infeasible`` status is rebuilt as SQLite's documentation describes (create the new table, copy the rows, drop
    the old one, rename); columns added since are added. A store that is up to date is only read."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        if not _outdated(db):
            return
        db.execute("BEGIN IMMEDIATE")  # two processes opening an old store: the second finds it migrated
        try:
            old_trials, old_latency = _outdated(db)
            if old_trials:
                columns = ", ".join(r[1] for r in db.execute("PRAGMA table_info(trials)"))
                db.execute(TRIALS_TABLE.replace("CREATE TABLE IF NOT EXISTS trials", "CREATE TABLE trials_migrated"))
                db.execute(f"INSERT INTO trials_migrated ({columns}) SELECT {columns} FROM trials")
                db.execute("DROP TABLE trials")
                db.execute("ALTER TABLE trials_migrated RENAME TO trials")
            for column in old_latency:
                db.execute(f"ALTER TABLE latency ADD COLUMN {column} REAL")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def _outdated(db: sqlite3.Connection) -> tuple[bool, list[str]] | None:
    """What an earlier segsweep's store lacks: the ``infeasible`` status (its trials table), latency columns; None
    when nothing."""
    (trials_sql,) = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'trials'").fetchone()
    latency = {r[1] for r in db.execute("PRAGMA table_info(latency)")}
    missing = [c for c in ("power_w", "energy_mj") if c not in latency]
    old_trials = "'infeasible'" not in trials_sql
    return (old_trials, missing) if old_trials or missing else None


def finite(v: Any) -> bool:
    """A number a metric can hold: int or float (not bool), neither NaN nor infinite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> int | None:
    return int(v) if v is not None else None
