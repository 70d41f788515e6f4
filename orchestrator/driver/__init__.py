"""The driver: Ray Tune (searcher, scheduler, the pool's proxies as trainable), the trial pool's workers, the store
writer and progress callbacks, the run directory's start, fit and resume."""

from orchestrator.driver.run import Run, RunResult, fit, restore_run, start_run

__all__ = ["Run", "RunResult", "fit", "restore_run", "start_run"]
