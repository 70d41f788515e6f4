"""One sweep of the service, in a process of its own (``python -m orchestrator.service.runner DATA SWEEP_ID``), so
that a sweep's crash never takes the server down and a server's crash does not stop the sweep. It does what its row
says: run (or continue a run directory a killed runner left), resume, or extend; then writes its outcome
(``status/<id>.json``) for the server, which may not be its parent any more."""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

from ray import tune

from orchestrator.errors import KNOWN_ERRORS, SegsweepError
from orchestrator.files import write_text_whole
from orchestrator.rundir import RunDir
from orchestrator.service.db import ServiceDB
from orchestrator.spec.load import load_spec_text
from orchestrator.store import Store, every_trial_failed
from orchestrator.study import extend_sweep, resume_sweep, run_sweep


def status_file(data: Path, sweep_id: str) -> Path:
    return data / "status" / f"{sweep_id}.json"


def write_status(data: Path, sweep_id: str, state: str, error: str | None = None) -> None:
    path = status_file(data, sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_whole(path, json.dumps({"state": state, "error": error}))


def run(data: Path, sweep_id: str, address: str | None) -> int:
    row = ServiceDB(data / "service.db").sweep(sweep_id)
    run_dir = Path(row.run_dir)
    if row.action.startswith("extend:"):
        result = extend_sweep(run_dir, int(row.action.split(":", 1)[1]), address)
    elif RunDir(run_dir).store.is_file() and tune.Tuner.can_restore(str(RunDir(run_dir).tune)):
        result = resume_sweep(run_dir, address)  # asked for, or a run whose runner was killed with the server
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # a runner killed before any trial ran: start again
        # the spec as the server stored it, resolved: nothing is expanded from the runner's environment
        result = run_sweep(load_spec_text(row.spec, source=f"sweep {sweep_id}", environ={}), out=run_dir,
                           address=address)
    if result.interrupted:
        return 130
    failed = every_trial_failed(Store.of_run(result.run_dir))
    if failed:  # as the CLI's run: the store and report stay, the sweep's state says it failed, and why
        raise SegsweepError(failed)
    return 0


def main() -> None:
    data, sweep_id = Path(sys.argv[1]), sys.argv[2]
    address = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        code = run(data, sweep_id, address)
    except KeyboardInterrupt:
        write_status(data, sweep_id, "cancelled")
        sys.exit(130)
    except KNOWN_ERRORS as e:
        write_status(data, sweep_id, "failed", str(e))
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - a bug: its traceback goes to the sweep's log, one line to the queue
        traceback.print_exc()
        write_status(data, sweep_id, "failed", f"{type(e).__name__}: {e}".splitlines()[0][:300])
        sys.exit(1)
    write_status(data, sweep_id, "finished" if code == 0 else "cancelled",
                 None if code == 0 else "interrupted: resume it")
    sys.exit(code)


if __name__ == "__main__":
    main()
