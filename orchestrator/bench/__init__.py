"""Benchmarks that print figures: ``train`` (``orchestrate bench-train``: training throughput against the seeds'
loop), ``sweep`` (``orchestrate bench-sweep``: a whole study), ``serve`` (``orchestrate bench-serve``: the service
under load) and ``seeds`` (the seeds' hand-written loop, the baseline)."""
