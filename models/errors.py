"""Known failures of the model side (a name that is not in a registry, a model that cannot be built or exported):
the CLI prints their message as one line. ``orchestrator.errors`` builds on them; ``models/`` imports nothing of
``orchestrator``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModelError(ValueError):
    """A model, loss, optimiser or export that cannot be made as asked; the message says what to change."""

    exit_code = 1


class UnknownNameError(ModelError):
    """A registry name that does not exist; the message lists the closest match and the choices."""

    exit_code = 2

    def __init__(self, kind: str, name: object, available: Iterable[str]) -> None:
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(unknown_name_message(kind, name, self.available))


def closest(name: object, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name_message(kind: str, name: object, available: Iterable[str], limit: int = 12) -> str:
    """``unknown loss 'dise' (did you mean 'dice'? available: bce_dice, ce, dice, ...)``."""
    available = sorted(available)
    hint = closest(name, available)
    shown = ", ".join(available[:limit]) + (", ..." if len(available) > limit else "")
    did_you_mean = f"did you mean '{hint}'? " if hint else ""
    return f"unknown {kind} '{name}' ({did_you_mean}available: {shown})"
