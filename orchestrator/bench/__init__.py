"""Benchmarks that print figures: ``train`` (``orchestrate bench-train``: training throughput against the seeds'
loop) and ``seeds`` (the seeds' hand-written loop, the baseline)."""
