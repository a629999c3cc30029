"""The waiter: poll upstream until the job ends, deliver each result to the chat once, exit.

`wait-and-deliver` runs :class:`Waiter`, the simplest runner of the waiter step
(libtv_fsm/waiting/step.py): take the session's claim, note the start, then step and sleep
until the next step is due. Every step is journaled before its effect is trusted, and every
decision is taken from a fresh replay, so a waiter killed anywhere resumes where the journal
says and sends nothing twice.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping, Optional

from libtv_fsm import events as ev
from libtv_fsm.machine import CREATED, DELIVERED, TIMEOUT
from libtv_fsm.waiting.context import Finished, RunContext
from libtv_fsm.waiting.polls import WAITING, conclusion, observe, settle
from libtv_fsm.waiting.settings import EXIT_BUSY, EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, WaitSettings
from libtv_fsm.waiting.step import Edges, step

__all__ = ["Waiter", "WaitSettings", "observe", "settle", "conclusion", "stderr_log", "WAITING", "CLAIM_WAIT_SECONDS",
           "EXIT_OK", "EXIT_ERROR", "EXIT_FAILED", "EXIT_TIMEOUT", "EXIT_BUSY"]

# `recover` probes the run lock for a moment to see whether a waiter is alive; a waiter starting
# just then waits this long instead of leaving the session without one.
CLAIM_WAIT_SECONDS = 0.25


class Waiter(Edges):
    """Waits on one session and delivers it; :meth:`run` returns the CONTRACT exit code.

    ``clock`` is wall-clock epoch seconds (the step's timeout is judged on it); ``sleep`` waits
    until the next step is due.
    """

    def __init__(self, store: Any, session_id: str, *, api_key: str, env: Mapping[str, str] = os.environ,
                 settings: Optional[WaitSettings] = None, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 http: Any = None) -> None:
        super().__init__(store, session_id, api_key=api_key, env=env, settings=settings, log=log, http=http)
        self.clock = clock
        self.sleep = sleep
        # record/observe_poll are the Edges' own: the store keeps the read model (journal/projections.py).

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        claim = self.store.journal.claim_waiter(self.sid, wait=CLAIM_WAIT_SECONDS)
        if not claim.held:
            self.log(f"another waiter is already working on session {self.sid}; nothing to do")
            return EXIT_BUSY
        with claim:
            session = self.store.load(self.sid)
            if session.state not in (DELIVERED, CREATED):  # those end at the first step, journaling nothing
                session = self.record(ev.WaiterStarted(at=ev.now(), pid=os.getpid()))
                if session.state == TIMEOUT:
                    session = self.record(ev.Resumed(at=ev.now(), reason="waiter started again"))
            context = RunContext()
            while True:
                result = step(self, session, context, self.clock)
                if isinstance(result, Finished):
                    return result.code
                context = result.context
                if result.seconds > 0:
                    self.sleep(result.seconds)
                session = self.store.load(self.sid)


def stderr_log(session_id: str) -> Callable[[str], None]:
    """Timestamped log lines on stderr (the detached waiter's stderr is its log file)."""
    def log(line: str) -> None:
        print(f"{ev.format_time(ev.now())} [{session_id}] {line}", file=sys.stderr, flush=True)

    return log
