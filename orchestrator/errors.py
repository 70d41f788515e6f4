"""Errors that the CLI turns into one line on stderr (``KNOWN_ERRORS``), and the closest-match helpers they share
with ``models.errors``."""

from __future__ import annotations

from models.errors import ModelError, UnknownNameError, closest, unknown_name_message

__all__ = ["KNOWN_ERRORS", "ModelError", "SegsweepError", "SpecError", "UnknownNameError", "closest",
           "unknown_name_message"]


class SegsweepError(Exception):
    """A known failure: the CLI prints its message as one line and exits with ``exit_code``."""

    exit_code = 1


class SpecError(SegsweepError):
    """The sweep file (or a ``--set`` override) is invalid: nothing has started."""

    exit_code = 2


# what the CLI reports as one line (with exit_code); anything else is a bug and keeps its traceback
KNOWN_ERRORS: tuple[type[Exception], ...] = (SegsweepError, ModelError)
