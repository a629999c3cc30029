"""What a waiter run carries from one step to the next (RunContext), and what a step says comes next.

Pure and serializable: a task-queue job can carry a RunContext in its arguments
(``to_dict``/``from_dict`` give plain JSON) and a scheduler can keep it beside a due time.
Everything a step trusts about the session comes from its journal; the context only holds
what belongs to one run (its counters and its deadline), exactly what a run kept in local
variables before the waiter was split into steps.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union

import attr


@attr.frozen
class RunContext:
    """One run's own facts; a fresh run (a restart, ``recover``) starts from ``RunContext()``."""

    # Polls made in this run, answered or not: LIBTV_MAX_POLLS counts these.
    polls: int = 0
    # When this run's wait on upstream began, in wall-clock epoch seconds (None: not yet):
    # LIBTV_WAIT_TIMEOUT_SECONDS counts from here, on any host.
    wait_started: Optional[float] = None
    # Delivery tries per result URL in this run; each run gives every pending result its tries.
    tries: Tuple[Tuple[str, int], ...] = ()
    # Results this run resends without knowing whether an earlier send reached the chat
    # (a crash or an unanswered send on a platform that does not de-duplicate).
    uncertain: Tuple[str, ...] = ()
    # Results this run stopped trying (refused for good, or out of tries): `recover` tries again.
    gave_up: Tuple[str, ...] = ()
    # This run recorded the delivery: the local copies come next.
    copies_due: bool = False

    def tries_of(self, url: str) -> int:
        return dict(self.tries).get(url, 0)

    def tried(self, url: str) -> "RunContext":
        counts = dict(self.tries)
        counts[url] = counts.get(url, 0) + 1
        return attr.evolve(self, tries=tuple(counts.items()))

    def with_uncertain(self, url: str) -> "RunContext":
        return self if url in self.uncertain else attr.evolve(self, uncertain=self.uncertain + (url,))

    def giving_up(self, url: str) -> "RunContext":
        return self if url in self.gave_up else attr.evolve(self, gave_up=self.gave_up + (url,))

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON types only (a job argument)."""
        return {"polls": self.polls, "wait_started": self.wait_started, "tries": dict(self.tries),
                "uncertain": list(self.uncertain), "gave_up": list(self.gave_up), "copies_due": self.copies_due}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunContext":
        started = data.get("wait_started")
        return cls(
            polls=int(data.get("polls") or 0),
            wait_started=None if started is None else float(started),
            tries=tuple((str(u), int(n)) for u, n in dict(data.get("tries") or {}).items()),
            uncertain=tuple(str(u) for u in data.get("uncertain") or ()),
            gave_up=tuple(str(u) for u in data.get("gave_up") or ()),
            copies_due=bool(data.get("copies_due")),
        )


@attr.frozen
class Finished:
    """Nothing more to do in this run; ``code`` is the `wait-and-deliver` exit code (CONTRACT section 4)."""

    code: int


@attr.frozen
class Due:
    """Run the next step ``seconds`` from now (0: at once), with ``context``."""

    seconds: float
    context: RunContext


StepResult = Union[Finished, Due]
