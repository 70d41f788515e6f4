"""Loading a sweep: YAML -> flat dotted keys -> ``--set`` overrides -> ``${ENV}`` expansion -> validated ``Sweep``.

``--set`` applies first, so an override replaces a ``${VAR}`` whose variable need not be set. Variables come from
this process's environment, or from the mapping the caller passes: the service passes the submitting client's
values and never reads its own environment (``orchestrator.service.policy``).

Validation runs the schema once per value a domain can take, so a misspelt name inside a ``choice`` is caught before
anything starts, with the file and key path named. Names are checked here against the registries (``NAME_CHECKS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from models.catalog import ARCHITECTURES, OPTIMIZERS, SCHEDULES, check_arch_encoder, check_encoder, loss_parts
from models.errors import UnknownNameError
from orchestrator.budgets import BUDGETS
from orchestrator.data.adapters import DATASETS, Bdd100kDrivable
from orchestrator.data.prepare import adapter_for
from orchestrator.errors import KNOWN_ERRORS, SpecError, closest, unknown_name_message
from orchestrator.latency.bench import BACKENDS
from orchestrator.latency.targets import check_target, ssh_option
from orchestrator.spec.keys import (
    UNSET_HINT,
    Domain,
    expand_env,
    flatten,
    group_label,
    is_domain,
    load_yaml,
    parse_domain,
    parse_override,
    put,
    unflatten,
)
from orchestrator.spec.schema import SEARCHABLE_SECTIONS, TRIAL_SECTIONS, DataSpec, SweepSpec


def _name_in(kind: str, available) -> Any:
    def check(value: str) -> None:
        if value not in available:
            raise UnknownNameError(kind, value, available)
    return check


# what the schema's names are checked against (passed to it as validation context); each raises with the choices
NAME_CHECKS = {
    "dataset": _name_in("dataset", DATASETS),
    "encoding": _name_in("encoding", Bdd100kDrivable.ENCODINGS),
    "arch": _name_in("architecture", ARCHITECTURES),
    "encoder": check_encoder,
    "model": lambda arch_encoder: check_arch_encoder(*arch_encoder),
    "loss": loss_parts,
    "optimizer": _name_in("optimizer", OPTIMIZERS),
    "schedule": _name_in("schedule", SCHEDULES),
    "backend": _name_in("latency backend", BACKENDS),
    "budget": _name_in("budget metric", BUDGETS),
    "target": check_target,
    "ssh_option": ssh_option,
}
# the caller's check of the flat keys after --set and ${VAR}, before validation (the service's policy): raises SpecError
Screen = Callable[[dict[str, Any], str], None]


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
    return load_spec_text(text, overrides, source)


def load_spec_text(text: str, overrides: list[str] | tuple[str, ...] = (), source: str = "<spec>", *,
                   environ: Mapping[str, str] | None = None, hint: str = UNSET_HINT,
                   screen: Screen | None = None) -> Sweep:
    """``load_spec`` for a sweep file's text (what the service receives); ``source`` names it in errors; the rest as
    ``build_sweep``."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        kind = "YAML" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpecError(f"{source}:{line}: {kind}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a sweep file is a YAML mapping (name:, data:, model:, ...)")
    return build_sweep(raw, overrides, source, environ=environ, hint=hint, screen=screen)


def build_sweep(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "<spec>", *,
                environ: Mapping[str, str] | None = None, hint: str = UNSET_HINT,
                screen: Screen | None = None) -> Sweep:
    """Overrides, then ``${VAR}`` from ``environ`` (default: this process's; ``hint`` says what to do about an unset
    one), then ``screen`` (if given) and validation."""
    flat = flatten(raw)
    for text in overrides:
        flat = put(flat, *parse_override(text))  # a whole subtree (``--set model={arch: fpn}``) or one leaf
    where = source + (" (with --set)" if overrides else "")
    for key, value in list(flat.items()):
        try:
            expanded = expand_env(value, key, environ, hint)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        if expanded != value:
            flat = put(flat, key, expanded)

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
    if screen is not None:
        screen(flat, where)

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
    except KNOWN_ERRORS as e:
        raise SpecError(f"{where}: {e}") from None
    if spec.search.metric not in metrics:
        raise SpecError(f"{where}: search.metric: {unknown_name_message('metric', spec.search.metric, metrics)}")
    _check_objectives(spec, metrics, where)
    _check_constraints(spec, where)
    if spec.search.algorithm == "grid":
        continuous = [k for k, d in domains.items() if d.kind != "choice"]
        if continuous:
            raise SpecError(
                f"{where}: {continuous[0]}: grid search needs {{choice: [...]}} domains, got {domains[continuous[0]].kind}"
            )
    return Sweep(source=source, spec=spec, flat=flat, domains=domains)


def _check_objectives(spec: SweepSpec, metrics: list[str], where: str) -> None:
    objectives = spec.search.objectives
    if not objectives:
        return
    allowed = metrics + [budget.metric for budget in BUDGETS.values()]  # the model's figures, the proxy's
    for i, objective in enumerate(objectives):
        if objective.metric not in allowed:
            raise SpecError(f"{where}: search.objectives.{i}.metric: "
                            f"{unknown_name_message('metric', objective.metric, allowed)}")
    if len(objectives) > 1 and spec.search.algorithm != "optuna":
        raise SpecError(f"{where}: search.objectives: several objectives need search.algorithm: optuna")
    if any(o.metric in {b.metric for b in BUDGETS.values() if b.proxy} for o in objectives) and \
            spec.search.latency_proxy is None:
        raise SpecError(f"{where}: search.objectives: a latency or energy objective needs search.latency_proxy "
                        f"(e.g. {{backend: torch}}: measured in each trial before it trains)")


def _check_constraints(spec: SweepSpec, where: str) -> None:
    """Budgets the latency proxy measures need one; the names themselves were checked by the schema (``budget``)."""
    for i, constraint in enumerate(spec.search.constraints):
        if BUDGETS[constraint.metric].proxy and spec.search.latency_proxy is None:
            raise SpecError(f"{where}: search.constraints.{i}.metric: {constraint.metric} is measured by the latency "
                            f"proxy before each trial trains: add search.latency_proxy (e.g. {{backend: torch}})")


def reported_metrics(data: DataSpec) -> list[str]:
    """Every metric a trial of this dataset and task reports (the names ``search.metric`` may use)."""
    classes = adapter_for(data).task_classes(data.task)
    scalar = ["miou", "dice", "pixel_acc", "precision", "recall", "specificity", "loss"]
    return [f"val/{m}" for m in scalar] + [f"val/iou/{c}" for c in classes] + ["train/loss"]


def _validate(flat: dict[str, Any], where: str, domain_key: str | None = None) -> SweepSpec:
    try:
        tree = unflatten(flat)
    except ValueError as e:
        raise SpecError(f"{where}: {e}") from None
    try:
        return SweepSpec.model_validate(tree, context={"names": NAME_CHECKS})
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


def _is_union_tag(part: object) -> bool:
    """pydantic's location tag of a union member (``float``, ``bool``, ``literal['auto']``), not a field name."""
    return isinstance(part, str) and (part in ("bool", "int", "float", "str") or part.startswith("literal["))


def format_validation_error(error: ValidationError, domain_key: str | None = None) -> str:
    """First pydantic error as ``key.path: what is wrong (allowed / closest)``, plus a count of the rest."""
    errors = error.errors()
    first = errors[0]
    # a union (``bool | Literal["auto"]``) fails once per member, each located under its tag: one error of the field
    union = [e for e in errors if e["loc"][:-1] == first["loc"][:-1] and e.get("input") == first.get("input")]
    if len(union) > 1 and first["loc"] and all(_is_union_tag(e["loc"][-1]) for e in union):
        first = {**first, "loc": first["loc"][:-1], "type": "union",
                 "msg": "Input should be " + " or ".join(e["msg"].removeprefix("Input should be ").split(",")[0]
                                                         for e in union)}
        errors = [first, *[e for e in errors if e not in union]]
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
    return f"{path}: {msg}{more}" if path else f"{msg}{more}"  # a whole-spec check names its keys itself


def grid_size(sweep: Sweep) -> int:
    return math.prod(len(d.values) for d in sweep.domains.values())


def count_trials(sweep: Sweep, max_trials: int | None = None) -> int:
    """Trials the sweep will run: the grid's size for grid search, else ``search.num_samples`` (capped)."""
    if sweep.spec.search.algorithm == "grid":
        n = grid_size(sweep)
        if max_trials is not None and n > max_trials:
            raise SpecError(f"{sweep.source}: the grid has {n} combinations, more than --max-trials {max_trials}")
        return n
    n = sweep.spec.search.num_samples
    return min(n, max_trials) if max_trials else n


def describe_space(sweep: Sweep) -> list[str]:
    """Lines for ``--dry-run``: each searched key with its domain, inclusive bounds as written."""
    lines = []
    for key, d in sweep.domains.items():
        if d.grouped:
            lines.append(f"{key}: choice of {len(d.values)} groups: {' | '.join(map(group_label, d.values))}")
        elif d.kind == "choice":
            lines.append(f"{key}: choice {list(d.values)}")
        else:
            lines.append(f"{key}: {d.kind} [{d.values[0]}, {d.values[1]}] (inclusive)")
    return lines
