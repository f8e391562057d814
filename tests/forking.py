"""Waiting for a forked child in tests that check fork-safety (a child hung on a lock fails)."""

from __future__ import annotations

import os
import time

import pytest


def wait_for_child(pid: int, seconds: float = 20) -> None:
    """Fail unless the child exits 0 within ``seconds``; a hung child is killed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child hung on a lock held at the fork")
