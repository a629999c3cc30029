"""How long and how often a waiter polls (CONTRACT section 4's waiter environment), and its exit codes."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import attr

from libtv_fsm import backoff

# `wait-and-deliver` exit codes (CONTRACT section 4); a step's Finished carries one of them.
EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_TIMEOUT, EXIT_BUSY = 0, 1, 3, 4, 5


@attr.frozen
class WaitSettings:
    """How long and how often to poll (CONTRACT section 4's waiter environment)."""

    first_interval: float = backoff.DEFAULT_FIRST
    max_interval: float = backoff.DEFAULT_CAP
    max_polls: Optional[int] = None
    timeout_seconds: float = 3600.0
    delivery_tries: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "WaitSettings":
        from libtv_fsm.config import env_number

        def number(name: str, default: Optional[float], cast: Callable[[str], Any] = float) -> Any:
            return env_number(env, name, default, cast)

        return cls(
            first_interval=number("LIBTV_POLL_INTERVAL_SECONDS", backoff.DEFAULT_FIRST),
            max_interval=number("LIBTV_MAX_POLL_INTERVAL_SECONDS", backoff.DEFAULT_CAP),
            max_polls=number("LIBTV_MAX_POLLS", None, int),
            timeout_seconds=number("LIBTV_WAIT_TIMEOUT_SECONDS", 3600.0),
        )
