"""What a Jetson's own tools print, parsed: ``tegrastats`` lines (power rails, GPU and memory clocks), ``nvpmodel -q``
(the power mode) and ``jetson_clocks --show`` (the clocks, and whether they are pinned).

Formats, as documented and as posted by their users (the fixtures under ``tests/fixtures/jetson`` name each source):

- tegrastats (Jetson Linux Developer Guide, "tegrastats Utility"): one line per interval; each power rail as
  ``NAME <instant>/<average>``, in mW, with the unit written out since L4T R35 (``VDD_IN 4556mW/4556mW`` on an Orin)
  and bare before (``VDD_IN 5213/5213`` on a Xavier NX, ``POM_5V_IN 4520/4680`` on a Nano, ``GPU 463/463 CPU 618/618
  SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306`` on an AGX Xavier); ``GR3D_FREQ <load>%@<MHz>`` (``@[306]``,
  one value per GPC, on an Orin) and ``EMC_FREQ <load>%@<MHz>``. Memory figures (``RAM 2147/7620MB``) are not rails.
- ``nvpmodel -q``: ``NV Power Mode: <name>`` then the mode's id on its own line.
- ``jetson_clocks --show`` (root only): ``cpuN: Online=1 Governor=... MinFreq=... MaxFreq=... CurrentFreq=...``,
  ``GPU MinFreq=... MaxFreq=... CurrentFreq=...`` and ``EMC ...`` in Hz/kHz as the kernel gives them; jetson_clocks
  pins each clock's minimum to its maximum, so the clocks are "on" when every minimum equals its maximum.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

# a rail: NAME instant/average, in mW (written out or not); the lookahead keeps RAM 2147/7620MB and the like out
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_LOAD_AT = r"(\d+)%(?:@\[?([\d,]+)\]?)?"
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's whole input, where it has a monitor on it


@dataclass
class TegraSample:
    """One tegrastats line: every power rail (instant, average mW) and the GPU's and memory's load and clock."""

    rails: dict[str, tuple[float, float]] = field(default_factory=dict)
    gpu_load: float | None = None
    gpu_mhz: float | None = None
    emc_mhz: float | None = None

    def total(self) -> tuple[float, str] | None:
        """The board's power now (instant mW) and what it is: its input rail where it has one (VDD_IN on an Orin,
        Xavier NX or TX2, POM_5V_IN on a Nano), else the sum of every rail printed (an AGX Xavier or AGX Orin has no
        input monitor; the module's rails add up to its draw, as jetson-stats reports it)."""
        for name in INPUT_RAILS:
            if name in self.rails:
                return self.rails[name][0], name
        if not self.rails:
            return None
        return sum(now for now, _ in self.rails.values()), "sum of " + ", ".join(self.rails)


def parse_tegrastats(line: str) -> TegraSample:
    sample = TegraSample(rails={m.group(1): (float(m.group(2)), float(m.group(3))) for m in _RAIL.finditer(line)})
    gpu = re.search(rf"\bGR3D_FREQ {_LOAD_AT}", line)
    if gpu:
        sample.gpu_load = float(gpu.group(1))
        if gpu.group(2):
            sample.gpu_mhz = max(float(v) for v in gpu.group(2).split(","))
    emc = re.search(rf"\bEMC_FREQ {_LOAD_AT}", line)
    if emc and emc.group(2):
        sample.emc_mhz = float(emc.group(2).split(",")[0])
    return sample


def power_series(lines: list[tuple[float, str]]) -> tuple[list[tuple[float, float]], str | None, dict[str, float]]:
    """Timed tegrastats lines -> (time, board power in mW) samples, the rail(s) they come from, and the median GPU
    load, GPU clock and memory clock over the lines (the clocks a measurement ran at)."""
    samples, rail, gpu_mhz, emc_mhz, load = [], None, [], [], []
    for at, line in lines:
        parsed = parse_tegrastats(line)
        total = parsed.total()
        if total is not None:
            samples.append((at, total[0]))
            rail = total[1]
        gpu_mhz += [parsed.gpu_mhz] if parsed.gpu_mhz is not None else []
        emc_mhz += [parsed.emc_mhz] if parsed.emc_mhz is not None else []
        load += [parsed.gpu_load] if parsed.gpu_load is not None else []
    clocks = {k: statistics.median(v) for k, v in (("gpu_mhz", gpu_mhz), ("emc_mhz", emc_mhz), ("gpu_load", load)) if v}
    return samples, rail, clocks


def parse_nvpmodel(text: str) -> str | None:
    """``nvpmodel -q`` -> ``MAXN (0)``: the mode's name and id; None where it printed no mode."""
    mode = re.search(r"NV Power Mode: (\S+)(?:\s*\n\s*(\d+))?", text)
    if not mode:
        return None
    return mode.group(1) + (f" ({mode.group(2)})" if mode.group(2) else "")


def parse_jetson_clocks(text: str) -> dict[str, object]:
    """``jetson_clocks --show`` -> ``{"jetson_clocks": "on" | "off", "gpu_mhz", "gpu_max_mhz", "emc_mhz"}`` (the
    clocks now); empty where it printed none (it runs as root only: ``Error: Run this script ... as a root user``)."""
    clocks = [(name, int(lo), int(hi), int(now)) for name, online, lo, hi, now in re.findall(
        r"^\s*(cpu\d+|GPU|EMC):?(.*?)MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", text, re.M)
        if "Online=0" not in online]  # an offline core keeps its limits
    if not clocks:
        return {}
    pinned = [lo == hi for name, lo, hi, _ in clocks if name != "EMC"]  # EMC's pin is FreqOverride, not MinFreq
    out: dict[str, object] = {"jetson_clocks": "on" if pinned and all(pinned) else "off"}
    for name, _, hi, now in clocks:
        if name == "GPU":
            out |= {"gpu_mhz": now / 1e6, "gpu_max_mhz": hi / 1e6}
        elif name == "EMC":
            out["emc_mhz"] = now / 1e6
    return out
