"""Waiting in tests: poll until a condition holds, or until a session reaches a state."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, TypeVar

from libtv_fsm import SessionStore

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """The first truthy value ``predicate`` returns, polled every 50 ms; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def state_of(home: Path, sid: str) -> str:
    """The session's state, replayed from its journal."""
    return SessionStore(home).replay(sid).state


def wait_state(home: Path, sid: str, *states: str, timeout: float = 30.0) -> str:
    """Wait until the session is in one of ``states``; that state."""
    return wait_for(lambda: state_of(home, sid) in states and state_of(home, sid), timeout, f"{sid} to be {states}")


def waiter_gone(home: Path, sid: str) -> bool:
    """True once no waiter holds the session's run lock."""
    from libtv_fsm.recovery import waiter_running

    return not waiter_running(SessionStore(home), sid)
