"""The function Tune runs for each trial: a proxy that holds no GPU and imports no torch. It hands the trial to a
worker of the pool, then reports each epoch the worker sends (metrics, and a checkpoint when the worker took one)
to Tune; a trial over budget reports its figures once, marked ``budgets.INFEASIBLE``, and ends. When Tune's
scheduler stops the trial inside a report (ASHA at a rung), the proxy tells the worker, which drops the trial at
once: no process is killed, nothing is torn down mid-step."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.exceptions import RayActorError

from orchestrator.failures import retried
from orchestrator.pool.protocol import REPLAYED, PoolContext, is_stub, resolve_state
from orchestrator.rundir import STATE_FILE

POLL_S = 30.0  # a proxy's wait for its worker's next event, before it asks again


class TrialError(RuntimeError):
    """The trial failed in its worker; the message is the worker's one line (``RuntimeError: ...``)."""


def proxy_trial(config: dict[str, Any], ctx: PoolContext) -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # a line per checkpoint otherwise, on the console
    sys.unraisablehook = quiet_exit
    trial_id = tune.get_context().get_trial_id()
    state = restored_state()
    if trial_id in ctx.finished:  # finished before a driver was killed: nothing resumes it
        tune.report({**ctx.finished[trial_id], REPLAYED: True})
        return
    if state is not None and is_stub(state):
        return  # released, so finished (the store says so too, and ``finished`` holds it on resume)
    final = ray.get(ctx.dispatcher.final_failure.remote(trial_id))
    if final is not None:  # Tune retries it (search.max_failures), but it would fail the same way again
        raise TrialError(final)
    index, worker = start_on_a_worker(trial_id, config, state, ctx)
    try:
        while True:
            event = ray.get(worker.next_event.remote(trial_id, POLL_S))
            if event is None:
                continue
            if event["kind"] == "epoch":
                checkpoint = event.get("checkpoint")
                try:
                    tune.report(event["metrics"],
                                checkpoint=tune.Checkpoint.from_directory(checkpoint) if checkpoint else None)
                finally:  # Tune has copied it, or is stopping the trial inside the report
                    if checkpoint:
                        shutil.rmtree(checkpoint, ignore_errors=True)
                worker.decide.remote(trial_id, int(event["metrics"]["epoch"]))
            elif event["kind"] == "done":
                return
            elif event["kind"] == "infeasible":  # over a budget, never trained: its figures are its one result
                tune.report(event["metrics"])
                return
            elif event["kind"] == "failed":
                if not retried(event["error"]):
                    ctx.dispatcher.fail.remote(trial_id, event["error"])
                raise TrialError(event["error"])
    except RayActorError as e:  # its process or node went away while it trained the trial
        ctx.dispatcher.lost.remote(index)
        raise TrialError(f"WorkerDied: the trial's worker stopped ({last_line(e)})") from None
    finally:
        worker.stop.remote(trial_id)
        ctx.dispatcher.release.remote(trial_id)


def start_on_a_worker(trial_id: str, config: dict[str, Any], state: Path | None, ctx: PoolContext) -> tuple[int, Any]:
    """The trial handed to the dispatcher's choice of worker; a worker found gone (its node went away, or it could not
    start) is marked lost and the next one is tried, until none is left."""
    cause = "each was lost before"
    while True:
        index = ray.get(ctx.dispatcher.assign.remote(trial_id))
        if index is None:
            raise TrialError(f"WorkerDied: every trial worker has stopped or could not start ({cause})")
        worker = ctx.workers[index]
        try:
            ray.get(worker.start.remote(trial_id, config, str(state) if state else None, ctx.run_dir))
            return index, worker
        except RayActorError as e:
            cause = last_line(e)
            ray.get(ctx.dispatcher.lost.remote(index))


def last_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def quiet_exit(unraisable: Any) -> None:
    """Ray ends a proxy's actor with SystemExit, which Python reports from a weakref callback as 'Exception ignored'
    with a traceback on the sweep's console; that one says nothing. Anything else is reported as Python would."""
    if not isinstance(unraisable.exc_value, SystemExit):
        sys.__unraisablehook__(unraisable)


def restored_state() -> Path | None:
    """The trial's newest checkpoint's ``state.pt`` (weights, optimiser, schedule, epoch, best), or None. Tune's
    snapshot names the last checkpoint it saw; a newer one may have come before the driver was killed."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    return resolve_state(Path(checkpoint.path) / STATE_FILE)
