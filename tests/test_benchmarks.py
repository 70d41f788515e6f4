"""The GPU entry point cannot rot unseen: every part of benchmarks/gpu_sweep.sh, in its dry run on this machine,
checks the study and the --set keys it would run with `orchestrate validate`; an unknown part is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_sweep.sh"


def run(*parts: str) -> subprocess.CompletedProcess:
    python = os.path.dirname(sys.executable)  # `python3` in the script: this environment's
    env = {**os.environ, "DRY_RUN": "1", "PATH": f"{python}:{os.environ['PATH']}", "OUT": "/tmp/gpu-sweep-dry"}
    return subprocess.run(["bash", str(SCRIPT), *parts], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_every_part_of_the_gpu_entry_point_validates():
    parts = re.findall(r"^    ([a-z0-9-]+)\)", SCRIPT.read_text(), re.M)
    assert {"binary", "multiclass", "real", "enet-check", "train", "gpu-tests"} <= set(parts)
    done = run(*parts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [f"{part}: ok" for part in parts]


def test_an_unknown_part_is_refused():
    done = run("binary", "nonsense")
    assert done.returncode == 2 and "unknown part 'nonsense'" in done.stdout
