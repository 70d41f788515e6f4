"""The run directory's layout: every file name of a run in one place (``RunDir``, ``TrialDir``).

```
runs/<name>-<timestamp>/
  spec.yaml  results.db  optuna.db  report.md  report.html
  cache/  exports/<trial>.onnx  tune/  summary/
  trials/<id>/  best.pt  state.pt (Tune's checkpoint, staged in .checkpoint-<epoch>/)  examples.npz  best_worst/  wandb/
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "state.pt"  # a trial's resumable checkpoint inside Tune's checkpoint folder


@dataclass(frozen=True)
class TrialDir:
    """``trials/<id>/``: what one trial writes into the run."""

    path: Path

    @property
    def best_weights(self) -> Path:
        return self.path / "best.pt"

    @property
    def examples(self) -> Path:
        """Validation images with true and predicted masks, for W&B."""
        return self.path / "examples.npz"

    @property
    def best_worst(self) -> Path:
        return self.path / "best_worst"

    @property
    def wandb(self) -> Path:
        return self.path / "wandb"

    def checkpoint(self, epoch: int) -> Path:
        """Where the checkpoint of ``epoch`` is written before Tune copies it (a hard-killed trial leaves it in the
        run, not in /tmp; the trial's release removes it)."""
        return self.path / f".checkpoint-{epoch}"

    def staged_checkpoints(self) -> list[Path]:
        return sorted(self.path.glob(".checkpoint-*"))

    @property
    def proxy_onnx(self) -> Path:
        return self.path / "proxy.onnx"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def spec(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def store(self) -> Path:
        return self.path / "results.db"

    @property
    def optuna(self) -> Path:
        return self.path / "optuna.db"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    @property
    def tune(self) -> Path:
        """Ray Tune's experiment folder of the first run: its state snapshots and each trial's last checkpoint."""
        return self.path / TUNE_DIR

    def experiment(self, number: int) -> Path:
        """Tune's folder of the run's ``number``-th experiment: ``tune`` for the first, ``tune-2`` for the first
        ``orchestrate extend``, and so on."""
        return self.path / experiment_name(number)

    @property
    def summary(self) -> Path:
        """The W&B summary run's folder."""
        return self.path / "summary"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(self.path / "trials" / trial_id)

    def export(self, trial_id: str) -> Path:
        return self.path / "exports" / f"{trial_id}.onnx"

    def tune_checkpoints(self, trial_id: str) -> list[Path]:
        """The ``state.pt`` files of a trial's Tune checkpoints (in whichever experiment the trial ran)."""
        return sorted(self.path.glob(f"{TUNE_DIR}*/{trial_id}/checkpoint_*/{STATE_FILE}"))


TUNE_DIR = "tune"  # also Tune's experiment name (RunConfig(name=...)) under storage_path = the run directory


def experiment_name(number: int) -> str:
    return TUNE_DIR if number <= 1 else f"{TUNE_DIR}-{number}"
