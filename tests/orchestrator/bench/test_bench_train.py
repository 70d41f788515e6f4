"""``orchestrate bench-train`` on CPU with tiny settings, and its table."""

from __future__ import annotations

import json

import pytest

from orchestrator.bench.train import LEVER_SWITCHES, OPT_IN, BenchSettings, markdown, run_bench


@pytest.mark.slow
def test_bench_train_on_cpu(ray_session, tmp_path):
    """``orchestrate bench-train`` with tiny settings: every part runs and the figures are consistent."""
    s = BenchSettings(size=(32, 64), batch=4, images=12, epochs=2, workers=0, trials=2, sweep_epochs=1,
                      quality_epochs=1, parts=("seeds", "trial", "sweep"))
    result = run_bench(s, tmp_path)
    assert result["seeds"]["images_per_s"] > 0 and result["trial"]["images_per_s"] > 0
    seeds = result["seeds"]["images_per_s"]
    assert result["trial"]["x_seeds"] == pytest.approx(result["trial"]["images_per_s"] / seeds)
    sweep = result["sweep"]
    assert sweep["trials"] == sweep["completed"] == 2 and sweep["images"] == 2 * 12
    assert sweep["images_per_s"] == pytest.approx(sweep["images"] / sweep["fit_s"], rel=0.01)
    assert sweep["startup_s"]["min"] > 0
    assert result["cache"]["ratio"] == pytest.approx(1.0, abs=0.01)
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert saved["trial"]["levers"]["device_augment"] is True
    table = (tmp_path / "bench_train.md").read_text()
    assert "| seeds: PIL in DataLoader workers" in table and "sweep of 2 trials" in table


def test_bench_train_table_names_levers_off_and_opt_in_levers_on():
    result = {"settings": {"arch": "unet", "encoder": "mobilenet_v2", "size": [224, 320], "batch": 16, "images": 1024},
              "machine": {"gpus": ["H100"], "torch": "2.11", "cpus": 16},
              "seeds": {"images_per_s": 500.0, "workers": 8},
              "trial": {"images_per_s": 1000.0, "levers": {"precision": "bf16-mixed", "native_depthwise": False},
                        "cuda_graphs": True},
              "levers_off": {"trainer.cuda_graphs": {"images_per_s": 400.0}},
              "levers_on": {"trainer.native_depthwise": {"images_per_s": 660.0}}}
    lines = markdown(result).splitlines()
    assert "| segsweep: one trial | 1,000 | 2.00 | levers: precision; graphs on |" in lines
    assert "| segsweep: one trial, trainer.cuda_graphs off | 400 | 0.80 | 0.40x of all on |" in lines
    assert "| segsweep: one trial, trainer.native_depthwise on (opt-in) | 660 | 1.32 | 0.66x of the defaults |" in lines
    assert set(OPT_IN).isdisjoint(LEVER_SWITCHES)


