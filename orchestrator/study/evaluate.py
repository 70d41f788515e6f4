"""``orchestrate evaluate`` and a sweep's ``evaluate:`` block: the top-k trials, each at its best-validation weights,
on a labelled held-out split (CamVid's test, Cityscapes' val, ...), with the metrics of validation: a confusion
matrix over the whole split, per-class IoU. Results are rows of the store's ``evaluations`` table, which the
report, ``report --format json`` and the W&B summary show as ``<split>/...`` columns.

A sweep selects on its validation metric; the figure to publish is the held-out one (measured on CamVid with the
seeds' recipe: 57.6 val mIoU, 45.6 test).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.metrics import ConfusionMatrix, metrics_from_confusion
from orchestrator.data.adapters import DataError
from orchestrator.data.cache import load_split
from orchestrator.data.prepare import adapter_for, split_cache, split_pairs
from orchestrator.errors import SegsweepError
from orchestrator.rundir import RunDir
from orchestrator.runs import pick_trial, trial_model
from orchestrator.spec.load import load_spec
from orchestrator.store import Store, top_trials
from orchestrator.study.selfcheck import check_trials, in_process
from orchestrator.trial.data import normalise, to_model_input
from orchestrator.trial.module import predict


@dataclass(frozen=True)
class Evaluation:
    trial: str
    split: str
    tta: str
    images: int
    metrics: dict[str, float]


def evaluate_model(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                   positive: int | None, ignore_index: int = 255, tta: str = "none", batch_size: int = 16,
                   device: torch.device | None = None) -> dict[str, float]:
    """``model`` on uint8 ``images`` (NxHxWx3) against ``labels`` (NxHxW): the validation metrics over the whole set
    (``miou``, ``iou/<class>``, ``dice``, ...). ``tta="hflip"`` averages each image's logits with its mirror's."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    cm = ConfusionMatrix(len(classes), ignore_index, device)
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            chunk = slice(start, start + batch_size)
            x = normalise(to_model_input(torch.from_numpy(np.array(images[chunk])).to(device)))
            logits = model(x)
            if tta == "hflip":
                logits = (logits + model(x.flip(-1)).flip(-1)) / 2
            truth = torch.from_numpy(np.array(labels[chunk])).long().to(device)
            cm.update(predict(logits, positive is not None), truth)
    return metrics_from_confusion(cm.compute(), classes, positive)


def evaluate_run(run_dir: str | Path, split: str = "test", top_k: int = 3, trial: str | None = None,
                 tta: str = "none") -> list[Evaluation]:
    """Evaluate ``trial`` (an id or ``best``) or the ``top_k`` best trials of a run on ``split``, and store the
    results. The split is decoded once at the training size into the run's cache. A trial without a self-check yet
    is checked first (``study.selfcheck``): a held-out figure of weights that do not reproduce their validation
    figure is marked in the report."""
    run = RunDir(run_dir)
    store = Store.of_run(run_dir)
    meta = store.meta()
    data = load_spec(run.spec).spec.data
    rows = [pick_trial(store, trial)] if trial else top_trials(store, top_k)
    if not rows:
        raise SegsweepError(f"{run_dir}: no finished trial with {meta['metric']} to evaluate yet")
    pairs = split_pairs(data, split)
    images, labels = load_split(split_cache(data, adapter_for(data), pairs, f"eval-{split}", run.cache))
    classes, positive = tuple(meta["data"]["classes"]), meta["data"]["positive"]
    if not (np.asarray(labels) != meta["data"]["ignore_index"]).any():
        raise DataError(f"{data.root}: the '{split}' split has no labelled pixels (its labels are withheld, as "
                        f"Cityscapes' test labels are); evaluate on a labelled split")
    checked = store.checks()
    check_trials(run_dir, [row for row in rows if row.id not in checked], in_process(run_dir))
    out = []
    for row in rows:
        print(f"[segsweep] evaluating {row.id} on {split} ({len(pairs)} images{', hflip' if tta == 'hflip' else ''})",
              file=sys.stderr, flush=True)
        model, cfg = trial_model(run_dir, row)
        metrics = evaluate_model(model, images, labels, classes, positive, meta["data"]["ignore_index"], tta,
                                 cfg.trainer.val_batch_size if cfg.model.batchnorm != "batch" else
                                 cfg.trainer.batch_size)
        store.record_evaluation(row.id, split, tta, len(pairs), metrics)
        out.append(Evaluation(row.id, split, tta, len(pairs), metrics))
    return out
