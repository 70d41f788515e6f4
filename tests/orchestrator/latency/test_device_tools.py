"""The device tools' output, parsed from their documented or posted formats (``tests/fixtures``): tegrastats on an
Orin, an AGX Xavier and a Nano, nvpmodel, jetson_clocks, TensorRT 11's summary; trtexec's command lines by TensorRT
version; power to energy per image over the timed window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.latency.agent import tensorrt_version
from orchestrator.latency.energy import energy_figures
from orchestrator.latency.tegra import parse_jetson_clocks, parse_nvpmodel, parse_tegrastats
from orchestrator.latency.trtexec import (
    build_command,
    parity_command,
    parse_times,
    parse_trtexec,
    percentile,
    timing_command,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture_lines(name: str) -> list[str]:
    return [line for line in (FIXTURES / "jetson" / name).read_text().splitlines() if not line.startswith("#")]


def test_tegrastats_rails_on_orin_xavier_and_nano():
    (orin,) = fixture_lines("tegrastats_orin_nano_r36.txt")
    sample = parse_tegrastats(orin)
    assert sample.rails == {"VDD_IN": (4556, 4556), "VDD_CPU_GPU_CV": (483, 483), "VDD_SOC": (1451, 1451)}
    assert sample.total() == (4556, "VDD_IN") and sample.gpu_load == 0 and sample.gpu_mhz is None
    (xavier,) = fixture_lines("tegrastats_agx_xavier_r32.txt")
    sample = parse_tegrastats(xavier)  # no input rail: the module's rails add up; RAM/SWAP figures are no rails
    assert list(sample.rails) == ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]
    assert sample.total() == (463 + 618 + 2936 + 0 + 309 + 3306, "sum of GPU, CPU, SOC, CV, VDDRQ, SYS5V")
    (nano,) = fixture_lines("tegrastats_nano_r32.txt")
    sample = parse_tegrastats(nano)
    assert sample.total() == (4520, "POM_5V_IN") and sample.rails["POM_5V_IN"] == (4520, 4680)
    assert (sample.gpu_load, sample.gpu_mhz, sample.emc_mhz) == (0, 76, 1600)
    orin_loaded = "EMC_FREQ 3%@2133 GR3D_FREQ 61%@[612,612] VDD_IN 9870mW/7100mW"  # R36: one clock per GPC
    assert (parse_tegrastats(orin_loaded).gpu_mhz, parse_tegrastats(orin_loaded).emc_mhz) == (612, 2133)


def test_power_mode_and_clocks():
    assert parse_nvpmodel((FIXTURES / "jetson" / "nvpmodel_orin_nano.txt").read_text()) == "MAXN_SUPER (2)"
    assert parse_nvpmodel("NVPM WARN: patching tpc_pg_mask\nNV Power Mode: 15W\n0\n") == "15W (0)"
    free = parse_jetson_clocks((FIXTURES / "jetson" / "jetson_clocks_orin_nano.txt").read_text())
    assert free == {"jetson_clocks": "off", "gpu_mhz": 306.0, "gpu_max_mhz": 624.75, "emc_mhz": 665.6}
    pinned = parse_jetson_clocks((FIXTURES / "jetson" / "jetson_clocks_orin_nano_on.txt").read_text())
    assert pinned == {"jetson_clocks": "on", "gpu_mhz": 1020.0, "gpu_max_mhz": 1020.0, "emc_mhz": 3199.0}
    assert parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user\n") == {}


def test_tensorrt_11_summary_and_version_banners():
    text = (FIXTURES / "trtexec" / "trt11_performance_summary.txt").read_text()
    parsed = parse_trtexec(text)
    assert parsed["throughput_qps"] == 412.37
    assert parsed["host_latency"] == {"min": 2.31165, "max": 2.61328, "mean": 2.42103, "median": 2.41553,
                                      "p90": 2.46704, "p99": 2.55078}
    assert parsed["h2d"]["max"] == 0 and parsed["gpu_compute"]["p90"] == 2.46704
    assert [tensorrt_version(b) for b in ("[TensorRT v110100] [b106]", "[TensorRT v100300]", "[TensorRT v8601]",
                                          "[TensorRT v8400]", "no banner")] == ["11.1.0", "10.3.0", "8.6.1", "8.4.0",
                                                                                None]


def test_command_lines_follow_the_tensorrt_version():
    assert build_command("trtexec", "8.4.0", "m.onnx", fp16=True) == [
        "trtexec", "--onnx=m.onnx", "--saveEngine={engine}", "--buildOnly", "--fp16"]
    assert build_command("trtexec", "10.3.0", "m.onnx", fp16=True)[3:] == ["--skipInference", "--fp16"]
    assert build_command("trtexec", "11.1.0", "m-fp16.onnx", fp16=True)[3:] == ["--skipInference"]  # no --fp16 in 11
    assert timing_command("trtexec", "10.3.0", 1000, 2, 100, "t.json") == [
        "trtexec", "--loadEngine={engine}", "--warmUp=1000", "--duration=2", "--iterations=100",
        "--exportTimes=t.json", "--useCudaGraph", "--noDataTransfers", "--useSpinWait", "--percentile=50,90,99"]
    assert timing_command("trtexec", "8.4.0", 1000, 2.5, 10, "t.json")[-1] == "--percentile=99"  # one value only
    assert parity_command("trtexec", "input")[2:4] == ["--loadInputs=input:{input}", "--exportOutput={output}"]


def test_exported_times_and_trtexecs_own_percentile():
    rows = [{"startEnqMs": i, "latencyMs": float(v)} for i, v in enumerate([5, 1, 4, 2, 3, 10, 6, 7, 8, 9])]
    times = parse_times(json.dumps(rows))
    assert times[:3] == [5.0, 1.0, 4.0]
    # sampleReporting.cpp: all but the slowest int((1 - p/100) * n) fall below it
    assert (percentile(times, 90), percentile(times, 99), percentile(times, 50)) == (9.0, 10.0, 5.0)
    with pytest.raises(Exception, match="not its JSON list"):
        parse_times("[{]")


def test_energy_per_image_from_the_samples_in_the_timed_window():
    lines = [[t, f"VDD_IN {mw}mW/{mw}mW VDD_SOC 100mW/100mW GR3D_FREQ 50%@[{mhz}]"]
             for t, mw, mhz in [(0.0, 3000, 306), (1.0, 9000, 918), (1.5, 11000, 918), (2.0, 10000, 918),
                                (3.5, 3000, 306)]]
    figures, why = energy_figures({"source": "tegrastats", "lines": lines}, (0.9, 2.1), images_per_s=200.0)
    assert why is None
    assert figures["power_w"] == pytest.approx(10.0) and figures["mj_per_image"] == pytest.approx(50.0)
    assert (figures["rail"], figures["samples"], figures["gpu_mhz"]) == ("VDD_IN", 3, 918)
    # NVML: the energy counter integrates exactly between its first and last read in the window
    samples = [[0.0, 50000, 0.0], [1.0, 300000, 100.0], [2.0, 310000, 400.0], [3.0, 60000, 1000.0]]
    figures, _ = energy_figures({"source": "nvml", "samples": samples}, (0.5, 2.5), images_per_s=100.0)
    assert figures["power_w"] == pytest.approx(0.3) and figures["mj_per_image"] == pytest.approx(3.0)
    assert energy_figures({"source": None, "why": "no tegrastats on this device"}, (0, 1), 1.0) == (
        None, "no tegrastats on this device")
    assert energy_figures({"source": "tegrastats", "lines": lines}, (2.2, 2.4), 1.0)[1] == (
        "no tegrastats power sample inside the timed 0.20 s")


def test_nvml_power_and_its_energy_counter_through_the_agents_sampler(monkeypatch):
    """Beside an NVIDIA GPU (none here): the agent's sampler reads NVML's power (``nvmlDeviceGetPowerUsage``, mW) and
    energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded) as nvidia-ml-py documents
    them; a stand-in module answers as a GPU drawing a steady 250 W would."""
    import sys
    import time
    from types import SimpleNamespace

    from orchestrator.latency.agent import PowerSampler, timed_loop

    start = time.time()
    nvml = SimpleNamespace(NVMLError=RuntimeError, nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
                           nvmlDeviceGetPowerUsage=lambda handle: 250_000,
                           nvmlDeviceGetTotalEnergyConsumption=lambda handle: (time.time() - start) * 250_000)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("PATH", "/nonexistent")  # no tegrastats: NVML is the GPU backend's source
    with PowerSampler("gpu") as sampler:
        timed_loop(lambda: time.sleep(0.005), 1, 20, min_warmup_s=0.1, min_timed_s=0.5, marks=sampler.marks)
    report = sampler.report()
    figures, why = energy_figures(report, (report["marks"]["start"], report["marks"]["end"]), images_per_s=200.0)
    assert report["source"] == "nvml" and why is None and figures["samples"] >= 5
    assert figures["power_w"] == pytest.approx(250, rel=0.02) and figures["mj_per_image"] == pytest.approx(1250, rel=0.02)
    with PowerSampler("board") as cpu:  # a CPU backend off a Jetson: no power, and it says why
        pass
    assert cpu.report()["source"] is None and cpu.report()["why"] == "no tegrastats on this device"
