"""TensorRT on a device, against stand-ins (there is no TensorRT, Jetson or GPU here): the real sshd on loopback, each
port a device whose trtexec, tegrastats, nvpmodel and jetson_clocks print their documented output
(``tests/standins.py``). ``orchestrate bench MODEL.onnx --backend trtexec --target ssh://...`` builds each engine once
per device, TensorRT version and precision, reuses it, parses p50/p90/p99 and the energy per image, and records both."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.export import export_onnx
from models.registry import create_model
from orchestrator.cli import app
from orchestrator.latency import engines
from orchestrator.latency.measure import Protocol, measure
from orchestrator.store import Store
from tests.standins import builds, device_profile

QPS = {"orin": 130.298, "xavier": 716.632, "trt11": 412.37}  # the fixtures' Throughput lines


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_onnx(create_model("enet", None, 4).eval(), tmp_path_factory.mktemp("onnx") / "enet.onnx", (64, 96))


@pytest.fixture(autouse=True)
def short_runs(monkeypatch):
    """trtexec's warm-up and timed run as the protocol sets them (1 s and 2 s), shortened for the stand-ins."""
    monkeypatch.setattr(engines, "MIN_WARMUP_S", 0.2)
    monkeypatch.setattr(engines, "MIN_TIMED_S", 0.4)


def bench(targets, profile: str, model: Path, *extra: str, python: str = sys.executable) -> tuple[dict, str]:
    args = ["bench", str(model), "--backend", "trtexec", "--iters", "20", "--target", targets.url(profile),
            "--remote-python", python, "--format", "json", *extra]
    for option in targets.options:
        args += ["--ssh-option", option]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_an_engine_is_built_once_per_device_and_reused(ssh_targets, model, tmp_path):
    env = ssh_targets.env["orin"]
    first, _ = bench(ssh_targets, "orin", model)
    second, _ = bench(ssh_targets, "orin", model)
    assert builds(env) == 1  # the stand-in trtexec counts the engines it built
    assert first["extra"]["engine"]["built"] is True and second["extra"]["engine"]["built"] is False
    record = second["extra"]["engine"]
    assert record["name"] == first["extra"]["engine"]["name"] and record["tensorrt"] == "10.3.0"
    assert record["precision"] == "fp32" and record["parity"]["max_abs_diff"] == 0.0  # fp32: the same outputs
    assert Path(record["engine"]).is_file() and Path(record["engine"]).is_relative_to(env["HOME"])  # on the device
    # TensorRT 10's summary: p50 is its median, p90 and p99 its own percentiles
    assert (second["p50_ms"], second["p90_ms"], second["p99_ms"]) == (7.16092, 10.2996, 12.9675)
    assert second["transfer"].startswith("excluded") and second["versions"]["tensorrt"] == "10.3.0"
    # the Orin's VDD_IN (4556 mW) over the timed window; energy per image = power / throughput
    energy = second["energy"]
    assert (energy["source"], energy["rail"], energy["power_w"]) == ("tegrastats", "VDD_IN", 4.556)
    assert energy["mj_per_image"] == pytest.approx(4.556 * 1000 / QPS["orin"]) and energy["samples"] >= 2
    facts = second["extra"]["device_facts"]
    assert (facts["nvpmodel"], facts["jetson_clocks"], facts["gpu_mhz"]) == ("MAXN_SUPER (2)", "off", 306.0)
    # recorded: beside the model, and in a store's latency table (a sweep's export: block)
    (local,) = json.loads(model.with_suffix(".engines.json").read_text())
    assert local["device"] == ssh_targets.url("orin") and local["name"] == record["name"]
    store = Store(tmp_path / "results.db")
    store.add_trial("t", {})
    store.record_latency("t", "trtexec", ssh_targets.url("orin"), second)
    (row,) = store.latencies()
    assert (row["p50_ms"], row["power_w"], row["energy_mj"]) == (7.16092, 4.556, energy["mj_per_image"])


def test_tensorrt_8_on_a_xavier_fp16(ssh_targets, model):
    """TensorRT 8.4 (JetPack 5): --buildOnly and --fp16, one percentile (its stand-in refuses a list or
    --skipInference, as 8.4 does), so p90 comes from the exported per-iteration times; an AGX Xavier has no input
    rail: its rails add up."""
    result, _ = bench(ssh_targets, "xavier", model, "--fp16")
    lo, hi = 1.3476, 1.5657  # the fixture's Latency min and max, which the stand-in's exported times span
    assert (result["p50_ms"], result["p99_ms"]) == (1.38037, 1.55853)
    assert result["p90_ms"] == pytest.approx(lo + (hi - lo) * 17 / 19)  # trtexec's rule over 20 iterations
    assert result["extra"]["times"]["iterations"] == 20
    assert 0 < result["extra"]["engine"]["parity"]["max_abs_diff"] < 1e-3  # fp16 kernels against fp32 onnxruntime
    energy = result["energy"]
    assert energy["rail"] == "sum of GPU, CPU, SOC, CV, VDDRQ, SYS5V" and energy["power_w"] == pytest.approx(7.632)
    assert energy["mj_per_image"] == pytest.approx(7.632 * 1000 / QPS["xavier"])


def test_tensorrt_11_fp16_is_an_fp16_graph_made_here(ssh_targets, model):
    """TensorRT 11 has no --fp16 (its stand-in refuses it): the graph is converted here, and the engine of each
    precision is its own."""
    env = ssh_targets.env["trt11"]
    result, _ = bench(ssh_targets, "trt11", model, "--fp16")
    record = result["extra"]["engine"]
    assert record["graph"] == "fp16 graph (onnxruntime float16)" and record["precision"] == "fp16"
    assert 0 < record["parity"]["max_abs_diff"] < 0.05  # an fp16 graph against the fp32 one
    assert (result["p50_ms"], result["p90_ms"], result["p99_ms"]) == (2.41553, 2.46704, 2.55078)
    assert result["versions"]["tensorrt"] == "11.1.0" and builds(env) == 1
    bench(ssh_targets, "trt11", model)  # fp32: another engine
    assert builds(env) == 2


def test_a_device_without_tegrastats_or_onnxruntime(ssh_targets, model):
    """One line, and the latency is recorded; the output check says why it was not made."""
    result, stderr = bench(ssh_targets, "no-tegrastats", model, python="/usr/bin/python3")  # no numpy there
    assert result["energy"] is None and result["p50_ms"] == 7.16092
    (line,) = [line for line in stderr.splitlines() if "power" in line]
    assert line == (f"[segsweep] {ssh_targets.url('no-tegrastats')}: no tegrastats on this device and no NVML power "
                    f"(nvidia-ml-py and a GPU's driver): latency recorded, no power or energy")
    assert result["extra"]["engine"]["parity"] == {
        "skipped": "no numpy on this device: install numpy and onnxruntime there for the check"}


def test_trtexec_on_this_machine_keeps_its_engines_too(model, tmp_path, monkeypatch):
    for key, value in device_profile(tmp_path / "here", "10", "tegrastats_nano_r32.txt").items():
        monkeypatch.setenv(key, value)
    runs = [measure("trtexec", [1, 3, 64, 96], Protocol(iters=10), onnx_path=model) for _ in range(2)]
    assert [r.extra["engine"]["built"] for r in runs] == [True, False] and runs[1].target == "local"
    assert runs[1].energy["rail"] == "POM_5V_IN" and runs[1].energy["power_w"] == 4.52
