"""Tune callbacks on the driver: the store writer (the results store's one writer), W&B tracking per trial, the
release of finished trials' checkpoints, the pool's freeing of trials whose proxy died, and the progress line. Each
is picklable (Tune pickles callbacks for resume): they hold settings and paths."""

from __future__ import annotations

import collections
import functools
import json
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.budgets import INFEASIBLE, judge
from orchestrator.failures import error_line
from orchestrator.files import write_text_whole
from orchestrator.pool.launch import active_pool
from orchestrator.pool.protocol import REPLAYED, STUB, is_stub, superseded_by
from orchestrator.rundir import STATE_FILE, RunDir
from orchestrator.spec.keys import expand_groups
from orchestrator.store import Store, ended_as, is_metric, progress_line
from orchestrator.tracking import Tracker

SPENT: collections.Counter[str] = collections.Counter()  # the driver's seconds in each callback (bench-sweep)


def _timed(kind: str, hook: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(hook)
    def timed(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            SPENT[kind] += time.perf_counter() - started
    return timed


class Timed(tune.Callback):
    """A driver callback whose hooks' seconds add up in ``SPENT[<class name>]``: what tracking and store writes cost
    the driver (``orchestrate bench-sweep`` reports it)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, hook in list(vars(cls).items()):
            if name.startswith("on_") and callable(hook):
                setattr(cls, name, _timed(cls.__name__, hook))


class StoreCallback(Timed):
    """Writes every trial event to the results store; a trial over budget (``search.constraints``) as
    ``infeasible`` with its figures and the budgets it broke."""

    def __init__(self, store_path: str, max_epochs: int, groups: dict | None = None,
                 constraints: list[dict[str, Any]] | None = None) -> None:
        self.store_path, self.max_epochs, self.groups = store_path, max_epochs, groups or {}
        self.constraints = constraints or []
        self._known: set[str] = set()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_path)
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_known": set(), "_store": None}

    def config(self, trial) -> dict[str, Any]:
        return expand_groups(trial.config, self.groups)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        new = [t for t in trials if t.trial_id not in self._known]
        for trial in new:
            if trial.status == "PENDING":
                self.store.add_trial(trial.trial_id, self.config(trial), "pending")
            self._known.add(trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._known.add(trial.trial_id)
        self.store.add_trial(trial.trial_id, self.config(trial), "running")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "epoch" in result:
            self.store.record_epoch(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        result = trial.last_result or {}
        status = ended_as(result, self.max_epochs)
        if status == "infeasible" and REPLAYED not in result:  # a replayed end is in the store already
            self.store.record_infeasible(trial.trial_id, result, judge(self.constraints, result).line)
        self.store.finish_trial(trial.trial_id, status)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        # Tune writes the error into the trial's driver-side staging folder first and syncs it to storage later
        staged = Path(trial.error_file) if trial.error_file else None
        trace = staged.read_text() if staged is not None and staged.is_file() else trial.get_error()
        self.store.add_trial(trial.trial_id, self.config(trial), "running")
        self.store.finish_trial(trial.trial_id, "failed", error_line(trace))


class WandbCallback(Timed):
    """A W&B run per trial (``Tracker``), fed by Tune's events on a thread of its own: starting a run takes a
    fraction of a second, which Tune's loop (and so every trial waiting for a decision) should not wait for. Events
    keep their order; at the experiment's end the thread finishes every run (within W&B's finish timeout each)."""

    def __init__(self, wandb_spec: dict[str, Any], run_dir: str, group: str, groups: dict | None = None) -> None:
        self.wandb_spec, self.run_dir, self.group, self.groups = wandb_spec, run_dir, group, groups or {}
        self._trackers: dict[str, Tracker] = {}
        self._queue: queue.Queue | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trackers": {}, "_queue": None}

    def _later(self, call: Callable[[], None]) -> None:
        if self.wandb_spec.get("mode") == "disabled":
            return
        if self._queue is None:
            self._queue = queue.Queue()
            threading.Thread(target=self._drain, args=(self._queue,), name="segsweep-wandb", daemon=True).start()
        self._queue.put(call)

    @staticmethod
    def _drain(calls: queue.Queue) -> None:
        while True:
            call = calls.get()
            try:
                call()  # Tracker guards every W&B call: a failure is one line and never reaches here
            finally:
                calls.task_done()

    def _tracker(self, trial_id: str, config: dict[str, Any]) -> Tracker:
        if trial_id not in self._trackers:
            directory = RunDir(self.run_dir).trial(trial_id).path
            self._trackers[trial_id] = Tracker(self.wandb_spec, directory, trial_id, self.group, config)
        return self._trackers[trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        trial_id, config = trial.trial_id, expand_groups(dict(trial.config), self.groups)
        self._later(lambda: self._tracker(trial_id, config))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "epoch" in result or INFEASIBLE in result:  # an epoch, or the figures of a trial over budget (epoch 0)
            row = {k: v for k, v in result.items() if is_metric(k) or k.startswith("model/") or k in ("epoch", "lr")}
            row = {**row, "epoch": row.get("epoch", 0), **({INFEASIBLE: 1.0} if INFEASIBLE in result else {})}
            trial_id, config = trial.trial_id, expand_groups(dict(trial.config), self.groups)
            self._later(lambda: self._tracker(trial_id, config).log(row))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        # a replayed end too (``PoolContext.finished``): the killed driver may not have finished its W&B run
        trial_id, config = trial.trial_id, expand_groups(dict(trial.config), self.groups)
        epoch = int((trial.last_result or {}).get("epoch", 0))
        trial_dir = RunDir(self.run_dir).trial(trial_id)

        def complete() -> None:
            tracker = self._trackers.pop(trial_id, None) or self._tracker(trial_id, config)
            tracker.log_examples(trial_dir.examples)
            tracker.log_panels(trial_dir.best_worst, epoch)
            tracker.finish()
        self._later(complete)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        trial_id = trial.trial_id

        def failed() -> None:
            tracker = self._trackers.pop(trial_id, None)
            if tracker is not None:
                tracker.finish(failed=True)
        self._later(failed)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        def finish_all() -> None:  # interrupted runs: close them, they resume under the same id
            for tracker in self._trackers.values():
                tracker.finish()
            self._trackers.clear()
        self._later(finish_all)
        if self._queue is not None:
            self._queue.join()


def _replace_with(state: Path, payload: dict[str, Any]) -> int:
    """``state`` becomes a few bytes of JSON (read by a proxy without torch); a kill leaves it whole or replaced, never
    half-written. Returns the bytes freed."""
    size = state.stat().st_size
    write_text_whole(state, json.dumps(payload))
    return size - state.stat().st_size


def release_checkpoint(run_dir: str | Path, trial_id: str) -> int:
    """Once a trial has finished, nothing resumes it: its Tune checkpoint (weights and optimiser state, 3x the model
    for Adam) becomes a stub that says so, and its staging folder goes. ``trials/<id>/best.pt`` keeps the weights.

    A stub rather than nothing: a driver killed before Tune's next snapshot restores the trial as unfinished, and its
    resume then finds the stub and ends at once. Returns the bytes freed."""
    run = RunDir(run_dir)
    for staged in run.trial(trial_id).staged_checkpoints():
        shutil.rmtree(staged, ignore_errors=True)
    return sum(_replace_with(state, STUB) for state in run.tune_checkpoints(trial_id) if not is_stub(state))


def supersede_checkpoints(newest: Path) -> int:
    """A running trial keeps one whole checkpoint: once Tune has registered ``newest`` (a ``state.pt``), the trial's
    older ones become pointers to it. Not Tune's ``num_to_keep``, which deletes them: a driver killed before its next
    snapshot left one naming a checkpoint gone, and that trial could not be restored. A pointer leads a restored
    trial to the newest state instead (``protocol.resolve_state``). Returns the bytes freed."""
    pointer = superseded_by(newest.parent.name)
    freed = 0
    for state in sorted(newest.parent.parent.glob(f"checkpoint_*/{newest.name}")):
        if state != newest and state.stat().st_size > 256:  # whole weights; stubs and pointers are a few bytes
            freed += _replace_with(state, pointer)
    return freed


class CheckpointCallback(Timed):
    """Checkpoints on disk: a running trial's older ones become pointers to its newest (``supersede_checkpoints``),
    and a finished trial's become a stub (``release_checkpoint``): a sweep keeps per trial its ``best.pt`` (1x the
    model) instead of also weights and optimiser state (3x with Adam). A failed trial keeps its newest checkpoint,
    for the post-mortem."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint: tune.Checkpoint, **info: Any) -> None:
        try:
            supersede_checkpoints(Path(checkpoint.path) / STATE_FILE)
        except OSError as e:  # freeing space is no outcome of the trial: its older checkpoints stay instead
            self._kept(trial.trial_id, "older checkpoints stay whole", e)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        try:
            release_checkpoint(self.run_dir, trial.trial_id)
        except OSError as e:  # freeing space is no outcome of the trial: it keeps its whole checkpoint instead
            self._kept(trial.trial_id, "checkpoint stays whole", e)

    def _kept(self, trial_id: str, what: str, e: OSError) -> None:
        print(f"[segsweep] trial {trial_id}: its {what} under {RunDir(self.run_dir).path} ({e.strerror or e}); "
              "delete them by hand once the run has ended", file=sys.stderr, flush=True)


class PoolCallback(Timed):
    """A trial that Tune ended while the pool still holds it: its proxy died (the proxy's node went away while the
    trial trained on a worker of another node), so the worker would train it on, and then wait for the proxy's word
    on each epoch (up to ``worker.DECISION_TIMEOUT_S``) in a slot that the sweep's other trials need. The worker is
    told to drop it. A proxy that ended as it should has released it already: nothing then."""

    def _abandon(self, trial_id: str) -> None:
        pool = active_pool()
        if pool is not None:
            pool.abandon(trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._abandon(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._abandon(trial.trial_id)


class ProgressCallback(Timed):
    """One line on stderr whenever a trial starts or ends: done / running / failed and the best so far; and one line
    for each trial that failed or was over budget, with why."""

    def __init__(self, store_path: str) -> None:
        self.store_path = store_path

    def _print(self) -> None:
        print(progress_line(Store(self.store_path)), file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        result = trial.last_result or {}
        row = next((t for t in Store(self.store_path).trials() if t.id == trial.trial_id), None) if (
            result.get(INFEASIBLE) and REPLAYED not in result) else None  # the store is read for such a trial only
        if row is not None and row.status == "infeasible":
            print(f"[segsweep] trial {trial.trial_id} infeasible, not trained: {row.infeasible}", file=sys.stderr,
                  flush=True)
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = next((t for t in Store(self.store_path).trials() if t.id == trial.trial_id), None)
        if row is not None and row.error:
            print(f"[segsweep] trial {trial.trial_id} failed: {row.error}", file=sys.stderr, flush=True)
        self._print()
