"""Power and energy per inference from what the agent's ``PowerSampler`` collected while a model was timed.

- On a Jetson: ``tegrastats`` lines (``tegra.power_series``): the board's input rail (``VDD_IN``, ``POM_5V_IN``), or
  the sum of its rails where it has none. NVML reports no power on a Jetson.
- On an NVIDIA GPU: NVML's power (``nvmlDeviceGetPowerUsage``, mW) and, from Volta on, its energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded), which integrates exactly between two reads:
  used where present.

Only samples inside the timed loop count (its window: the loop's own marks, or trtexec's "Starting inference" plus
its warm-up). Energy per image = mean power / images per second: with the time per image, the energy one inference
costs in steady state, idle draw included, as the battery sees it.
"""

from __future__ import annotations

import statistics
from typing import Any

from orchestrator.latency.tegra import power_series


def energy_figures(power: dict[str, Any], window: tuple[float, float], images_per_s: float
                   ) -> tuple[dict[str, Any] | None, str | None]:
    """``({power_w, mj_per_image, source, rail, samples, window_s, gpu_mhz, ...}, None)``, or ``(None, why)``
    where nothing was measured (no tegrastats on a target, no NVML, a window shorter than the sampling interval)."""
    source = power.get("source")
    if source is None:
        return None, power.get("why") or "no power source on the device"
    clocks: dict[str, float] = {}
    if source == "tegrastats":
        samples, rail, clocks = power_series([(t, line) for t, line in power.get("lines", [])])
        if not samples:
            return None, "tegrastats printed no power rail"
    else:
        samples, rail = [(t, mw) for t, mw, _ in power.get("samples", [])], "GPU board power (NVML)"
    t0, t1 = window
    inside = [(t, mw) for t, mw in samples if t0 <= t <= t1]
    if not inside:
        return None, f"no {source} power sample inside the timed {t1 - t0:.2f} s"
    power_w = statistics.fmean(mw for _, mw in inside) / 1000
    counted = [(t, mj) for t, _, mj in power.get("samples", []) if t0 <= t <= t1 and mj is not None]
    if len(counted) >= 2 and counted[-1][0] > counted[0][0]:  # NVML's energy counter: exact between two reads
        power_w = (counted[-1][1] - counted[0][1]) / (counted[-1][0] - counted[0][0]) / 1000
    figures = {"source": source, "rail": rail, "power_w": power_w, "mj_per_image": power_w * 1000 / images_per_s,
               "samples": len(inside), "window_s": t1 - t0, **clocks}
    return figures, None
