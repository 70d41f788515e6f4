"""The failure policy of a sweep, in one place: a failure's one line, its kind, and whether it is tried again.

| kind | its line (examples) | what happens |
|---|---|---|
| ``out_of_memory`` beside other trials | (none: not a failure) | admission restarts the trial from its start once fewer run beside it (``perf/restarts``) |
| ``out_of_memory`` alone | ``OutOfMemoryError: the trial does not fit in its GPU even alone; lower ...`` | failed, not retried |
| ``not_finite`` | ``FloatingPointError: training loss is nan at epoch 3; lower optimizer.lr?`` | failed, not retried |
| ``cannot_run`` | ``RuntimeError: Output size is too small``, ``ModelError: ...``, ``BudgetError: ...`` (a budget's figure could not be measured) | failed, not retried |
| ``worker_died`` | ``WorkerDied: the trial's worker stopped (...)`` | failed; retried from its last checkpoint up to ``search.max_failures`` times |
| ``other`` | any other exception's line | failed; retried up to ``search.max_failures`` times |

A trial over budget (``search.constraints``) is no failure: it is ``infeasible`` (``orchestrator.budgets``).
A failed trial is recorded once, by the driver, from its line: the store's ``failed`` row and error, one console line,
Optuna's FAIL, its W&B run finished as failed, the report's "Failed trials". A kind that is not retried fails the same
way again (the same configuration, the same data): its retries end at once instead of training again
(``pool.proxy``). A failure never stops the sweep; a study whose every trial failed ends with one line and exit 1.
Torch-free: the driver, the proxies and the workers all use it.
"""

from __future__ import annotations

import re

NOT_RETRIED = ("out_of_memory", "not_finite", "cannot_run")

# the first words of a line, by kind (checked in this order)
_KINDS = (
    ("worker_died", ("WorkerDied",)),
    ("out_of_memory", ("OutOfMemoryError", "torch.OutOfMemoryError")),
    ("not_finite", ("FloatingPointError",)),
    ("cannot_run", ("ModelError", "BudgetError", "RuntimeError: Output size is too small",
                    "RuntimeError: Given input size", "RuntimeError: Calculated padded input size",
                    "ValueError: Expected more than 1 value")),
)

_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")


def failure(error: BaseException) -> str:
    """An exception as one line: ``RuntimeError: Output size is too small``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")[:300]


def error_line(trace: str | None) -> str:
    """The last ``SomeError: message`` line of a traceback (Ray wraps trial errors in several layers)."""
    if not trace:
        return "trial failed (no error recorded)"
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match and not line.startswith(("ray::", "File ")) and match.group(1) not in ("RayTaskError", "TuneError"):
            # the pool's proxy carries the worker's own line: "TrialError: RuntimeError: ..." -> "RuntimeError: ..."
            return (match.group(2) if match.group(1) == "TrialError" and match.group(2) else line)[:300]
    return lines[-1][:300]


def kind(line: str) -> str:
    """The kind of a failure's one line (the table above)."""
    for name, starts in _KINDS:
        if line.startswith(starts):
            return name
    return "other"


def retried(line: str) -> bool:
    """Whether a trial that failed with ``line`` is worth another try (``search.max_failures``): only a failure of
    its surroundings (a worker or node gone, anything unknown), not one its configuration makes again."""
    return kind(line) not in NOT_RETRIED
