"""What a submitted spec may ask of the server: the one place that decides it (README, "Security model").

A spec sent to ``orchestrate serve`` is hostile input. Before it is validated (so that not even the existence of a
path is probed), its flat keys, after ``--set`` and the client's ``${VAR}`` values, and every value a search domain
can give them, are screened:

- no ``${VAR}`` is left: the server never expands from its own environment (the client sends its values);
- no key reaches a shell, a program or the server's ssh settings: ``ssh_options`` and ``remote_python`` are the
  admin's, per registered target, and a target is ``local`` or a registered name, never ``ssh://``;
- every path the server reads (``data.root``, a weights file) is absolute and, symlinks resolved, under one of the
  admin's data roots (``serve --data-root DIR``), so a user reads neither the server's files nor another user's runs;
- sizes stay within ``LIMITS`` (trials, epochs, image size, batches, processes): one spec cannot fill the disk or
  the memory, or hold a GPU's slots for ever.

Names (registered targets, backends, datasets) are then checked by the spec's own validation, as for the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.spec.keys import ENV_REFERENCE, flatten, is_domain, strings
from orchestrator.spec.schema import WEIGHT_NAMES

# keys that name a program, or pass options to ssh, on the server: the admin sets them for each registered target
ADMIN_KEYS = ("export.ssh_options", "export.remote_python", "search.latency_proxy.ssh_options",
              "search.latency_proxy.remote_python")
TARGET_KEYS = ("export.targets", "search.latency_proxy.target")
# the most a submitted spec may ask for, per key (each value a search domain can give it included)
LIMITS: dict[str, int] = {
    "search.num_samples": 1000, "search.max_failures": 10, "trainer.max_epochs": 1000,
    "trainer.batch_size": 1024, "trainer.val_batch_size": 1024, "data.size": 4096, "data.workers": 16,
    "data.synthetic.train": 20000, "data.synthetic.val": 20000, "data.synthetic.height": 4096,
    "data.synthetic.width": 4096, "export.iters": 100000, "export.warmup": 10000, "export.top_k": 100,
    "evaluate.top_k": 100, "check.top_k": 100, "search.latency_proxy.iters": 100000,
    "search.latency_proxy.warmup": 10000, "resources.trials_per_gpu": 64, "resources.workers_per_gpu": 16,
}
# the least, per key: a trial's CPUs set how many worker processes a sweep of its own starts on each node
MINIMA: dict[str, float] = {"resources.cpus_per_trial": 0.5}
UNSET_ON_SERVER = ("set it in the shell that runs orchestrate submit, which sends its value, or write ${%s:-default}: "
              "the server never reads its own environment")


@dataclass(frozen=True)
class SubmitPolicy:
    """The admin's choices that bound a submitted spec: the folders the server may read data and weights from."""

    data_roots: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_roots", tuple(Path(r).resolve() for r in self.data_roots))

    def screen(self, flat: dict[str, Any], where: str) -> None:
        """Raise SpecError (one line: the key, and what to do instead) at the first key the policy refuses."""
        for key, value in leaves(flat):
            if not plain(value):  # the spec loader builds no other type; anything else came around it
                raise SpecError(f"{where}: {key}: only plain values (text, numbers, booleans, lists, mappings)")
            if any(ENV_REFERENCE.search(text) for text in strings(value)):
                raise SpecError(f"{where}: {key}: a ${{...}} is left after expansion; the server expands nothing "
                                f"itself (send the value, not a reference to another variable)")
            if key in ADMIN_KEYS:
                raise SpecError(f"{where}: {key}: not accepted by the server: the admin sets ssh options and the "
                                f"interpreter for each target (orchestrate target add NAME ssh://... --ssh-option "
                                f"K=V); name a registered target in export.targets instead")
            if key in TARGET_KEYS:
                for target in value if isinstance(value, (list, tuple)) else [value]:
                    if isinstance(target, str) and "://" in target:
                        raise SpecError(f"{where}: {key}: {target}: the server measures on registered targets "
                                        f"only: name one (orchestrate target list, on the server) or local")
            if key == "data.root" or (key == "model.encoder_weights" and value not in (None, *WEIGHT_NAMES)):
                self.check_path(key, value, where)
            if key in LIMITS:
                too_large = [n for n in numbers(value) if n > LIMITS[key]]
                if too_large:
                    raise SpecError(f"{where}: {key}: {too_large[0]:g} is more than this server takes "
                                    f"(at most {LIMITS[key]})")
            if key in MINIMA:
                too_small = [n for n in numbers(value) if n < MINIMA[key]]
                if too_small:
                    raise SpecError(f"{where}: {key}: {too_small[0]:g} is less than this server takes "
                                    f"(at least {MINIMA[key]:g})")

    def check_path(self, key: str, value: Any, where: str) -> None:
        if value is None or isinstance(value, (bool, int, float)):
            return  # not a path: the schema says what the key takes
        if not isinstance(value, str):
            raise SpecError(f"{where}: {key}: a path is text")
        roots = ", ".join(map(str, self.data_roots))
        if not self.data_roots:
            raise SpecError(f"{where}: {key}: {value}: this server reads no data: the admin starts it with "
                            f"--data-root DIR (repeatable) to allow the folders under DIR")
        path = Path(value)
        if not path.is_absolute():
            raise SpecError(f"{where}: {key}: {value}: give an absolute path on the server, under {roots}")
        resolved = path.resolve()
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.data_roots):
            raise SpecError(f"{where}: {key}: {value}: outside the server's data roots ({roots}); the admin "
                            f"allows more with serve --data-root DIR")


def leaves(flat: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) a trial of the sweep can get: fixed values, and each value of a ``choice`` (a
    grouped choice's options by their own keys). Other domains (numbers) come whole: their bounds."""
    for key, value in flat.items():
        if not is_domain(value) or "choice" not in value:
            yield key, value
            continue
        for option in value.get("choice") or []:
            if isinstance(option, dict):
                yield from flatten(option, key + ".").items()
            else:
                yield key, option


def plain(value: Any) -> bool:
    """Text, a number, a boolean, null, or lists and mappings of those (string keys): what JSON holds."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return False


def numbers(value: Any) -> Iterator[float]:
    """The numbers in a value (a size's two, a list's, a domain's bounds)."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
