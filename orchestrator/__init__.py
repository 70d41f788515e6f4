"""segsweep's driver side: sweep spec, trials, the Tune driver, results store, tracking, data, latency, CLI."""

from importlib import import_module

from orchestrator.errors import KNOWN_ERRORS, SegsweepError, SpecError, UnknownNameError

_LAZY = {"Sweep": "orchestrator.spec", "SweepSpec": "orchestrator.spec", "load_spec": "orchestrator.spec"}
__all__ = ["KNOWN_ERRORS", "SegsweepError", "SpecError", "Sweep", "SweepSpec", "UnknownNameError", "load_spec"]


def __getattr__(name: str):
    # lazy: the spec loader imports the registries (torch); `import orchestrator.store` must not
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
