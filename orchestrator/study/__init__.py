"""A study from start to report: the driver's trials, then exports and latency, the report and the W&B summary."""

from orchestrator.study.run import extend_sweep, finish, resume_sweep, run_sweep

__all__ = ["extend_sweep", "finish", "resume_sweep", "run_sweep"]
