"""The trial pool: one long-lived worker process per GPU (per node on a CPU cluster) trains several trials at once,
a thread and a CUDA stream each; Tune's trials are light proxies that hand their config to a worker and report its
epochs. ``protocol``, ``proxy`` and ``actor`` (the actor class the driver names) import no torch; ``worker`` does, in the
worker's own process."""
