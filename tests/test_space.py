"""Spec domains -> Tune / Optuna: inclusive bounds hold after conversion."""

from __future__ import annotations

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer

from orchestrator.errors import SpecError
from orchestrator.space import count_trials, describe_space, to_tune_domain, to_tune_space
from orchestrator.spec import Domain, load_spec
from tests.conftest import tiny_spec


def test_int_bounds_are_inclusive_for_tune_and_optuna():
    domain = to_tune_domain(Domain("int", (2, 4)))
    assert isinstance(domain, Integer) and (domain.lower, domain.upper) == (2, 5)
    dist = OptunaSearch.convert_search_space({"k": domain})["k"]
    assert isinstance(dist, optuna.distributions.IntDistribution) and (dist.low, dist.high) == (2, 4)
    samples = {to_tune_domain(Domain("int", (2, 4))).sample() for _ in range(200)}
    assert samples == {2, 3, 4}


def test_float_and_choice_domains():
    log = to_tune_domain(Domain("loguniform", (1e-4, 1e-2)))
    assert isinstance(log, Float) and (log.lower, log.upper) == (1e-4, 1e-2)
    dist = OptunaSearch.convert_search_space({"lr": log})["lr"]
    assert dist.log and (dist.low, dist.high) == (1e-4, 1e-2)
    assert isinstance(to_tune_domain(Domain("choice", ("a", "b"))), Categorical)
    assert to_tune_domain(Domain("choice", ("a", "b")), grid=True) == tune.grid_search(["a", "b"])


def test_space_counts_and_description(write_spec, tmp_path):
    spec = tiny_spec(tmp_path, search={"algorithm": "grid"}, loss={"name": {"choice": ["dice", "focal", "ce"]}})
    spec["model"]["arch"] = {"choice": ["unet", "fpn"]}
    sweep = load_spec(write_spec(spec))
    assert count_trials(sweep) == 6
    with pytest.raises(SpecError, match="grid has 6 combinations, more than --max-trials 4"):
        count_trials(sweep, max_trials=4)
    space = to_tune_space(sweep)
    assert space["loss.name"] == {"grid_search": ["dice", "focal", "ce"]} and space["optimizer.lr"] == 0.003
    assert describe_space(sweep) == ["model.arch: choice ['unet', 'fpn']", "loss.name: choice ['dice', 'focal', 'ce']"]

    random_spec = tiny_spec(tmp_path, search={"algorithm": "random", "num_samples": 10})
    random_spec["optimizer"]["lr"] = {"uniform": [0.001, 0.01]}
    random_sweep = load_spec(write_spec(random_spec, "r.yaml"))
    assert count_trials(random_sweep) == 10 and count_trials(random_sweep, max_trials=3) == 3
    assert describe_space(random_sweep) == ["optimizer.lr: uniform [0.001, 0.01] (inclusive)"]


def test_optuna_rejects_list_choices(write_spec, tmp_path):
    spec = tiny_spec(tmp_path, loss={"name": "bce_dice+dice", "weights": {"choice": [[1, 1], [1, 0.5]]}})
    sweep = load_spec(write_spec(spec))
    with pytest.raises(SpecError, match="optuna choices must be scalars"):
        to_tune_space(sweep)
