"""The driver's Ray settings are in the environment before Ray reads them at its import."""

from __future__ import annotations

import os
import subprocess
import sys


def test_ray_reads_the_drivers_settings_at_its_import():
    code = ("import orchestrator.study, ray._private.ray_constants as c, os; "
            "print(c.RAY_DEDUP_LOGS, os.environ['TUNE_DISABLE_AUTO_CALLBACK_LOGGERS'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_DEDUP", "TUNE_DISABLE"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1"]  # one warning line per worker, no "[repeated 2x across cluster]"
