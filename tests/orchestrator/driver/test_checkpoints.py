"""A running trial's older Tune checkpoints become pointers to its newest; a finished trial's are released to a stub;
its staging folder goes; other trials are untouched."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import torch

from orchestrator.driver.callbacks import CheckpointCallback, release_checkpoint, supersede_checkpoints
from orchestrator.pool.protocol import is_stub, resolve_state
from orchestrator.rundir import STATE_FILE, RunDir


def _checkpoint(run_dir, trial_id, index, numel):
    folder = run_dir / "tune" / trial_id / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(numel)}, "epoch": index + 1, "best": 0.5}, folder / STATE_FILE)
    return folder / STATE_FILE


def test_release_checkpoint_leaves_a_stub_and_frees_the_rest(tmp_path):
    done = _checkpoint(tmp_path, "a", 3, 250_000)  # 1 MB of float32
    other = _checkpoint(tmp_path, "b", 1, 1000)
    trial = RunDir(tmp_path).trial("a")
    for epoch in (2, 3):  # staged, and left by a worker killed before the proxy reported them
        trial.checkpoint(epoch).mkdir(parents=True)
        (trial.checkpoint(epoch) / STATE_FILE).write_bytes(b"x" * 100)
    trial.best_weights.write_bytes(b"weights")
    size = done.stat().st_size

    freed = release_checkpoint(tmp_path, "a")

    assert is_stub(done) and json.loads(done.read_text()) == {"finished": True}
    assert freed == size - done.stat().st_size and freed > 990_000
    assert trial.staged_checkpoints() == []
    assert trial.best_weights.read_bytes() == b"weights"
    assert torch.load(other, weights_only=False)["epoch"] == 2  # another trial's checkpoint is its own
    assert release_checkpoint(tmp_path, "a") == 0 and release_checkpoint(tmp_path, "never-ran") == 0


def test_a_checkpoint_that_cannot_be_released_stays_whole_with_one_line(tmp_path, capsys):
    state = _checkpoint(tmp_path, "a", 0, 1000)
    size = state.stat().st_size
    (state.parent / f"{STATE_FILE}.tmp{os.getpid()}").mkdir()  # the stub cannot be written (a folder holds its name)
    CheckpointCallback(str(tmp_path)).on_trial_complete(0, [], SimpleNamespace(trial_id="a"))
    err = capsys.readouterr().err
    assert state.stat().st_size == size and torch.load(state, weights_only=False)["epoch"] == 1
    assert err.count("\n") == 1 and "trial a: its checkpoint" in err and "stays whole" in err


def test_a_running_trials_older_checkpoints_point_to_its_newest(tmp_path):
    first, second = _checkpoint(tmp_path, "a", 0, 250_000), _checkpoint(tmp_path, "a", 1, 250_000)
    other = _checkpoint(tmp_path, "b", 0, 1000)
    size = first.stat().st_size

    callback = CheckpointCallback(str(tmp_path))
    callback.on_checkpoint(0, [], SimpleNamespace(trial_id="a"), SimpleNamespace(path=str(second.parent)))
    assert json.loads(first.read_text()) == {"superseded_by": "checkpoint_000001"}
    assert supersede_checkpoints(second) == 0  # pointers are not rewritten
    assert torch.load(second, weights_only=False)["epoch"] == 2 and torch.load(other, weights_only=False)["epoch"] == 1

    third = _checkpoint(tmp_path, "a", 2, 250_000)
    assert supersede_checkpoints(third) > size - 100  # the second's weights go; the first was a pointer already
    # a killed driver's snapshot may name any of them: each leads to the newest state
    assert resolve_state(first) == resolve_state(second) == resolve_state(third) == third
    assert torch.load(resolve_state(first), weights_only=False)["epoch"] == 3

    release_checkpoint(tmp_path, "a")  # the trial ends: every one of them is the stub, pointers included
    assert all(is_stub(state) for state in (first, second, third)) and resolve_state(first) == first


def test_a_pointer_outside_the_trials_checkpoints_is_not_followed(tmp_path):
    state = _checkpoint(tmp_path, "a", 0, 10)
    for name in ("../../b/checkpoint_000000", "best", 7):
        state.write_text(json.dumps({"superseded_by": name}))
        assert resolve_state(state) == state
