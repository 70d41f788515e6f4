"""The sweep file: YAML -> ``${ENV}`` expansion -> ``--set`` overrides -> flat dotted keys -> validated ``Sweep``.

A sweep file is nested YAML whose leaves map to dotted keys (``model.arch``). Any leaf under the trial sections
may instead be a search domain (``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}``; bounds inclusive). Validation runs the pydantic schema once per value a domain can take,
so a misspelt name inside a ``choice`` is caught before anything starts, with the file and key path named.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from orchestrator.errors import SegsweepError, SpecError, UnknownNameError, closest, unknown_name_message

DOMAIN_KINDS = ("choice", "uniform", "loguniform", "int")
# Sections whose leaves become the trial's config (and so may be searched over).
TRIAL_SECTIONS = ("data", "model", "loss", "optimizer", "schedule", "trainer")
SEARCHABLE_SECTIONS = ("model", "loss", "optimizer", "schedule", "trainer", "data.augment")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(kind: str, value: str | None, available: list[str]) -> str | None:
    if value is not None and value not in available:
        raise UnknownNameError(kind, value, available)
    return value


# ---------------------------------------------------------------------------------------------------- schema
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
    dataset: str
    root: str
    task: Literal["multiclass", "binary"] = "multiclass"
    size: tuple[int, int] = Field(description="training size [height, width], each divisible by 32")
    resize: Literal["pad", "resize"] = "pad"
    val_split: str = "val"
    val_fraction: float | None = Field(None, gt=0, lt=1)
    limit_images: int | None = Field(None, ge=2)
    encoding: str = Field("current", description="bdd100k_drivable label order: current | legacy_2018")
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

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        from orchestrator.data import DATASETS

        return _check_name("dataset", v, list(DATASETS))

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        from orchestrator.data.adapters import Bdd100kDrivable

        return _check_name("encoding", v, list(Bdd100kDrivable.ENCODINGS))

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


class ModelSpec(Strict):
    arch: str
    encoder: str | None = "mobilenet_v2"
    encoder_weights: str | None = None
    batchnorm: Literal["running", "batch"] = "running"
    stage1_epochs: int = Field(0, ge=0, description="ENet two-stage training: epochs of encoder-only training "
                               "against labels downsampled x8, before the full network trains")

    @model_validator(mode="after")
    def _combination(self) -> ModelSpec:
        from models.registry import check_arch_encoder

        try:
            check_arch_encoder(self.arch, self.encoder)
        except SegsweepError as e:
            raise ValueError(str(e)) from None
        if self.stage1_epochs and self.arch != "enet":
            raise ValueError(f"stage1_epochs is ENet's two-stage training; {self.arch} has no encoder-only stage")
        return self

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from models.registry import ARCHITECTURES

        return _check_name("architecture", v, list(ARCHITECTURES))

    @field_validator("encoder")
    @classmethod
    def _encoder(cls, v: str | None) -> str | None:
        from models.registry import check_encoder

        return check_encoder(v)

    @field_validator("encoder_weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        if v is None or v in ("imagenet", "ssl", "swsl", "advprop", "noisy-student") or v.startswith("tu:"):
            return v
        if not Path(v).is_file():
            raise ValueError(f"'{v}' is neither a weights name (imagenet, ...) nor an existing weights file")
        return v


class LossSpec(Strict):
    name: str
    weights: tuple[float, float] = (1.0, 1.0)
    alpha: float = Field(0.5, ge=0)
    beta: float = Field(0.5, ge=0)
    gamma: float | None = Field(None, ge=0, description="focal gamma (default 2) or Tversky gamma (default 1)")
    smooth: float = Field(0.0, ge=0)
    enet_c: float = Field(1.02, gt=1.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from models.losses import LOSSES

        for part in v.split("+"):
            _check_name("loss", part.strip(), list(LOSSES))
        if v.count("+") > 1:
            raise ValueError(f"'{v}' combines more than two losses; write 'a+b' with loss.weights: [wa, wb]")
        return v


class OptimizerSpec(Strict):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from models.optim import OPTIMIZERS

        return _check_name("optimizer", v, list(OPTIMIZERS))


class ScheduleSpec(Strict):
    name: str = "constant"
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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from models.optim import SCHEDULES

        return _check_name("schedule", v, list(SCHEDULES))


class TrainerSpec(Strict):
    max_epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
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

    backend: str = "torch"
    target: str | None = Field(None, description="ssh://user@host for onnxruntime/trtexec backends; None: the trial's machine")
    warmup: int = Field(3, ge=0)
    iters: int = Field(20, ge=1)
    fp16: bool = False
    ssh_options: tuple[str, ...] = ()
    remote_python: str = "python3"

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from orchestrator.latency.bench import BACKENDS

        return _check_name("latency backend", v, list(BACKENDS))


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


class ExportSpec(Strict):
    """After training: export chosen trials to ONNX and measure them on each backend and target."""

    backends: tuple[str, ...] = ("ort-cpu",)
    targets: tuple[str, ...] = ("local",)
    size: tuple[int, int] | None = Field(None, description="input HxW (default: data.size)")
    trials: Literal["all", "top_k"] = "top_k"
    top_k: int = Field(3, ge=1)
    warmup: int = Field(10, ge=0)
    iters: int = Field(100, ge=1)
    fp16: bool = False
    threads: int | None = Field(None, ge=1, description="CPU threads (onnxruntime intra-op, torch on a CPU)")
    opset: int = Field(17, ge=11)
    ssh_options: tuple[str, ...] = ()
    remote_python: str = "python3"

    @field_validator("backends")
    @classmethod
    def _backends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from orchestrator.latency.bench import BACKENDS

        for name in v:
            _check_name("latency backend", name, list(BACKENDS))
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for target in v:
            if target != "local" and not target.startswith("ssh://"):
                raise ValueError(f"'{target}' is neither 'local' nor ssh://user@host[:port]")
        return v


class ResourcesSpec(Strict):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float | Literal["auto"] = Field(
        "auto", description="auto: 1/trials_per_gpu where the cluster has GPUs, else 0")
    trials_per_gpu: int = Field(4, ge=1, description="packing for gpus_per_trial: auto")
    max_concurrent: int = Field(0, ge=0, description="0: as many as the resources allow")
    memory_aware: bool = Field(True, description="measure a trial's peak GPU memory before packing it and give it a "
                                                 "larger share (alone on a GPU if need be) when it would not fit")
    trial_gpu_memory_gb: float | None = Field(None, gt=0, description="a trial's peak GPU memory; None: measured")
    gpu_memory_gb: float | None = Field(None, gt=0, description="one GPU's memory; None: read from the GPU")
    reuse_actors: bool = Field(True, description="keep trial processes (and their imports) for the next trial")
    preload_workers: bool = Field(True, description="Ray's worker processes import torch, Lightning and the models "
                                                    "as they start, before a trial is handed to them")

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


# ---------------------------------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class Domain:
    """A search domain from the YAML; ``values`` are the choices or the inclusive bounds."""

    kind: str
    values: tuple[Any, ...]

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}

    @property
    def grouped(self) -> bool:
        """A choice between whole mappings (``model: {choice: [{arch: fcn, encoder: resnet50}, ...]}``): the keys of
        each option go together, so linked values (an architecture and its encoder) are searched as one."""
        return self.kind == "choice" and all(isinstance(v, dict) for v in self.values)

    def options(self, key: str) -> dict[str, dict[str, Any]]:
        """Grouped choice: option label (``arch=fcn,encoder=resnet50``) -> its dotted keys under ``key``."""
        return {group_label(v): flatten(v, key + ".") for v in self.values}


def group_label(option: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in flatten(option).items())


def expand_groups(config: dict[str, Any], groups: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """A sampled flat config with each grouped choice's label expanded into its dotted keys (label kept)."""
    out = dict(config)
    for key, options in groups.items():
        if key in config:
            out.update(options[config[key]])
    return out


def is_domain(value: Any) -> bool:
    return isinstance(value, dict) and len(value) >= 1 and any(k in DOMAIN_KINDS for k in value)


def parse_domain(key: str, value: dict[str, Any]) -> Domain:
    """Turn ``{choice: [...]}`` etc. into a Domain, or raise ValueError saying what is wrong."""
    if len(value) != 1:
        raise ValueError(f"a search domain has exactly one of {', '.join(DOMAIN_KINDS)}; got keys {sorted(value)}")
    (kind, values), = value.items()
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind} needs a non-empty list, got {values!r}")
    if kind == "choice":
        return Domain(kind, tuple(values))
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{kind} needs two numbers [lo, hi], got {values!r}")
    lo, hi = values
    if kind == "int" and not (isinstance(lo, int) and isinstance(hi, int)):
        raise ValueError(f"int needs two integers [lo, hi], got {values!r}")
    if lo > hi or (kind != "int" and lo == hi):
        raise ValueError(f"{kind} bounds must satisfy lo < hi, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"loguniform bounds must be > 0, got [{lo}, {hi}]")
    return Domain(kind, (lo, hi))


# ---------------------------------------------------------------------------------------------------- flat keys
def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys. Search domains and lists are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not is_domain(value):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{dotted}: '{part}' is a value, not a section")
        node[leaf] = value
    return tree


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; an unset VAR without default is an error."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise SpecError(f"{where}: environment variable {name} is not set (export it or write ${{{name}:-default}})")

    expanded = _ENV.sub(sub, value)
    if expanded != value and _ENV.fullmatch(value):
        return yaml.safe_load(expanded) if expanded else expanded  # "${EPOCHS:-3}" stays a number
    return expanded


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as YAML (numbers, lists, ``{choice: [..]}``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {text}: expected key=value, e.g. --set optimizer.lr=0.001")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise SpecError(f"--set {text}: value is not valid YAML ({str(e).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Sweep:
    """A validated sweep: ``spec`` holds every fixed value (domains at their first value); ``domains`` the searched keys."""

    source: str
    spec: SweepSpec
    flat: dict[str, Any]
    domains: dict[str, Domain] = field(default_factory=dict)

    def trial_flat(self) -> dict[str, Any]:
        """Every trial-section key with its fixed value or its Domain: the Tune param space before conversion.
        A grouped choice stands as one key (its labels); the keys its options set are left to it."""
        full = flatten(self.spec.model_dump(mode="json"))
        grouped = {k for k, d in self.domains.items() if d.grouped}
        covered = {sub for k in grouped for option in self.groups[k].values() for sub in option}
        out = {k: self.domains.get(k, v) for k, v in full.items()
               if k.split(".")[0] in TRIAL_SECTIONS and k not in covered}
        return out | {k: self.domains[k] for k in grouped}

    def fixed_config(self) -> dict[str, Any]:
        """One trial's flat config with every searched key at its first value (benchmarks)."""
        full = flatten(self.spec.model_dump(mode="json"))
        return {k: v for k, v in full.items() if k.split(".")[0] in TRIAL_SECTIONS}

    @property
    def groups(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Grouped choices: key -> {option label -> dotted keys}; see ``expand_groups``."""
        return {k: d.options(k) for k, d in self.domains.items() if d.grouped}

    def resolved_yaml(self) -> str:
        """The spec as run (after ``--set`` and ``${ENV}``), domains kept as written."""
        tree = unflatten({k: (v.to_yaml() if isinstance(v, Domain) else v) for k, v in self.flat.items()})
        return yaml.safe_dump(tree, sort_keys=False)


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read, expand, override and validate a sweep file. Raises SpecError with a one-line message."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SpecError(f"{source}: cannot read sweep file ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{source}:{line}: YAML syntax error: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a sweep file is a YAML mapping (name:, data:, model:, ...)")
    return build_sweep(raw, overrides, source)


def build_sweep(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "<spec>") -> Sweep:
    try:
        flat = flatten(expand_env(raw))
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None
    for text in overrides:
        key, value = parse_override(text)
        # an override replaces a whole subtree (``--set model={arch: fpn}``) or one leaf
        flat = {k: v for k, v in flat.items() if not k.startswith(key + ".")}
        flat.update(flatten({key: value}) if isinstance(value, dict) and not is_domain(value) else {key: value})
    where = source + (" (with --set)" if overrides else "")

    domains: dict[str, Domain] = {}
    for key, value in flat.items():
        if not is_domain(value):
            continue
        if not any(key == s or key.startswith(s + ".") for s in SEARCHABLE_SECTIONS):
            raise SpecError(
                f"{where}: {key}: search domains are allowed only under {', '.join(SEARCHABLE_SECTIONS)}"
            )
        try:
            domains[key] = parse_domain(key, value)
        except ValueError as e:
            raise SpecError(f"{where}: {key}: {e}") from None

    def with_value(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
        if not domains[key].grouped:
            return {**values, key: value}
        # a grouped option's keys join the fixed keys beside it (which act as defaults for every option)
        return {**{k: v for k, v in values.items() if k != key}, **flatten(value, key + ".")}

    base = {k: v for k, v in flat.items() if k not in domains}
    for key, domain in domains.items():
        base = with_value(base, key, domain.values[0])
    spec = _validate(base, where)
    for key, domain in domains.items():
        for value in domain.values:  # every choice, or both bounds
            _validate(with_value(base, key, value), where, key)
    try:
        metrics = reported_metrics(spec.data)
    except SegsweepError as e:
        raise SpecError(f"{where}: {e}") from None
    if spec.search.metric not in metrics:
        raise SpecError(f"{where}: search.metric: {unknown_name_message('metric', spec.search.metric, metrics)}")
    _check_objectives(spec, metrics, where)
    if spec.search.algorithm == "grid":
        continuous = [k for k, d in domains.items() if d.kind != "choice"]
        if continuous:
            raise SpecError(
                f"{where}: {continuous[0]}: grid search needs {{choice: [...]}} domains, got {domains[continuous[0]].kind}"
            )
    return Sweep(source=source, spec=spec, flat=flat, domains=domains)


LATENCY_METRICS = ["latency/mean_ms", "latency/p50_ms", "latency/p90_ms", "latency/p99_ms"]


def _check_objectives(spec: SweepSpec, metrics: list[str], where: str) -> None:
    objectives = spec.search.objectives
    if not objectives:
        return
    allowed = metrics + LATENCY_METRICS + ["model/gmacs", "model/params", "model/size_mb"]
    for i, objective in enumerate(objectives):
        if objective.metric not in allowed:
            raise SpecError(f"{where}: search.objectives.{i}.metric: "
                            f"{unknown_name_message('metric', objective.metric, allowed)}")
    if len(objectives) > 1 and spec.search.algorithm != "optuna":
        raise SpecError(f"{where}: search.objectives: several objectives need search.algorithm: optuna")
    if any(o.metric.startswith("latency/") for o in objectives) and spec.search.latency_proxy is None:
        raise SpecError(f"{where}: search.objectives: a latency objective needs search.latency_proxy "
                        f"(e.g. {{backend: torch}}: measured in each trial before it trains)")


def reported_metrics(data: DataSpec) -> list[str]:
    """Every metric a trial of this dataset and task reports (the names ``search.metric`` may use)."""
    from orchestrator.data import adapter_for

    classes = adapter_for(data).task_classes(data.task)
    scalar = ["miou", "dice", "pixel_acc", "precision", "recall", "specificity", "loss"]
    return [f"val/{m}" for m in scalar] + [f"val/iou/{c}" for c in classes] + ["train/loss"]


def _validate(flat: dict[str, Any], where: str, domain_key: str | None = None) -> SweepSpec:
    try:
        tree = unflatten(flat)
    except ValueError as e:
        raise SpecError(f"{where}: {e}") from None
    try:
        return SweepSpec.model_validate(tree)
    except ValidationError as e:
        raise SpecError(f"{where}: {format_validation_error(e, domain_key)}") from None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SweepSpec
    for part in loc:
        info = model.model_fields.get(str(part))
        annotation = getattr(info, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_validation_error(error: ValidationError, domain_key: str | None = None) -> str:
    """First pydantic error as ``key.path: what is wrong (allowed / closest)``, plus a count of the rest."""
    errors = error.errors()
    first = errors[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, int) or first["type"] != "extra_forbidden")
    path = ".".join(str(p) for p in loc)
    kind, value = first["type"], first.get("input")
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = closest(loc[-1], allowed)
        msg = f"unknown key '{loc[-1]}' ({f'did you mean {hint!r}? ' if hint else ''}allowed: {', '.join(allowed)})"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "value_error":
        msg = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
    else:
        msg = f"{first['msg'].rstrip('.')}, got {value!r}"
    if domain_key and path == domain_key:
        msg += " (in its search domain)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {msg}{more}"
