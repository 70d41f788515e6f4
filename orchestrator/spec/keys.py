"""Flat dotted keys and search domains: nested YAML <-> ``model.arch``-style keys, ``--set`` overrides, ``${ENV}``
expansion, and the domains (``{choice: [...]}``, ``{uniform: [lo, hi]}`` ...) a leaf may be instead of a value."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.errors import SpecError

DOMAIN_KINDS = ("choice", "uniform", "loguniform", "int")


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


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys. Search domains and lists are leaves. Keys beside a choice between mappings
    (``model: {choice: [{arch: fcn, ...}, ...], batchnorm: batch}``, as ``--set model.batchnorm=batch`` leaves it and
    a resolved spec writes it) are keys of their own, set for every option."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and not is_domain(value):
            flat.update(flatten(value, dotted + "."))
        elif grouped_with_keys(value):
            flat[dotted] = {"choice": value["choice"]}
            flat.update(flatten({k: v for k, v in value.items() if k != "choice"}, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def grouped_with_keys(value: Any) -> bool:
    """A choice between mappings with other keys beside it (no other domain kind among them)."""
    return (isinstance(value, dict) and len(value) > 1 and isinstance(value.get("choice"), list)
            and bool(value["choice"]) and all(isinstance(o, dict) for o in value["choice"])
            and not any(k in DOMAIN_KINDS for k in value if k != "choice"))


def put(flat: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``flat`` with ``key`` set (``--set``): a mapping replaces the whole subtree under ``key``, a value one leaf (in
    its place)."""
    subtree = isinstance(value, dict) and bool(value) and not is_domain(value)
    out = {k: v for k, v in flat.items() if not k.startswith(key + ".") and not (subtree and k == key)}
    out.update(flatten({key: value}) if subtree else {key: value})
    return out


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


ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
UNSET_HINT = "export it or write ${%s:-default}"


def expand_env(value: Any, where: str = "", environ: Mapping[str, str] | None = None,
               hint: str = UNSET_HINT) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string from ``environ`` (default: this process's
    environment); an unset VAR without default is an error, ``hint`` (with the name for ``%s``) says what to do."""
    environ = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k), environ, hint) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, where, environ, hint) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise SpecError(f"{where}: environment variable {name} is not set ({hint.replace('%s', name)})")

    expanded = ENV_REFERENCE.sub(sub, value)
    if expanded != value and ENV_REFERENCE.fullmatch(value):
        return load_yaml(expanded) if expanded else expanded  # "${EPOCHS:-3}" stays a number
    return expanded


class SpecLoader(yaml.SafeLoader):
    """YAML as a sweep file needs it, and nothing more: mappings, lists, strings, numbers, booleans and null. A tag
    that builds another type (``!!binary`` bytes, which slipped past every check of strings; ``!!set``, ...) and an
    anchor's alias (a few hundred bytes of aliases expand to gigabytes) are refused; a date stays a string."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "anchors and aliases (*name) are not accepted in a "
                                                    "sweep file: write the value out", event.start_mark)
        return super().compose_node(parent, index)


_PLAIN = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
          "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")
SpecLoader.yaml_constructors = {tag: c for tag, c in yaml.SafeLoader.yaml_constructors.items() if tag in _PLAIN}
SpecLoader.yaml_constructors["tag:yaml.org,2002:timestamp"] = yaml.SafeLoader.construct_yaml_str
SpecLoader.yaml_constructors[None] = lambda loader, node: (_ for _ in ()).throw(yaml.constructor.ConstructorError(
    None, None, f"the tag {node.tag} is not accepted in a sweep file: plain values only", node.start_mark))


def load_yaml(text: str) -> Any:
    """A sweep file's text, or a ``--set`` value, read as plain YAML (``SpecLoader``); ``yaml.YAMLError`` if not."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader with fewer types


def strings(value: Any) -> Iterator[str]:
    """Every string in a value, through lists and mappings."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as YAML (numbers, lists, ``{choice: [..]}``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {text}: expected key=value, e.g. --set optimizer.lr=0.001")
    try:
        return key.strip(), load_yaml(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise SpecError(f"--set {text}: value is not valid YAML ({str(e).splitlines()[0]})") from None

