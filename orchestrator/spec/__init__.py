"""The sweep file: schema (pydantic, structure only), keys (flat dotted keys, search domains, ``${ENV}``,
``--set``) and loading (validation against the registries, before anything starts)."""

from orchestrator.spec.keys import Domain, expand_groups, flatten, parse_override, unflatten
from orchestrator.spec.load import (
    Sweep,
    build_sweep,
    count_trials,
    describe_space,
    load_spec,
    load_spec_text,
    reported_metrics,
)
from orchestrator.spec.schema import TRIAL_SECTIONS, SweepSpec

__all__ = ["TRIAL_SECTIONS", "Domain", "Sweep", "SweepSpec", "build_sweep", "count_trials", "describe_space",
           "expand_groups", "flatten", "load_spec", "load_spec_text", "parse_override", "reported_metrics", "unflatten"]
