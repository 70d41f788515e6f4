"""Fixtures of the orchestrator's tests that several packages share: a real sshd on loopback."""

from __future__ import annotations

import pytest

from tests.standins import free_port

__all__ = ["free_port"]


@pytest.fixture(scope="module")
def sshd(ssh_targets) -> tuple[str, list[str]]:
    """A real OpenSSH server on loopback with key authentication only (Debian's openssh-server; .ci/run installs it):
    the session's (``tests.standins``), at its port for this machine as it is. ``(url, ssh options)``."""
    return ssh_targets.url(), ssh_targets.options
