"""Weights & Biases: ``Tracker`` is one W&B run (a trial's, or the sweep's summary), every call guarded.

The driver logs trials from Tune's events (``orchestrator.driver.callbacks.WandbCallback``), not the trials
themselves: a trial that ASHA stops (and whose Ray actor is torn down at once) still has every epoch in its run, and
a tracker failure cannot touch a trial. Offline by default: runs land in ``<run_dir>/trials/<trial>/wandb/
offline-run-*`` and ``wandb sync`` uploads them later. Every W&B call goes through ``_guard``: a failure is reported
once on stderr and switches tracking off for that run, never the sweep. ``finish_timeout`` bounds the upload wait
at the end of each run (and so on Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FINISH_TIMEOUT_S = 30.0


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
            import wandb  # lazy: W&B's import costs seconds, and mode: disabled never needs it

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
            import wandb  # lazy, as in start

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
            import wandb  # lazy, as in start

            self.run.log({"val/best_worst": [wandb.Image(str(p), caption=p.stem) for p in panels], "epoch": epoch})

        self._guard("panel log", send)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self._guard("finish", lambda: self.run.finish(exit_code=1 if failed else 0))
            self.run = None

    def log_table(self, key: str, make: Callable[[], pd.DataFrame]) -> None:
        """The DataFrame ``make()`` returns as a ``wandb.Table`` (missing values as None); made only when tracking."""
        if self.run is None:
            return

        def send() -> None:
            import wandb  # lazy, as in start

            table = make()
            self.run.log({key: wandb.Table(dataframe=table.astype(object).where(table.notna(), None))})

        self._guard(f"{key} table", send)
