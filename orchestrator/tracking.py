"""Weights & Biases, one run per trial, logged from the trial itself (so masks can be sent).

Offline by default: runs land in ``<run_dir>/trials/<trial>/wandb/offline-run-*`` and ``wandb sync`` uploads them
later. Every W&B call goes through ``_guard``: a tracker failure is reported once on stderr and switches tracking
off for that trial; it never fails the trial. ``finish_timeout`` bounds the upload wait at the end (and on Ctrl-C).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINISH_TIMEOUT_S = 30.0


class Tracker:
    def __init__(
        self, wandb_spec: dict[str, Any], directory: Path, trial_id: str, group: str, config: dict[str, Any]
    ) -> None:
        self.run = None
        self.mode = wandb_spec.get("mode", "offline")
        if self.mode == "disabled":
            return
        directory.mkdir(parents=True, exist_ok=True)

        def start() -> Any:
            import wandb

            return wandb.init(
                project=wandb_spec.get("project", "segsweep"),
                entity=wandb_spec.get("entity"),
                group=group,
                name=trial_id,
                id=trial_id,
                resume="allow",
                dir=str(directory),
                config=config,
                tags=list(wandb_spec.get("tags", ())),
                mode=self.mode,
                settings=wandb.Settings(
                    silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False,
                    finish_timeout=FINISH_TIMEOUT_S, init_timeout=60,
                ),
            )

        self.run = self._guard("start", start)
        if self.run is not None:
            # rows keyed by the logged "epoch" and committed at once: a trial torn down by its scheduler keeps them
            self._guard("define_metric", lambda: self.run.define_metric("*", step_metric="epoch"))

    def _guard(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - tracking must never fail a trial; reported, then switched off
            print(f"segsweep: W&B {what} failed, tracking off for this trial: {type(e).__name__}: {e}", file=sys.stderr)
            self.run = None
            return None

    def log(self, metrics: dict[str, float]) -> None:
        """One row per epoch; ``metrics`` carries its ``epoch``."""
        if self.run is not None:
            self._guard("log", lambda: self.run.log(metrics))

    def log_masks(
        self, images: np.ndarray, truths: np.ndarray, preds: np.ndarray, classes: Sequence[str], ignore_index: int,
        epoch: int,
    ) -> None:
        """A few validation images with predicted and true masks; the ignore value is shown as its own label."""
        if self.run is None or len(images) == 0:
            return

        def send() -> None:
            import wandb

            labels = {i: name for i, name in enumerate(classes)} | {len(classes): "ignore"}
            panels = []
            for image, truth, pred in zip(images, truths, preds, strict=True):
                truth = np.where(truth == ignore_index, len(classes), truth).astype(np.uint8)
                masks = {"predictions": {"mask_data": pred.astype(np.uint8), "class_labels": labels},
                         "ground_truth": {"mask_data": truth, "class_labels": labels}}
                panels.append(wandb.Image(image, masks=masks))
            self.run.log({"val/examples": panels, "epoch": epoch})

        self._guard("image log", send)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self._guard("summary", lambda: self.run.summary.update(values))

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self._guard("finish", lambda: self.run.finish(exit_code=1 if failed else 0))
            self.run = None
