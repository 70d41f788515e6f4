"""Errors that the CLI turns into one line on stderr, and the closest-match helper they share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SegsweepError(Exception):
    """A known failure: the CLI prints its message as one line and exits with ``exit_code``."""

    exit_code = 1


class SpecError(SegsweepError):
    """The sweep file (or a ``--set`` override) is invalid: nothing has started."""

    exit_code = 2


class UnknownNameError(SegsweepError, ValueError):
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
