"""CUDA MPS for the sweep's workers: when it is tried, what a machine without it says, and (GPU machine) a real daemon
serving a real client."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.driver.pool import gpu_placements, gpu_slots
from orchestrator.errors import SegsweepError
from orchestrator.mps import CONTROL, PIPE_ENV, MpsStart, start_mps, wanted
from orchestrator.spec.schema import ResourcesSpec


def test_wanted_only_for_gpu_trials_on_the_sweeps_own_ray(monkeypatch):
    monkeypatch.delenv(PIPE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert wanted("auto", own_ray=True, gpu_trials=True)
    assert not wanted(False, own_ray=True, gpu_trials=True)
    assert not wanted("auto", own_ray=True, gpu_trials=False)  # gpus_per_trial: 0
    assert not wanted("auto", own_ray=False, gpu_trials=True)  # a joined cluster: its nodes' GPUs are not ours
    with pytest.raises(SegsweepError, match="needs the sweep's own Ray"):
        wanted(True, own_ray=False, gpu_trials=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not wanted("auto", own_ray=True, gpu_trials=True)  # every GPU hidden: a CPU run
    assert wanted(True, own_ray=True, gpu_trials=True)  # true tries, and start_mps says why it cannot


def test_an_mps_set_up_by_the_user_is_left_to_the_workers(monkeypatch):
    monkeypatch.setenv(PIPE_ENV, "/tmp/their-mps")
    assert not wanted("auto", own_ray=True, gpu_trials=True)
    with pytest.raises(SegsweepError, match=f"{PIPE_ENV} is set already"):
        wanted(True, own_ray=True, gpu_trials=True)


def test_auto_packing_is_eight_trials_in_four_processes_under_mps():
    assert gpu_slots(ResourcesSpec()) == 4 and gpu_slots(ResourcesSpec(), mps=True) == 8
    assert gpu_placements(ResourcesSpec(), mps=True) == [(2, 2, 0.25)] * 4
    # stated figures win over auto
    assert gpu_placements(ResourcesSpec(trials_per_gpu=4, workers_per_gpu=2), mps=True) == [(2, 2, 0.5)] * 2
    assert gpu_placements(ResourcesSpec(gpus_per_trial=0.5), mps=True) == [(1, 1, 0.5)] * 2


@pytest.mark.skipif(shutil.which(CONTROL) is not None, reason="this machine has MPS")
def test_a_machine_without_mps_runs_without_it_quietly_unless_asked(capsys):
    assert start_mps("auto") is None
    assert capsys.readouterr().err == ""
    with pytest.raises(SegsweepError, match=f"resources.mps: true, but {CONTROL} is not on PATH"):
        start_mps(True)
    with pytest.raises(SegsweepError, match="not on PATH"):
        MpsStart(True).join()  # the thread's error comes back in the driver's
    MpsStart("auto").stop()  # after a failure elsewhere: nothing was started, nothing to end


def _tools(folder: Path, control: str) -> None:
    """Driver tools of a machine whose MPS is broken (the real ones are not on this machine)."""
    for name, body in ((CONTROL, control), ("nvidia-smi", "exit 0")):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(shutil.which(CONTROL) is not None, reason="this machine has MPS")
def test_a_daemon_that_does_not_start_or_serve_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _tools(tmp_path, 'echo "An instance of this daemon is already running" >&2; exit 1')
    assert start_mps("auto") is None
    err = capsys.readouterr().err.strip()
    assert err == ("[segsweep] warning: CUDA MPS not used: its daemon did not serve (An instance of this daemon is "
                   "already running)")
    with pytest.raises(SegsweepError, match="already running\\); set resources.mps=false"):
        start_mps(True)
    # the daemon "starts", and the check's client finds no CUDA driver here: the daemon is told to quit
    _tools(tmp_path, f'[ "$1" = -d ] && exit 0; cat > {tmp_path}/told')
    assert start_mps("auto") is None
    assert "a client could not open a context" in capsys.readouterr().err
    assert (tmp_path / "told").read_text() == "quit\n"
    assert list((tmp_path / "tmp").iterdir()) == []  # its folder went with it


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which(CONTROL) is None, reason="needs nvidia-cuda-mps-control")
def test_the_sweeps_daemon_serves_a_torch_client_and_goes():
    daemon = start_mps(True)
    try:
        code = "import torch; x = torch.ones(1 << 20, device='cuda'); print(float(x.sum()))"
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **daemon.env}, capture_output=True,
                             text=True, timeout=120, check=False)
        assert out.returncode == 0 and out.stdout.strip() == str(float(1 << 20)), out.stderr
        listed = subprocess.run([CONTROL], input="get_server_list\n", env={**os.environ, **daemon.env},
                                capture_output=True, text=True, timeout=30, check=False)
        assert listed.stdout.strip(), "the daemon started no server for its clients"
    finally:
        daemon.stop()
    assert not daemon.folder.exists()
