"""Weights & Biases: one run per trial, logged by the driver from Tune's trial events.

Logging from the driver rather than from inside trials means a trial that ASHA stops (and whose Ray actor is torn
down at once) still has every epoch in its run, and a tracker failure cannot touch a trial. Offline by default: runs
land in ``<run_dir>/trials/<trial>/wandb/offline-run-*`` and ``wandb sync`` uploads them later. Every W&B call goes
through ``_guard``: a failure is reported once on stderr and switches tracking off for that trial, never the sweep.
``finish_timeout`` bounds the upload wait at the end of each run (and so on Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from orchestrator.spec import expand_groups
from orchestrator.store import is_metric

FINISH_TIMEOUT_S = 30.0
EXAMPLES_FILE = "examples.npz"


class Tracker:
    """One trial's W&B run; every call guarded."""

    def __init__(self, wandb_spec: dict[str, Any], directory: Path, trial_id: str, group: str,
                 config: dict[str, Any]) -> None:
        self.run = None
        self.trial_id = trial_id
        if wandb_spec.get("mode", "offline") == "disabled":
            return
        directory.mkdir(parents=True, exist_ok=True)

        def start() -> Any:
            import wandb

            return wandb.init(
                project=wandb_spec.get("project", "segsweep"), entity=wandb_spec.get("entity"), group=group,
                name=trial_id, id=trial_id, resume="allow", dir=str(directory), config=config,
                tags=list(wandb_spec.get("tags", ())), mode=wandb_spec.get("mode", "offline"), reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                        save_code=False, finish_timeout=FINISH_TIMEOUT_S, init_timeout=60),
            )

        self.run = self._guard("start", start)
        if self.run is not None:
            # the logged "epoch" is the x-axis, so a resumed trial re-logging an epoch lines up with the first try
            self._guard("define_metric", lambda: self.run.define_metric("*", step_metric="epoch"))

    def _guard(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - tracking must never stop a sweep; reported, then switched off
            print(f"segsweep: W&B {what} failed for trial {self.trial_id}, tracking it no further: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
            self.run = None
            return None

    def log(self, metrics: dict[str, float]) -> None:
        """One row per epoch; ``metrics`` carries its ``epoch``."""
        if self.run is not None:
            self._guard("log", lambda: self.run.log(metrics))

    def log_examples(self, path: Path) -> None:
        """Validation images with predicted and true masks (saved by the trial); ignore shown as its own label."""
        if self.run is None or not path.is_file():
            return

        def send() -> None:
            import wandb

            data = np.load(path)
            classes = [str(c) for c in data["classes"]]
            ignore = int(data["ignore_index"])
            labels = {i: name for i, name in enumerate(classes)} | {len(classes): "ignore"}
            panels = []
            for image, truth, pred in zip(data["images"], data["truths"], data["preds"], strict=True):
                truth = np.where(truth == ignore, len(classes), truth).astype(np.uint8)
                masks = {"predictions": {"mask_data": pred.astype(np.uint8), "class_labels": labels},
                         "ground_truth": {"mask_data": truth, "class_labels": labels}}
                panels.append(wandb.Image(image, masks=masks))
            self.run.log({"val/examples": panels, "epoch": int(data["epoch"])})

        self._guard("image log", send)

    def log_panels(self, folder: Path, epoch: int) -> None:
        """The best and worst validation images (image | truth | prediction panels saved by the trial)."""
        panels = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if self.run is None or not panels:
            return

        def send() -> None:
            import wandb

            self.run.log({"val/best_worst": [wandb.Image(str(p), caption=p.stem) for p in panels], "epoch": epoch})

        self._guard("panel log", send)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self._guard("finish", lambda: self.run.finish(exit_code=1 if failed else 0))
            self.run = None


class WandbCallback(tune.Callback):
    """Driver-side: a Tracker per trial, fed by Tune's events. Picklable (Tune pickles callbacks for resume)."""

    def __init__(self, wandb_spec: dict[str, Any], run_dir: str, group: str, groups: dict | None = None) -> None:
        self.wandb_spec, self.run_dir, self.group, self.groups = wandb_spec, run_dir, group, groups or {}
        self._trackers: dict[str, Tracker] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trackers": {}}

    def _tracker(self, trial) -> Tracker:
        if trial.trial_id not in self._trackers:
            directory = Path(self.run_dir) / "trials" / trial.trial_id
            config = expand_groups(dict(trial.config), self.groups)
            self._trackers[trial.trial_id] = Tracker(self.wandb_spec, directory, trial.trial_id, self.group, config)
        return self._trackers[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._tracker(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "epoch" in result:
            row = {k: v for k, v in result.items() if is_metric(k) or k.startswith("model/") or k in ("epoch", "lr")}
            self._tracker(trial).log(row)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tracker = self._trackers.pop(trial.trial_id, None) or self._tracker(trial)
        trial_dir = Path(self.run_dir) / "trials" / trial.trial_id
        tracker.log_examples(trial_dir / EXAMPLES_FILE)
        tracker.log_panels(trial_dir / "best_worst", int((trial.last_result or {}).get("epoch", 0)))
        tracker.finish()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tracker = self._trackers.pop(trial.trial_id, None)
        if tracker is not None:
            tracker.finish(failed=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for tracker in self._trackers.values():  # interrupted runs: close them, they resume under the same id
            tracker.finish()
        self._trackers.clear()


def log_summary_run(run_dir: Path, wandb_spec: dict[str, Any], sweep: str) -> None:
    """One more run in the sweep's group holding the model-wise comparison as a ``wandb.Table``."""
    from reports.build import comparison_frame

    tracker = Tracker(wandb_spec, Path(run_dir) / "summary", f"{sweep}-summary", sweep, {"sweep": sweep})
    if tracker.run is None:
        return

    def send() -> None:
        import wandb

        table = comparison_frame(run_dir)
        tracker.run.log({"comparison": wandb.Table(dataframe=table.astype(object).where(table.notna(), None))})

    tracker._guard("summary table", send)
    tracker.finish()
