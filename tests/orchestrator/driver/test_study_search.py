"""A trial whose end Optuna's study stored just before a kill -9, resumed by Tune from its older snapshot: its
reports must not end the sweep (they did: UpdateFinishedTrialError raised as Tune's error)."""

from __future__ import annotations

import copy

import optuna

from orchestrator.driver.tuner import ResumableOptunaSearch


def test_reports_of_a_trial_optuna_already_finished_are_dropped(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    search = ResumableOptunaSearch(space={"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}, metric="val/miou", mode="max",
                                   sampler=optuna.samplers.TPESampler(seed=0), storage=storage, study_name="s")
    config = search.suggest("t1")
    assert 1e-4 <= config["lr"] <= 1e-2
    search.on_trial_result("t1", {"val/miou": 0.3, "training_iteration": 1})
    snapshot = copy.copy(search.__dict__)  # Tune's last snapshot of the searcher: t1 still running
    snapshot["_completed_trials"] = set()
    search.on_trial_complete("t1", {"val/miou": 0.4, "training_iteration": 2})  # stored in optuna.db ...

    search.__dict__.update(snapshot)  # ... then kill -9, and resume from the snapshot
    search.on_trial_result("t1", {"val/miou": 0.45, "training_iteration": 2})  # no UpdateFinishedTrialError
    search.on_trial_complete("t1", {"val/miou": 0.5, "training_iteration": 3})  # a no-op, no error

    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.4  # the end as stored
    assert trial.intermediate_values == {1: 0.3}
