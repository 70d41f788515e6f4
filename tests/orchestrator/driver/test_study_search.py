"""Optuna's study agrees with the store: states, values, intermediate values and user attributes, read back with
Optuna's own API from the SQLite file; and a trial Optuna had finished before a kill -9 does not end the resumed sweep."""

from __future__ import annotations

import copy

import optuna
import pytest

from orchestrator.driver.tuner import StudySearch

State = optuna.trial.TrialState
SPACE = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}


def searcher(tmp_path, **kwargs) -> tuple[StudySearch, optuna.storages.RDBStorage]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    args = {"metric": "val/miou", "mode": "max"} | kwargs
    return StudySearch(space=SPACE, sampler=optuna.samplers.TPESampler(seed=0), storage=storage, study_name="s",
                       run_dir=str(tmp_path), max_epochs=4, **args), storage


def trials(storage) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=storage).trials


def epochs(search: StudySearch, trial_id: str, values: list[float | None], first: int = 1) -> dict:
    """Results of these epochs as Tune hands them over: each to ``on_trial_result`` but the last, which the caller
    passes to ``on_trial_complete`` (Tune gives the result its scheduler stops a trial at to that alone)."""
    results = [{"epoch": epoch, "training_iteration": epoch, **({"val/miou": value} if value is not None else {})}
               for epoch, value in enumerate(values, start=first)]
    for result in results[:-1]:
        search.on_trial_result(trial_id, result)
    return results[-1]


def test_completed_trial_holds_its_best_epoch_and_every_epoch_as_intermediate_value(tmp_path):
    search, storage = searcher(tmp_path)
    search.suggest("a")
    last = epochs(search, "a", [0.2, 0.5, 0.4, 0.3])
    search.on_trial_complete("a", last)
    (trial,) = trials(storage)
    assert trial.state == State.COMPLETE and trial.value == 0.5  # the best epoch, as the report ranks
    assert trial.intermediate_values == {1: 0.2, 2: 0.5, 3: 0.4, 4: 0.3}
    assert trial.user_attrs == {"segsweep_trial_id": "a", "run_dir": str(tmp_path), "status": "completed",
                                "best_value": 0.5, "best_epoch": 2}


def test_early_stopped_is_pruned_and_failed_is_fail_even_after_reports(tmp_path):
    search, storage = searcher(tmp_path)
    search.suggest("stopped")
    search.on_trial_complete("stopped", epochs(search, "stopped", [0.3, 0.2]))  # 2 of 4 epochs: ASHA stopped it
    search.suggest("broken")
    search.on_trial_result("broken", epochs(search, "broken", [0.1]))
    search.on_trial_complete("broken", None, error=True)
    stopped, broken = trials(storage)
    assert stopped.state == State.PRUNED and stopped.user_attrs["status"] == "early_stopped"
    assert stopped.user_attrs["best_value"] == 0.3 and stopped.intermediate_values == {1: 0.3, 2: 0.2}
    assert broken.state == State.FAIL and broken.user_attrs["status"] == "failed"


def test_first_stage_epochs_report_nothing_and_the_value_is_the_full_networks(tmp_path):
    search, storage = searcher(tmp_path)
    search.suggest("enet")
    search.on_trial_result("enet", epochs(search, "enet", [None, None]))  # stage 1: stage1/val/miou only
    last = epochs(search, "enet", [0.25, 0.35], first=3)
    search.on_trial_complete("enet", last)
    (trial,) = trials(storage)
    assert trial.state == State.COMPLETE and trial.value == 0.35 and trial.intermediate_values == {3: 0.25, 4: 0.35}


def test_several_objectives_complete_with_each_ones_best(tmp_path):
    search, storage = searcher(tmp_path, metric=["val/miou", "latency/p50_ms"], mode=["max", "min"])
    search.suggest("a")
    for epoch, miou in enumerate([0.4, 0.6, 0.5], start=1):
        search.on_trial_result("a", {"epoch": epoch, "val/miou": miou, "latency/p50_ms": 3.0})
    search.on_trial_complete("a", {"epoch": 4, "val/miou": 0.45, "latency/p50_ms": 3.0})
    (trial,) = trials(storage)
    assert trial.state == State.COMPLETE and trial.values == [0.6, 3.0]
    assert trial.intermediate_values == {}  # Optuna keeps none for several objectives


def test_reports_of_a_trial_optuna_already_finished_are_dropped(tmp_path):
    search, storage = searcher(tmp_path)
    config = search.suggest("t1")
    assert 1e-4 <= config["lr"] <= 1e-2
    search.on_trial_result("t1", {"val/miou": 0.3, "epoch": 1})
    snapshot = copy.deepcopy({k: v for k, v in search.__dict__.items()
                              if k in ("_completed_trials", "_best", "_reported")})
    search.on_trial_complete("t1", {"val/miou": 0.4, "epoch": 4})  # stored in optuna.db ...

    search.__dict__.update(snapshot)  # ... then kill -9, and resume from Tune's snapshot: t1 still running
    search.on_trial_result("t1", {"val/miou": 0.45, "epoch": 2})  # no UpdateFinishedTrialError
    search.on_trial_complete("t1", {"val/miou": 0.5, "epoch": 4})  # a no-op, no error

    (trial,) = trials(storage)
    assert trial.state == State.COMPLETE and trial.value == pytest.approx(0.4)  # the end as stored
    assert trial.intermediate_values == {1: 0.3, 4: 0.4}


BUDGETS = [{"metric": "latency/p50_ms", "max": 8.0, "min": None}, {"metric": "params_m", "max": 5.0, "min": None}]


def test_budgets_are_optunas_own_constraints_and_an_infeasible_trial_is_pruned_with_its_reason(tmp_path):
    """Optuna's constraints (``Trial.set_constraint``, one per budget, <= 0 within it) on every trial that was not a
    failure; a trial over budget (never trained) ends PRUNED, the state TPE learns infeasibility from (it leaves FAIL
    out of its model), with its reason and figures in user attributes."""
    from optuna.samplers._tpe.sampler import _get_infeasible_trial_score

    search, storage = searcher(tmp_path, constraints=BUDGETS)
    figures = {"latency/p50_ms": 3.0, "model/params": 2_000_000}
    search.suggest("fits")
    search.on_trial_result("fits", {"epoch": 1, "training_iteration": 1, "val/miou": 0.3, **figures})
    search.on_trial_complete("fits", {"epoch": 4, "training_iteration": 4, "val/miou": 0.5, **figures})
    search.suggest("slow")
    search.on_trial_complete("slow", {"val/miou": float("nan"), "latency/p50_ms": 12.5, "model/params": 7_000_000,
                                      "segsweep/infeasible": 1.0})
    search.suggest("broken")
    search.on_trial_complete("broken", None, error=True)
    fits, slow, broken = trials(storage)
    assert fits.state == State.COMPLETE and fits.value == 0.5
    assert fits.constraints == {"latency/p50_ms": -5.0, "params_m": -3.0} and _get_infeasible_trial_score(fits) == 0
    assert slow.state == State.PRUNED and slow.constraints == {"latency/p50_ms": 4.5, "params_m": 2.0}
    assert _get_infeasible_trial_score(slow) == 6.5  # what TPE sorts infeasible trials by
    assert slow.user_attrs["status"] == "infeasible"
    assert slow.user_attrs["infeasible"] == "latency/p50_ms 12.5 > 8 (max); params_m 7 > 5 (max)"
    assert slow.user_attrs["budgets"] == {"latency/p50_ms": 12.5, "params_m": 7.0}
    assert broken.state == State.FAIL and broken.constraints == {}  # a failure tells nothing of the budgets


def test_an_infeasible_trial_in_a_multi_objective_study(tmp_path):
    search, storage = searcher(tmp_path, metric=["val/miou", "latency/p50_ms"], mode=["max", "min"],
                               constraints=BUDGETS[:1])
    search.suggest("slow")
    search.on_trial_complete("slow", {"latency/p50_ms": 9.0, "segsweep/infeasible": 1.0})
    (slow,) = trials(storage)
    assert slow.state == State.PRUNED and slow.values is None and slow.constraints == {"latency/p50_ms": 1.0}
