"""The failure policy (``orchestrator.failures``): one line per failure, its kind, and whether it is tried again; the
module's table and README's agree."""

from __future__ import annotations

import pytest

from orchestrator.failures import NOT_RETRIED, error_line, failure, kind, retried
from tests.conftest import ROOT


def test_failure_is_one_line():
    assert failure(RuntimeError("Output size is too small\n  (more detail)")) == "RuntimeError: Output size is too small"
    assert failure(FloatingPointError("")) == "FloatingPointError"
    assert "\n" not in failure(ValueError("a\nb\nc"))


def test_error_line_of_rays_wrapped_traceback():
    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1\nray.exceptions.RayTaskError(TrialError): "
             "ray::proxy_trial()\n  File \"proxy.py\", line 9\norchestrator.pool.proxy.TrialError: RuntimeError: "
             "Output size is too small\n")
    assert error_line(trace) == "RuntimeError: Output size is too small"
    assert error_line(None) == "trial failed (no error recorded)"


@pytest.mark.parametrize("line, expected, again", [
    ("OutOfMemoryError: the trial does not fit in its GPU even alone; lower trainer.batch_size", "out_of_memory", False),
    ("FloatingPointError: training loss is nan at epoch 3; lower optimizer.lr?", "not_finite", False),
    ("RuntimeError: Output size is too small", "cannot_run", False),
    ("ModelError: model pan with encoder x cannot be built: ...", "cannot_run", False),
    ("WorkerDied: the trial's worker stopped (actor died)", "worker_died", True),
    ("RuntimeError: CUDA error: an illegal instruction was encountered", "other", True),
])
def test_kind_and_retry(line, expected, again):
    assert kind(line) == expected and retried(line) is again


def test_readme_has_the_policy_table():
    readme = (ROOT / "README.md").read_text()
    for name in (*NOT_RETRIED, "worker_died", "other"):
        assert f"`{name}`" in readme
