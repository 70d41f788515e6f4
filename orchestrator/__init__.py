"""segsweep's driver side: sweep spec, search space, trials, runner, results store, tracking, data, CLI."""

from orchestrator.errors import SegsweepError, SpecError, UnknownNameError
from orchestrator.spec import Sweep, SweepSpec, load_spec

__all__ = ["SegsweepError", "SpecError", "Sweep", "SweepSpec", "UnknownNameError", "load_spec"]
