"""The pool's pure parts: where ASHA may stop a trial, the checkpoint stub, and the dispatcher's bookkeeping."""

from __future__ import annotations

import json

from orchestrator.pool.dispatch import Dispatcher
from orchestrator.pool.protocol import STUB, decision_epochs, is_stub


def test_decision_epochs_are_ashas_rungs_below_max_t():
    # grace 3, rf 3, 20 epochs: rungs at 3 and 9 (27 is past the end)
    assert decision_epochs(20, 3, 3) == (3, 9)
    assert decision_epochs(6, 1, 2) == (1, 2, 4)  # the demo's
    assert decision_epochs(10, 1, 1.5) == (1, 2, 3, 4, 6, 8)  # ceil(1.5^k): 1, 1.5, 2.25, 3.4, 5.1, 7.6
    assert decision_epochs(3, 3, 3) == () and decision_epochs(20, None, 3) == ()


def test_the_stub_is_read_without_torch(tmp_path):
    state = tmp_path / "state.pt"
    state.write_text(json.dumps(STUB))
    assert is_stub(state)
    state.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a torch checkpoint (a zip file)
    assert not is_stub(state) and not is_stub(tmp_path / "missing.pt")


def test_the_dispatcher_fills_the_roomiest_worker_and_forgets_dead_ones():
    d = Dispatcher([2, 4])
    assert [d.assign(t) for t in "abcd"] == [1, 1, 0, 1]  # free room 2 vs 4, then 2 vs 3, 2 vs 2 (first), 1 vs 2
    assert d.assign("a") == 1  # asked again: the same worker
    d.release("b")
    d.lost(1)
    assert d.assign("e") == 0 and d.assign("a") == 0  # worker 1 is gone: its trials go to worker 0
    d.lost(0)
    assert d.assign("f") is None  # none left: the proxy fails its trial with the reason


def test_an_abandoned_trial_names_the_worker_to_drop_it_once():
    d = Dispatcher([1, 1])
    assert [d.assign(t) for t in "abc"] == [0, 1, 0]
    d.release("a")  # its proxy said so: nothing to abandon
    assert d.abandon("a") is None
    assert d.abandon("b") == 1 and d.abandon("b") is None  # its proxy died: worker 1 drops it, once
    assert d.assign("d") == 1  # and its room is free again
    d.lost(0)
    assert d.abandon("c") is None  # its worker is gone with it


def test_a_failure_that_would_repeat_is_remembered_for_its_retries():
    d = Dispatcher([1])
    assert d.final_failure("a") is None
    d.fail("a", "FloatingPointError: training loss is nan at epoch 2; lower optimizer.lr?")
    assert d.final_failure("a").startswith("FloatingPointError")
