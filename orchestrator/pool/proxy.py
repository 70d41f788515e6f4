"""The function Tune runs for each trial: a proxy that holds no GPU and imports no torch. It hands the trial to a
worker of the pool, then reports each epoch the worker sends (metrics, and a checkpoint when the worker took one)
to Tune. When Tune's scheduler stops the trial inside a report (ASHA at a rung), the proxy tells the worker, which
drops the trial at once: no process is killed, nothing is torn down mid-step."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.exceptions import RayActorError

from orchestrator.pool.protocol import PoolContext, is_stub
from orchestrator.rundir import STATE_FILE

POLL_S = 30.0  # a proxy's wait for its worker's next event, before it asks again


class TrialError(RuntimeError):
    """The trial failed in its worker; the message is the worker's one line (``RuntimeError: ...``)."""


def proxy_trial(config: dict[str, Any], ctx: PoolContext) -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # a line per checkpoint otherwise, on the console
    trial_id = tune.get_context().get_trial_id()
    state = restored_state()
    if state is not None and is_stub(state):
        return  # finished before a driver was killed: nothing resumes it
    index = ray.get(ctx.dispatcher.assign.remote(trial_id))
    worker = ctx.workers[index]
    try:
        ray.get(worker.start.remote(trial_id, config, str(state) if state else None))
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
            elif event["kind"] == "failed":
                raise TrialError(event["error"])
    except RayActorError as e:  # the worker could not start, or its process or node is gone
        ctx.dispatcher.lost.remote(index)
        cause = [line for line in str(e).strip().splitlines() if line.strip()][-1:] or [type(e).__name__]
        raise TrialError(f"WorkerDied: the trial's worker stopped or could not start ({cause[0].strip()[:200]})") from None
    finally:
        worker.stop.remote(trial_id)
        ctx.dispatcher.release.remote(trial_id)


def restored_state() -> Path | None:
    """The trial's last checkpoint's ``state.pt`` (weights, optimiser, schedule, epoch, best), or None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    return Path(checkpoint.path) / STATE_FILE
