"""One trial: config (``config.TrialConfig``, torch-free: the driver reads it), levers, data module, training step
(eager or CUDA graph), Lightning module, callbacks (visuals, reports to the pool), visuals, and ``build``, which
makes a trial's Lightning run (torch, in the worker's process). Import the submodules themselves: this package
imports nothing, so that the driver's ``trial.config`` brings no torch."""
