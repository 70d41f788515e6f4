"""The driver: Ray Tune (searcher, scheduler, the pool's proxies as trainable), the trial pool's workers, the store
writer and progress callbacks, the run directory's start, fit and resume."""

import os

# Set before anything of the driver imports Ray, which reads some of them at its import (RAY_DEDUP_LOGS: one worker's
# warning line per worker, not Ray's "[repeated 2x across cluster]" note after it).
# Tune snapshots its experiment state at most this often; small, so that a killed driver loses little. Its warning
# that snapshots come often (one per checkpointing epoch) is then expected, and 0 silences it.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# the sweep prints its own progress lines: no Tune tables, result paths or TensorBoard hints on the console
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune's automatic loggers include TensorBoard's writer, whose tensorboardX imports torch into the driver as Tune starts
# (4 s on 2 cores, while the first trials wait): off; the tuner adds Tune's JSON logger itself, which
# ``ExperimentAnalysis`` reads (``driver.tuner``)
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# a staged model's first-stage epochs report ``stage1/...`` metrics and no search metric (``trial.module``): Tune
# would refuse such a result; the scheduler and the searcher skip results without the metric
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

from orchestrator.driver.run import Run, RunResult, fit, restore_run, start_run

__all__ = ["Run", "RunResult", "fit", "restore_run", "start_run"]
