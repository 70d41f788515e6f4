"""Speed levers: which fast paths one trial takes on its device.

Every lever is on by default where it helps (a GPU) and can be turned off in the spec (``trainer.*``); this is the
one place that decides. ``data.cache`` and ``data.device_cache`` are the data module's; packing is the driver's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Levers:
    """The fast paths one trial takes (resolved for its device)."""

    precision: str  # "32" | "bf16-mixed" | "16-mixed"
    channels_last: bool
    fused_optimizer: bool
    cuda_graphs: bool
    device_augment: bool
    native_depthwise: bool

    def as_metrics(self) -> dict[str, float]:
        return {"perf/bf16": float(self.precision == "bf16-mixed"), "perf/channels_last": float(self.channels_last),
                "perf/fused_optimizer": float(self.fused_optimizer),
                "perf/native_depthwise": float(self.native_depthwise)}


def resolve_levers(trainer, on_gpu: bool, bf16_supported: bool = True, graph_safe_loss: bool = True) -> Levers:
    """``trainer``: a TrainerSpec. On a CPU only the settings that help there stay on. A loss that cannot be
    captured (data-dependent shapes: focal, lovasz) keeps the step eager rather than failing a capture."""
    precision = trainer.precision
    if precision == "auto" or (precision == "16-mixed" and not on_gpu):
        precision = "bf16-mixed" if on_gpu and bf16_supported else "32"
    return Levers(
        precision=precision,
        channels_last=trainer.channels_last and on_gpu,
        fused_optimizer=trainer.fused_optimizer and on_gpu,
        # GradScaler's inf check reads the host every step: fp16 stays eager
        cuda_graphs=trainer.cuda_graphs and on_gpu and precision != "16-mixed" and graph_safe_loss,
        device_augment=trainer.device_augment,
        native_depthwise=trainer.native_depthwise and on_gpu,
    )


CPU_LEVERS = Levers(precision="32", channels_last=False, fused_optimizer=False, cuda_graphs=False, device_augment=True,
                    native_depthwise=False)
