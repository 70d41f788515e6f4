"""A trial's pieces from its flat config (``build_module``): the loss a spec names, with what it needs."""

from __future__ import annotations

import numpy as np
import torch

from models.losses import enet_weights
from orchestrator.data.prepare import prepare_data
from orchestrator.spec import build_sweep
from orchestrator.trial.build import build_module
from orchestrator.trial.config import TrialConfig
from tests.conftest import tiny_spec


def test_a_spaced_weighted_loss_validates_and_its_trial_gets_the_class_weights(synthetic_root, tmp_path):
    spec = tiny_spec(synthetic_root, loss={"name": {"choice": ["ce + weighted_ce_enet", "dice"]}})
    sweep = build_sweep(spec)
    data = prepare_data(sweep.spec.data, tmp_path / "cache")
    cfg = TrialConfig.from_flat(sweep.fixed_config())
    assert cfg.loss.name == "ce + weighted_ce_enet"
    module = build_module(cfg, data, use_gpu=False)
    plain, weighted = module.loss.losses
    assert plain.weight is None
    expected = enet_weights(data.pixel_counts, cfg.loss.enet_c)
    assert np.allclose(weighted.weight.numpy(), expected) and len(expected) == len(data.classes)
    logits, target = torch.randn(2, 7, 32, 64), torch.randint(0, 7, (2, 32, 64))
    assert torch.isfinite(module.loss(logits, target))
