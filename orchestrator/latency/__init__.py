"""Latency and energy on a target: timing a model (``measure``), the targets it runs on (this machine, an SSH device,
named targets of a server), TensorRT engines kept per device, and the power readers (NVML, tegrastats)."""
