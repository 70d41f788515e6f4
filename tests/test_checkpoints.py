"""A finished trial's Tune checkpoint is released to a stub; its staging folder goes; other trials are untouched."""

from __future__ import annotations

import torch

from orchestrator.trial import STAGING_DIR, STATE_FILE, release_checkpoint


def _checkpoint(run_dir, trial_id, index, numel):
    folder = run_dir / "tune" / trial_id / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(numel)}, "epoch": index + 1, "best": 0.5}, folder / STATE_FILE)
    return folder / STATE_FILE


def test_release_checkpoint_leaves_a_stub_and_frees_the_rest(tmp_path):
    done = _checkpoint(tmp_path, "a", 3, 250_000)  # 1 MB of float32
    other = _checkpoint(tmp_path, "b", 1, 1000)
    (tmp_path / "trials" / "a" / STAGING_DIR).mkdir(parents=True)
    (tmp_path / "trials" / "a" / STAGING_DIR / STATE_FILE).write_bytes(b"x" * 100)
    (tmp_path / "trials" / "a" / "best.pt").write_bytes(b"weights")
    size = done.stat().st_size

    freed = release_checkpoint(tmp_path, "a")

    assert torch.load(done, weights_only=False) == {"finished": True}
    assert freed == size - done.stat().st_size and freed > 990_000
    assert not (tmp_path / "trials" / "a" / STAGING_DIR).exists()
    assert (tmp_path / "trials" / "a" / "best.pt").read_bytes() == b"weights"
    assert torch.load(other, weights_only=False)["epoch"] == 2  # another trial's checkpoint is its own
    assert release_checkpoint(tmp_path, "a") == 0 and release_checkpoint(tmp_path, "never-ran") == 0
