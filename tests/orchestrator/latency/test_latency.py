"""Latency: the benchmark protocol on CPU, the trtexec parser on real outputs, and a real sshd on loopback."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.export import export_onnx
from models.registry import create_model
from orchestrator.cli import app
from orchestrator.errors import KNOWN_ERRORS, SegsweepError
from orchestrator.gpu import GpuSampler, decode_clock_reasons
from orchestrator.latency.agent import summarize
from orchestrator.latency.bench import measure_onnx, measure_torch
from orchestrator.latency.measure import measure
from orchestrator.latency.remote import measure_remote, parse_facts
from orchestrator.latency.trtexec import parse_trtexec
from tests.orchestrator.conftest import free_port

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trtexec"
KEYS = {"backend", "target", "shape", "fp16", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "throughput_fps", "transfer",
        "device", "versions", "compute", "energy", "extra"}


def test_summary_percentiles_by_hand():
    stats = summarize([float(v) for v in range(1, 11)])  # 1..10
    assert stats == {"mean_ms": 5.5, "p50_ms": 5.5, "p90_ms": pytest.approx(9.1), "p99_ms": pytest.approx(9.91)}


@pytest.fixture(scope="module")
def enet_onnx(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = create_model("enet", None, 4).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "enet.onnx", (64, 96))


def test_torch_and_ort_cpu_backends(enet_onnx):
    model, path = enet_onnx
    for result in (measure_torch(model, [1, 3, 64, 96], warmup=2, iters=15), measure_onnx("ort-cpu", path, [1, 3, 64, 96], 2, 15)):
        data = result.to_json()
        assert set(data) == KEYS and data["target"] == "local" and data["shape"] == [1, 3, 64, 96]
        assert 0 < data["p50_ms"] <= data["p90_ms"] <= data["p99_ms"]
        assert data["throughput_fps"] == pytest.approx(1000 / data["mean_ms"])
        json.dumps(data)
    assert "onnxruntime" in measure_onnx("ort-cpu", path, [1, 3, 64, 96], 0, 2).versions


def test_threads_reach_the_runtime_and_are_restored(enet_onnx):
    import torch

    model, path = enet_onnx
    before = torch.get_num_threads()
    assert measure_onnx("ort-cpu", path, [1, 3, 64, 96], 0, 3, threads=1).extra["threads"] == 1
    assert measure_onnx("ort-cpu", path, [1, 3, 64, 96], 0, 3).extra["threads"] == "default"
    result = measure_torch(model, [1, 3, 64, 96], warmup=0, iters=3, threads=1)
    assert result.extra["threads"] == 1 and torch.get_num_threads() == before
    assert "gpu" not in result.extra  # clocks are sampled on a GPU only


def test_clock_reasons_decode_nvml_bits():
    assert decode_clock_reasons(0) == set()
    assert decode_clock_reasons(0x1 | 0x4) == {"gpu_idle", "sw_power_cap"}
    assert decode_clock_reasons(0x40 | 0x1000) == {"hw_thermal_slowdown"}  # unknown bits are not named
    with GpuSampler(interval_s=0.01) as sampler:  # no GPU here: nothing sampled, and it says so
        pass
    assert sampler.clock_summary() is None or sampler.source != "none"


def test_bench_cli_json_and_errors(enet_onnx, tmp_path):
    _, path = enet_onnx
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(path), "--backend", "ort-cpu", "--shape", "1x3x64x96", "--iters", "5",
                                 "--warmup", "1", "--threads", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == KEYS and json.loads(result.stdout)["extra"]["threads"] == 1
    for args, message in [
        (["bench", str(path), "--backend", "onnx-gpu"], "unknown latency backend 'onnx-gpu'"),
        (["bench", str(tmp_path / "none.onnx"), "--backend", "ort-cpu"], "no such ONNX file"),
        (["bench", str(path), "--backend", "torch"], "torch needs the PyTorch model"),
        (["bench", str(path), "--shape", "1x3x64"], "expected NxCxHxW"),
    ]:
        with pytest.raises(KNOWN_ERRORS, match=message):
            runner.invoke(app, args, catch_exceptions=False)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(SegsweepError, match=r"ort-cpu: onnxruntime cannot load it or run it on .*corrupt\.onnx"):
        measure_onnx("ort-cpu", corrupt, [1, 3, 64, 96], 0, 1)
    with pytest.raises(SegsweepError, match=r"local: trtexec: not found here \(not on PATH nor in /usr/src/tensorrt/"):
        measure("trtexec", [1, 3, 64, 96], onnx_path=path)


def test_trtexec_parser_tensorrt_10():
    parsed = parse_trtexec((FIXTURES / "trt10_performance_summary.txt").read_text())
    assert parsed["throughput_qps"] == 130.298
    assert parsed["host_latency"] == {"min": 5.38672, "max": 13.3664, "mean": 7.60628, "median": 7.16092,
                                      "p90": 10.2996, "p95": 10.8698, "p99": 12.9675}
    assert parsed["gpu_compute"]["median"] == 7.14139 and parsed["gpu_compute"]["p99"] == 12.9485
    assert parsed["h2d"]["mean"] == 0.0122212 and parsed["d2h"]["max"] == 0.110596


def test_trtexec_parser_tensorrt_8_and_7():
    parsed = parse_trtexec((FIXTURES / "trt8_performance_summary.txt").read_text())
    assert parsed["throughput_qps"] == 716.632 and parsed["host_latency"]["p99"] == 1.55853
    assert "p90" not in parsed["host_latency"] and parsed["gpu_compute"]["mean"] == 1.38629
    old = parse_trtexec((FIXTURES / "trt7_host_latency.txt").read_text())
    assert old["host_latency"] == {"min": 1.64058, "max": 6.2915, "mean": 1.66069, "median": 1.65601, "p99": 1.67065}
    assert "throughput_qps" not in old  # it printed 0 qps
    with pytest.raises(SegsweepError, match="no performance summary"):
        parse_trtexec("[I] Building engine ... failed")


def test_jetson_device_facts():
    text = ("NVIDIA Jetson TX2\x00\n---\n# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref\n---\n"
            "8.2.1-1+cuda10.2\n---\nNV Power Mode: MAXN\n0\n---\nSOC family:tegra186  Machine:quill\n"
            "cpu0: Online=1 Governor=schedutil MinFreq=2035200 MaxFreq=2035200 CurrentFreq=2035200\n"
            "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n---\naarch64")
    facts = parse_facts(text)
    assert facts == {"model": "NVIDIA Jetson TX2", "arch": "aarch64", "l4t": "R32.7.1", "tensorrt": "8.2.1-1+cuda10.2",
                     "nvpmodel": "MAXN (0)", "jetson_clocks": "on", "gpu_mhz": 1300.5, "gpu_max_mhz": 1300.5}
    assert parse_facts("\n---\n---\n---\n---\n---\nx86_64") == {"arch": "x86_64"}
    root_only = "\n---\n---\n---\n---\nError: Run this script(/usr/bin/jetson_clocks) as a root user\n---\naarch64"
    assert parse_facts(root_only)["jetson_clocks"] == "unknown (jetson_clocks --show answers root only)"


def test_remote_target_over_real_ssh(sshd, enet_onnx):
    url, options = sshd
    _, path = enet_onnx
    args = ["bench", str(path), "--backend", "ort-cpu", "--shape", "1x3x64x96", "--warmup", "1", "--iters", "8",
            "--target", url, "--remote-python", sys.executable, "--threads", "1", "--format", "json"]
    for option in options:
        args += ["--ssh-option", option]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["target"] == url and data["backend"] == "ort-cpu" and set(data) == KEYS
    assert 0 < data["p50_ms"] <= data["p90_ms"] <= data["p99_ms"]
    assert data["extra"]["device_facts"]["arch"] == os.uname().machine and data["extra"]["threads"] == 1
    assert "onnxruntime" in data["versions"]


def test_remote_errors_are_one_line(sshd, enet_onnx, tmp_path):
    url, options = sshd
    _, path = enet_onnx
    closed = f"ssh://{getpass.getuser()}@127.0.0.1:{free_port()}"
    with pytest.raises(SegsweepError, match=r"127.0.0.1:\d+: cannot connect"):
        measure_remote(closed, "ort-cpu", path, [1, 3, 64, 96], 0, 1, ssh_options=options)
    with pytest.raises(SegsweepError, match=r"ort-cpu failed: .*/no/python: .*No such file or directory$"):
        measure_remote(url, "ort-cpu", path, [1, 3, 64, 96], 0, 1, remote_python="/no/python", ssh_options=options)
    with pytest.raises(SegsweepError, match=r"trtexec: not found on the target \(not on PATH nor in /usr/src/"):
        measure_remote(url, "trtexec", path, [1, 3, 64, 96], 0, 1, ssh_options=options)
    with pytest.raises(SegsweepError, match="expected ssh://"):
        measure_remote("http://x", "ort-cpu", path, [1, 3, 64, 96], 0, 1)


# every way people reach for to make ssh run a command here (or read a config that may), as -o takes them
COMMAND_OPTIONS = ["ProxyCommand=touch {f}", "proxycommand touch {f}", " ProxyCommand = touch {f}",
                   "LocalCommand=touch {f}", "PermitLocalCommand=yes", "KnownHostsCommand=/bin/sh -c 'touch {f}'",
                   "Match=exec \"touch {f}\"", "Include={f}.conf", "ProxyJump=x@127.0.0.1:9", "SendEnv=*",
                   "PKCS11Provider=/tmp/x.so"]


def test_ssh_options_that_run_commands_are_refused_for_cli_users_too(sshd, enet_onnx, tmp_path):
    """ssh's -o options come from a known-safe set, for ``orchestrate bench``, a sweep's ssh_options and registered
    targets alike: each refusal is one line naming the option, and no command runs (no file appears)."""
    url, options = sshd
    _, path = enet_onnx
    marker = tmp_path / "ran"
    (tmp_path / "ran.conf").write_text(f"ProxyCommand touch {marker}\n")  # what an Include would read
    runner = CliRunner()
    for bad in COMMAND_OPTIONS:
        option = bad.format(f=marker)
        key = option.strip().split("=")[0].split()[0]
        with pytest.raises(SegsweepError, match=rf"^ssh option {key}: refused \(") as refused:
            runner.invoke(app, ["bench", str(path), "--backend", "ort-cpu", "--shape", "1x3x64x96", "--target", url,
                                *[a for o in [*options, option] for a in ("--ssh-option", o)]], catch_exceptions=False)
        assert "\n" not in str(refused.value)
        with pytest.raises(SegsweepError, match=rf"ssh option {key}: refused"):
            measure_remote(url, "ort-cpu", path, [1, 3, 64, 96], 0, 1, ssh_options=[*options, option])
    for url_bad in ["ssh://-oProxyCommand=touch%20x@127.0.0.1", "ssh://-oProxyCommand=touch", "ssh://a;b@127.0.0.1",
                    "ssh://127.0.0.1/path", "ssh://u:pw@127.0.0.1"]:
        with pytest.raises(SegsweepError, match="ssh://"):
            measure_remote(url_bad, "ort-cpu", path, [1, 3, 64, 96], 0, 1, ssh_options=options)
    assert not marker.exists()


def test_a_registered_target_is_measured_by_name_over_real_ssh(sshd, enet_onnx, tmp_path, monkeypatch):
    """``orchestrate target add`` keeps the address, options and interpreter; ``bench --target NAME`` and a sweep's
    ``export.targets: [NAME]`` use them, and results name the target, not its address."""
    url, options = sshd
    _, path = enet_onnx
    monkeypatch.setenv("SEGSWEEP_TARGETS", str(tmp_path / "targets.json"))
    runner = CliRunner()
    add = ["target", "add", "loop", url, "--remote-python", sys.executable, "--data", str(tmp_path),
           *[a for o in options for a in ("--ssh-option", o)]]
    assert runner.invoke(app, add, catch_exceptions=False).exit_code == 0
    with pytest.raises(SegsweepError, match="target loop exists"):
        runner.invoke(app, add, catch_exceptions=False)
    with pytest.raises(SegsweepError, match="ssh option ProxyCommand: refused"):
        runner.invoke(app, ["target", "add", "evil", url, "--ssh-option", f"ProxyCommand=touch {tmp_path / 'x'}",
                            "--data", str(tmp_path)], catch_exceptions=False)
    listed = runner.invoke(app, ["target", "list", "--data", str(tmp_path)]).stdout
    assert listed.startswith(f"loop  {url}  -o IdentityFile=") and "evil" not in listed
    result = runner.invoke(app, ["bench", str(path), "--backend", "ort-cpu", "--shape", "1x3x64x96", "--warmup", "1",
                                 "--iters", "4", "--target", "loop", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["target"] == "loop"
    with pytest.raises(SegsweepError, match=r"unknown target 'lop' \(did you mean 'loop'\? registered: loop"):
        measure_remote("lop", "ort-cpu", path, [1, 3, 64, 96], 0, 1)
    assert runner.invoke(app, ["target", "remove", "loop", "--data", str(tmp_path)]).exit_code == 0
    assert not (tmp_path / "x").exists()
