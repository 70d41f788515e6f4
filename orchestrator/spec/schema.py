"""The sweep file's schema: pydantic models, ``extra="forbid"``, every leaf typed and bounded.

Structure only: names that must be in a registry (``model.arch``, ``loss.name``, ``data.dataset`` ...) are checked
against the registries that ``orchestrator.spec.load`` passes as validation context, so this module imports no
registry. A trial re-validating its sampled sections passes none: its names were checked when the sweep was loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Sections whose leaves become the trial's config (and so may be searched over).
TRIAL_SECTIONS = ("data", "model", "loss", "optimizer", "schedule", "trainer")
SEARCHABLE_SECTIONS = ("model", "loss", "optimizer", "schedule", "trainer", "data.augment")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def checked(info: ValidationInfo, kind: str, value: Any) -> Any:
    """``value`` after the loader's name check for ``kind`` (``info.context["names"][kind]``), if it gave one."""
    names = (info.context or {}).get("names")
    if names is not None and value is not None:
        names[kind](value)
    return value


def named(kind: str) -> AfterValidator:
    """A field holding a registry name of ``kind`` (``Annotated[str, named("loss")]``), checked by ``checked``."""
    return AfterValidator(lambda value, info: checked(info, kind, value))


def each_named(kind: str) -> AfterValidator:
    """``named`` for every item of a tuple field."""
    return AfterValidator(lambda values, info: tuple(checked(info, kind, v) for v in values))


_FOLDER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _split_name(value: str) -> str:
    """A split names one folder of the dataset (``leftImg8bit/<split>``): never a path that leaves it."""
    if not _FOLDER_NAME.match(value):
        raise ValueError(f"{value!r}: a split is a folder name (letters, digits, _ . -), e.g. val or test")
    return value


SplitName = Annotated[str, AfterValidator(_split_name)]


class SyntheticSpec(Strict):
    """Procedurally generated road scenes in the IDD-lite layout (``data.dataset: synthetic``)."""

    train: int = Field(24, ge=2)
    val: int = Field(8, ge=1)
    height: int = Field(114, ge=16)
    width: int = Field(160, ge=16)
    seed: int = 0


class AugmentSpec(Strict):
    """Training-time augmentation, applied on the device to image and mask alike (nearest for masks)."""

    hflip: bool = True
    scale: tuple[float, float] | None = Field(None, description="random scale range, then crop/pad back to size")
    jitter: float = Field(0.0, ge=0, le=1, description="colour jitter strength (brightness, contrast, saturation)")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError(f"{list(v)} must be [lo, hi] with 0 < lo <= hi, e.g. [0.75, 1.25]")
        return v


class ClassEntry(Strict):
    """One class of a ``folder`` dataset: its mask index value or its RGB colour."""

    name: str
    value: int | None = Field(None, ge=0, le=254)
    color: tuple[int, int, int] | None = None


class DataSpec(Strict):
    dataset: Annotated[str, named("dataset")]
    root: str
    task: Literal["multiclass", "binary"] = "multiclass"
    size: tuple[int, int] = Field(description="training size [height, width], each divisible by 32")
    resize: Literal["pad", "resize"] = "pad"
    val_split: SplitName = "val"
    val_fraction: float | None = Field(None, gt=0, lt=1)
    limit_images: int | None = Field(None, ge=2)
    encoding: Annotated[str, named("encoding")] = Field("current", description="bdd100k_drivable label order: "
                                                                                "current | legacy_2018")
    class_map: tuple[ClassEntry, ...] | None = Field(None, description="folder dataset: classes by value or colour")
    synthetic: SyntheticSpec = SyntheticSpec()
    augment: AugmentSpec = AugmentSpec()
    cache: bool = Field(True, description="decode once per sweep into a shared uint8 cache; false: every trial "
                                          "decodes the files in DataLoader workers, every epoch")
    workers: int = Field(4, ge=0, description="DataLoader workers per trial when cache is false")
    device_cache: bool | Literal["auto"] = Field(
        "auto", description="keep the uint8 cache on the trial's GPU (batches gathered there, no host work); "
                            "auto: when train + val take at most device_cache_max_gb")
    device_cache_max_gb: float = Field(2.0, gt=0)

    def on_device(self, cache_bytes: int) -> bool:
        """Whether a GPU trial keeps the decoded splits (``cache_bytes`` in all) on its GPU."""
        if not self.cache or self.device_cache is False:
            return False
        return self.device_cache is True or cache_bytes <= self.device_cache_max_gb * 2**30

    @field_validator("root")
    @classmethod
    def _root(cls, v: str, info: ValidationInfo) -> str:
        # synthetic data is generated into its root; every other dataset must already be there
        if info.data.get("dataset") != "synthetic" and not Path(v).is_dir():
            raise ValueError(f"{v} does not exist (set data.root, or the environment variable it reads)")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        bad = [n for n in v if n <= 0 or n % 32]
        if bad:
            raise ValueError(f"{list(v)} must be two positive multiples of 32 (e.g. [256, 320] or [224, 320])")
        return v


WEIGHT_NAMES = ("imagenet", "ssl", "swsl", "advprop", "noisy-student")  # smp's; anything else is a weights file


class ModelSpec(Strict):
    arch: Annotated[str, named("arch")]
    encoder: Annotated[str | None, named("encoder")] = "mobilenet_v2"
    encoder_weights: str | None = None
    batchnorm: Literal["running", "batch"] = "running"
    stage1_epochs: int = Field(0, ge=0, description="ENet two-stage training: epochs of encoder-only training "
                               "against labels downsampled x8, before the full network trains")

    @model_validator(mode="after")
    def _combination(self, info: ValidationInfo) -> ModelSpec:
        checked(info, "model", (self.arch, self.encoder))
        if self.stage1_epochs and self.arch != "enet":
            raise ValueError(f"stage1_epochs is ENet's two-stage training; {self.arch} has no encoder-only stage")
        return self

    @field_validator("encoder_weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        if v is None or v in WEIGHT_NAMES or v.startswith("tu:"):
            return v
        if not Path(v).is_file():
            raise ValueError(f"'{v}' is neither a weights name (imagenet, ...) nor an existing weights file")
        return v


class LossSpec(Strict):
    name: Annotated[str, named("loss")]
    weights: tuple[float, float] = (1.0, 1.0)
    alpha: float = Field(0.5, ge=0)
    beta: float = Field(0.5, ge=0)
    gamma: float | None = Field(None, ge=0, description="focal gamma (default 2) or Tversky gamma (default 1)")
    smooth: float = Field(0.0, ge=0)
    enet_c: float = Field(1.02, gt=1.0)


class OptimizerSpec(Strict):
    name: Annotated[str, named("optimizer")] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleSpec(Strict):
    name: Annotated[str, named("schedule")] = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_start_factor: float = Field(0.1, gt=0, le=1)
    pct_start: float = Field(0.3, gt=0, lt=1)
    div_factor: float = Field(25.0, gt=0)
    final_div_factor: float = Field(1e4, gt=0)
    min_lr_factor: float = Field(0.0, ge=0, le=1)
    power: float = Field(0.9, gt=0)
    step_epochs: int = Field(10, ge=1)
    step_gamma: float = Field(0.1, gt=0)
    restart_epochs: int = Field(5, ge=1)
    restart_mult: int = Field(1, ge=1)


class TrainerSpec(Strict):
    max_epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    val_batch_size: int = Field(64, ge=1, description="validation's batches (forward only: larger is faster; the "
                                "metrics come from a confusion matrix over the whole split either way)")
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that has bf16, else 32 (also for 16-mixed without a GPU)")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # speed levers: each is on by default where it helps (a GPU) and can be turned off here
    channels_last: bool = Field(True, description="NHWC model and input on a GPU")
    fused_optimizer: bool = Field(True, description="fused Adam/AdamW/SGD kernels on a GPU")
    cuda_graphs: bool = Field(True, description="capture the whole training step (static shapes) on a GPU; "
                                                "falls back to eager where capture is not possible")
    device_augment: bool = Field(True, description="conversion and augmentation on the device after transfer; "
                                                   "false: on the host before transfer")
    # opt-in: measured on an H100, a new process's first step 1 s instead of 10-17 s, but 0.66x the steady images/s
    native_depthwise: bool = Field(False, description="depthwise convolutions through PyTorch's CUDA kernels, not "
                                                      "cuDNN's, which compiles them at run time once per process: "
                                                      "faster start, slower epochs (for short trials in new processes)")
    seed: int = 0
    checkpoint_every_s: float = Field(30.0, ge=0, description="a running trial's resumable checkpoint at most this "
                                      "often (0: every epoch); resume continues a trial from its last one")
    limit_train_batches: int | None = Field(None, ge=1)
    log_images: int = Field(4, ge=0, description="validation images with masks sent to W&B at the end")
    best_worst: int = Field(3, ge=0, description="best and worst validation images (per-image mIoU) saved as panels")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class SchedulerSpec(Strict):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class ObjectiveSpec(Strict):
    metric: str
    mode: Literal["max", "min"]


class LatencyProxySpec(Strict):
    """Latency measured inside every trial before it trains (it does not depend on the weights), reported as
    ``latency/p50_ms`` etc. in every result: what a multi-objective search reads."""

    backend: Annotated[str, named("backend")] = "torch"
    target: Annotated[str | None, named("target")] = Field(
        None, description="for onnxruntime/trtexec backends: a registered target's name or ssh://user@host; None: the "
                          "trial's machine")
    warmup: int = Field(3, ge=0)
    iters: int = Field(20, ge=1)
    fp16: bool = False
    ssh_options: Annotated[tuple[str, ...], each_named("ssh_option")] = ()
    remote_python: str = "python3"


class ConstraintSpec(Strict):
    """A hard budget of the search (``orchestrator.budgets``): a figure known before a trial trains, and its bound. A
    trial over it is recorded ``infeasible`` with its figures and never trained; Optuna learns the feasible region."""

    metric: Annotated[str, named("budget")]
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ConstraintSpec:
        if self.max is None and self.min is None:
            raise ValueError(f"{self.metric}: a budget needs max (or min), e.g. {{metric: {self.metric}, max: 8.0}}")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"{self.metric}: min {self.min:g} is above max {self.max:g}")
        return self


class SearchSpec(Strict):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: int = Field(8, ge=1)
    metric: str = "val/miou"
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerSpec = SchedulerSpec()
    seed: int = 0
    max_failures: int = Field(0, ge=0, description="retries of a failed trial from its last checkpoint")
    objectives: tuple[ObjectiveSpec, ...] = Field((), description="several: Optuna searches multi-objectively; "
                                                  "ASHA still stops on search.metric")
    latency_proxy: LatencyProxySpec | None = None
    constraints: tuple[ConstraintSpec, ...] = Field((), description="hard budgets (params_m, gmacs, size_mb, "
                                                    "latency/*, energy/mj_per_image, power/mean_w): a trial over one "
                                                    "is infeasible, never trained")


class EvaluateSpec(Strict):
    """After training: the top-k trials, each at its best-validation weights, on a labelled held-out split."""

    split: SplitName = Field("test", description="a labelled split of the dataset (CamVid test, Cityscapes val, ...)")
    top_k: int = Field(3, ge=1)
    tta: Literal["none", "hflip"] = Field("none", description="hflip: logits averaged with the flipped image's")


class CheckSpec(Strict):
    """At the end of every sweep: the top-k trials' saved best weights scored on the validation split again, which
    must reproduce each one's recorded best (``orchestrator.study.selfcheck``)."""

    top_k: int = Field(3, ge=0, description="trials to re-score (also every trial `evaluate:` evaluates); 0: none")


class ExportSpec(Strict):
    """After training: export chosen trials to ONNX and measure them on each backend and target."""

    backends: Annotated[tuple[str, ...], each_named("backend")] = ("ort-cpu",)
    targets: Annotated[tuple[str, ...], each_named("target")] = Field(
        ("local",), description="local, a registered target's name, or ssh://[user@]host[:port]")
    size: tuple[int, int] | None = Field(None, description="input HxW (default: data.size)")
    trials: Literal["all", "top_k"] = "top_k"
    top_k: int = Field(3, ge=1)
    warmup: int = Field(10, ge=0)
    iters: int = Field(100, ge=1)
    fp16: bool = False
    threads: int | None = Field(None, ge=1, description="CPU threads (onnxruntime intra-op, torch on a CPU)")
    opset: int = Field(17, ge=11)
    ssh_options: Annotated[tuple[str, ...], each_named("ssh_option")] = ()
    remote_python: str = "python3"


class ResourcesSpec(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float | Literal["auto"] = Field(
        "auto", description="auto: trials_per_gpu trials share each GPU where the cluster has GPUs; a fraction f: "
                            "1/f share one; 0: train on CPUs")
    trials_per_gpu: int | Literal["auto"] = Field(
        "auto", description="trials one GPU trains at once, for gpus_per_trial: auto; auto: 8 under CUDA MPS, else 4")
    workers_per_gpu: int | Literal["auto"] = Field(
        "auto", description="worker processes sharing one GPU, its trials split between them: each trial's host work "
                            "(its Lightning loop, augmentation, validation) runs beside fewer others under one "
                            "interpreter lock; auto: 4 under CUDA MPS, else 2")
    mps: bool | Literal["auto"] = Field(
        "auto", description="CUDA MPS for the trial workers, a daemon of the sweep's own (orchestrator.mps): the "
                            "kernels of a GPU's worker processes then run side by side; auto: where the sweep starts "
                            "its own Ray on a machine with nvidia-cuda-mps-control")
    max_concurrent: int = Field(0, ge=0, description="0: as many as the workers' slots allow")
    memory_aware: bool = Field(True, description="a worker starts another trial only where its GPU has room for "
                                                 "the largest trial seen, and restarts one that ran out of memory "
                                                 "beside others once fewer run")
    trial_gpu_memory_gb: float | None = Field(None, gt=0, description="a trial's peak GPU memory, with gpu_memory_gb: "
                                              "fewer trials per GPU from the start where they would not fit")
    gpu_memory_gb: float | None = Field(None, gt=0, description="one GPU's memory, with trial_gpu_memory_gb")
    reuse_actors: bool = Field(True, description="Tune reuses a finished trial's proxy process for the next trial")
    preload_workers: bool = Field(True, description="each worker steps the study's architectures once per slot "
                                                    "before the first trial (cuDNN compiles and plans them while "
                                                    "Tune starts)")
    proxy_resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources each trial's "
                                              "proxy asks for beside its 0.01 CPU: on a cluster, the nodes where "
                                              "proxies run (those that have the resource)")

    @field_validator("proxy_resources")
    @classmethod
    def _proxy_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory") or name.startswith("node:"):
                raise ValueError(f"{name}: give a custom resource of your nodes here, not a built-in one")
            if amount <= 0:
                raise ValueError(f"{name}: {amount:g}, must be > 0")
        return v

    @field_validator("trials_per_gpu", "workers_per_gpu")
    @classmethod
    def _per_gpu(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"{v}: must be >= 1 (or auto)")
        return v

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float | str) -> float | str:
        if v == "auto":
            return v
        if v < 0:
            raise ValueError(f"{v}: must be >= 0 (or auto)")
        if v > 1 and v != int(v):
            raise ValueError(f"{v}: more than one GPU per trial must be a whole number")
        return v


class WandbSpec(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "segsweep"
    entity: str | None = None
    tags: tuple[str, ...] = ()


class TrackingSpec(Strict):
    wandb: WandbSpec = WandbSpec()


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    data: DataSpec
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    trainer: TrainerSpec = TrainerSpec()
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    export: ExportSpec | None = None
    evaluate: EvaluateSpec | None = None
    check: CheckSpec = CheckSpec()

    @model_validator(mode="after")
    def _stages(self) -> SweepSpec:
        if self.model.stage1_epochs >= self.trainer.max_epochs:
            raise ValueError(f"model.stage1_epochs: {self.model.stage1_epochs} leaves no epoch of the full network "
                             f"(trainer.max_epochs {self.trainer.max_epochs}); the trial's figures come from the full "
                             f"network's epochs, so set it below trainer.max_epochs")
        return self

