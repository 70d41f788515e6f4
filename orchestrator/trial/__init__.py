"""One trial: config (``TrialConfig``), levers, data module, training step (eager or CUDA graph), Lightning module,
callbacks (visuals, report to Tune), visuals, and ``run.run_trial``, the function Tune runs (it imports Ray)."""

from orchestrator.trial.build import TrialRun, build_module, build_trial
from orchestrator.trial.config import TrialConfig, TrialContext

__all__ = ["TrialConfig", "TrialContext", "TrialRun", "build_module", "build_trial"]
