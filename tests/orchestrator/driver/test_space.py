"""Spec domains -> Tune / Optuna: inclusive bounds hold after conversion."""

from __future__ import annotations

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer

from orchestrator.driver.space import to_tune_domain, to_tune_space
from orchestrator.errors import SpecError
from orchestrator.spec import Domain, count_trials, describe_space, expand_groups, load_spec
from orchestrator.trial.config import TrialConfig
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


def test_grouped_choice_searches_linked_values_as_one(write_spec, tmp_path):
    spec = tiny_spec(tmp_path, search={"algorithm": "optuna"})
    spec["model"] = {"choice": [{"arch": "fcn", "encoder": "resnet50"}, {"arch": "segformer", "encoder": "mit_b3"},
                                {"arch": "enet", "encoder": None, "stage1_epochs": 1}]}
    sweep = load_spec(write_spec(spec), ["model.batchnorm=batch"])  # a key beside the group is a default for all
    space = to_tune_space(sweep)
    assert isinstance(space["model"], Categorical)
    labels = space["model"].categories
    assert labels == ["arch=fcn,encoder=resnet50", "arch=segformer,encoder=mit_b3",
                      "arch=enet,encoder=None,stage1_epochs=1"]
    assert "model.arch" not in space and space["model.batchnorm"] == "batch"
    dist = OptunaSearch.convert_search_space({"model": space["model"]})["model"]
    assert list(dist.choices) == labels  # scalar labels: Optuna's categorical takes them
    config = {**{k: v for k, v in space.items() if k != "model"}, "model": labels[2]}
    cfg = TrialConfig.from_flat(config, sweep.groups)
    assert (cfg.model.arch, cfg.model.encoder, cfg.model.stage1_epochs, cfg.model.batchnorm) == ("enet", None, 1, "batch")
    assert expand_groups({"model": labels[0]}, sweep.groups) == {"model": labels[0], "model.arch": "fcn",
                                                                   "model.encoder": "resnet50"}


def test_grouped_choice_options_are_validated(write_spec, tmp_path):
    spec = tiny_spec(tmp_path)
    spec["model"] = {"choice": [{"arch": "fcn", "encoder": "resnet50"}, {"arch": "fcn", "encoder": "mit_b3"}]}
    with pytest.raises(SpecError, match="model: fcn takes model.encoder resnet50, not mit_b3"):
        load_spec(write_spec(spec))
