"""Ray's ``worker_process_setup_hook`` for a sweep: each worker process of the job imports what a trial needs
(torch, Lightning, segmentation-models-pytorch, timm and segsweep's trial code) as it starts.

Ray starts a pool of workers when the driver connects and hands idle ones to new trial actors, so the imports
(measured at 16 s per process on the GPU machine, most of it Lightning pulling in torchmetrics and torchvision)
overlap the driver's data preparation and memory probe instead of each trial's start. CUDA is not touched here:
which GPU a worker gets is decided later. Turned off with ``resources.preload_workers: false``.
"""

from __future__ import annotations

import time
import warnings

DONE_AT: float | None = None  # when this process finished preloading (wall clock); None: not preloaded


def warm() -> None:
    """Import the trial's modules; never raises (a worker that cannot import them fails later, in its trial, with
    the real error)."""
    global DONE_AT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # lazy by design: these imports are the preloading, run in each worker as it starts
            import orchestrator.trial.build  # noqa: F401 - torch, Lightning, smp, timm, the models and losses
            import orchestrator.trial.callbacks  # noqa: F401 - Ray Tune's reporting
        except Exception:  # noqa: BLE001 - see the docstring
            return
    DONE_AT = time.time()
