"""The shape of the code: imports flow one way (no cycle, no layer importing a layer above it, ``models/`` free of
``orchestrator``), and the light entry points stay light."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT
from tools.import_graph import LAYERS, cycles, layer_of, problems, read_graph


def test_the_import_graph_has_no_cycle_and_flows_down_the_layers():
    graph = read_graph()
    assert len(graph) > 50 and all(layer_of(name) >= 0 for name in graph)  # every module is in a layer
    assert problems(graph) == []


def test_the_checker_finds_a_cycle_and_an_upward_import():
    """The checks can fail: a made-up graph with a cycle and an import from the registries up into the driver."""
    graph = read_graph()
    graph["models.losses"].imports["orchestrator.driver.tuner"] = 1
    graph["orchestrator.driver.tuner"].imports.setdefault("models.losses", 1)
    found = problems(graph)
    assert any(line.startswith("cycle: ") and "models.losses" in line for line in found)
    assert any("models.losses (registries) imports orchestrator.driver.tuner (driver)" in line for line in found)
    assert any("models/ imports orchestrator" in line for line in found)
    assert [c for c in cycles(graph) if "models.losses" in c]
    assert [title for title, _ in LAYERS][:3] == ["schema and names", "registries", "spec loading"]


def test_the_script_prints_the_graph_and_passes():
    done = subprocess.run([sys.executable, "-m", "tools.import_graph"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "orchestrator.store -> orchestrator.budgets, orchestrator.errors, orchestrator.rundir" in done.stdout
    assert done.stdout.strip().endswith("0 problem(s)")


def test_the_store_and_orchestrate_status_import_neither_ray_nor_torch(tmp_path):
    """``import orchestrator.store`` and ``orchestrate status RUN_DIR`` (its whole CLI start included) load no torch
    and no Ray: a status check answers at once, on any machine."""
    from orchestrator.store import Store

    store = Store(tmp_path / "results.db")
    store.set_meta(sweep="s", metric="val/miou", mode="max", trials=1)
    store.add_trial("t1", {"model.arch": "unet"}, "running")
    script = ("import sys, json\n"
              "import orchestrator.store\n"
              "light = {m: m in sys.modules for m in ('torch', 'ray')}\n"
              "from orchestrator.cli import app\n"
              f"try:\n    app(['status', {str(tmp_path)!r}])\nexcept SystemExit:\n    pass\n"
              "print('LOADED', json.dumps([light, {m: m in sys.modules for m in ('torch', 'ray')}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "0/1 done" in done.stdout and "t1  running" in done.stdout
    assert json.loads(done.stdout.split("LOADED", 1)[1]) == [{"torch": False, "ray": False}] * 2
