"""``orchestrate bench-serve`` on CPU, briefly: a real server runs a tiny sweep alone, then under a few polling and
following clients; the figures come back whole, with no error."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.bench.serve import ServeBench, markdown, run_bench_serve
from tests.conftest import tiny_spec


@pytest.mark.slow
def test_bench_serve_on_cpu(tmp_path):
    spec = tiny_spec(tmp_path / "unused", search={"algorithm": "grid", "metric": "val/miou", "mode": "max",
                                                  "scheduler": {"name": "none"}},
                     tracking={"wandb": {"mode": "disabled"}})
    spec["trainer"].update(max_epochs=1, log_images=0, best_worst=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_bench_serve(ServeBench(path, clients=3, followers=2, seconds=4, interval=0.2), tmp_path / "b")
    assert result["errors"] == 0 and result["requests"] >= 3 * 4 and result["events"] >= 2
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["wall_unloaded_s"] > 0 and result["wall_loaded_s"] > 0 and result["wall_ratio"] > 0
    memory = result["server_rss_mb"]
    assert 0 < memory["before"] <= memory["max"] and memory["after"] <= memory["max"]
    assert result["cpu_s"]["server"] > 0 and result["cpu_s"]["clients"] > 0
    assert "API latency ms: p50" in markdown(result)
