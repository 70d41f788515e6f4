"""What one trial is given: its validated sections (``TrialConfig``) and what the driver knows (``TrialContext``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.data.cache import PreparedData
from orchestrator.spec.keys import expand_groups, unflatten
from orchestrator.spec.schema import (
    TRIAL_SECTIONS,
    DataSpec,
    LossSpec,
    ModelSpec,
    OptimizerSpec,
    ScheduleSpec,
    TrainerSpec,
)

SECTIONS = {"data": DataSpec, "model": ModelSpec, "loss": LossSpec, "optimizer": OptimizerSpec,
            "schedule": ScheduleSpec, "trainer": TrainerSpec}


@dataclass(frozen=True)
class TrialConfig:
    """The validated sections of one sampled configuration."""

    data: DataSpec
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    trainer: TrainerSpec

    @classmethod
    def from_flat(cls, config: dict[str, Any], groups: dict[str, dict[str, dict[str, Any]]] | None = None) -> TrialConfig:
        config = expand_groups(config, groups or {})
        # a grouped choice's label (``model``) stands beside the keys it expands to; only those keys are read
        labels = {k for k in config if any(other.startswith(k + ".") for other in config)}
        tree = unflatten({k: v for k, v in config.items() if k.split(".")[0] in TRIAL_SECTIONS and k not in labels})
        return cls(**{name: model.model_validate(tree.get(name, {})) for name, model in SECTIONS.items()})


@dataclass(frozen=True)
class TrialContext:
    """What the driver knows that every trial of its sweep needs; attached to each worker of the pool, which may
    hold several sweeps' at once (keyed by ``run_dir``)."""

    run_dir: str
    sweep: str
    metric: str
    mode: str
    data: PreparedData
    latency_proxy: dict[str, Any] | None = None
    constraints: tuple[dict[str, Any], ...] = ()  # search.constraints: a trial over budget is never trained
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    decisions: tuple[int, ...] = ()  # the full network's epochs where the sweep's scheduler may stop a trial
    warm: tuple[dict[str, Any], ...] = ()  # flat configs of the study's architectures, stepped once per worker
    user: str = "local"  # whose sweep: a worker shares its slots fairly between users
    lease: Any = None  # on a pool that outlives sweeps: a Ray actor of the sweep's driver, gone when the driver is
