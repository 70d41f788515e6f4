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

from orchestrator.errors import SegsweepError
from orchestrator.mps import CONTROL, MpsStart, start_mps


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
