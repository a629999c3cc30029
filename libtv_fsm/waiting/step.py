"""The waiter as one step: given a replayed session, do its next unit of work and say when the next one is due.

The contract every runner relies on (`wait-and-deliver`'s loop in waiter.py; the home worker's
scheduler and the task-queue jobs of CONTRACT sections 8 and 9 later):

- The runner holds the session's waiter claim (``store.journal.claim_waiter``) for the whole run
  and, before the first step, records ``WaiterStarted`` (and ``Resumed`` for a ``timeout``
  session). A run starts from ``RunContext()``.
- It calls ``step(edges, store.load(session_id), context, clock)``. The step does ONE unit of
  work: one poll and its conclusion; or the delivery of the pending results; or the failed /
  timeout notice; or the local copies. It returns ``Finished(code)``, the `wait-and-deliver`
  exit code (0 delivered, already delivered or no chat; 3 failed; 4 timeout; 1 error), or
  ``Due(seconds, context)``: call again that many seconds from now, with that context, on a
  freshly replayed session. A retry wait (a poll interval, a delivery backoff) is a due time,
  never a sleep inside the step.
- The step never sleeps, never takes or looks at the claim or the process, and prints nothing:
  it logs through ``edges.log``. ``clock`` is wall-clock epoch seconds (``time.time``); the step
  reads it only to start and judge the wait's timeout (from ``context.wait_started``).
- It is safe to run again after a crash at any point, and again on a finished session: what it
  trusts is in the journal, written before it is relied on (an attempt before its send, the
  outcome after), so a rerun resumes where the journal says and sends nothing twice. The context
  holds only this run's counters; a job retried with an older context, or a new run with a fresh
  one, is still correct (it is a restart, as after a crash).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import attr

from libtv_fsm import backoff
from libtv_fsm import events as ev
from libtv_fsm.errors import LibtvError, PermanentError, TransientError
from libtv_fsm.machine import COMPLETED, CREATED, DELIVERED, FAILED, TIMEOUT
from libtv_fsm.replay import Session
from libtv_fsm.results import result_prefixes
from libtv_fsm.waiting.context import Due, Finished, RunContext, StepResult
from libtv_fsm.waiting.polls import WAITING, conclusion, observe, settle
from libtv_fsm.waiting.settings import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, WaitSettings

__all__ = ["Edges", "step", "RunContext", "Finished", "Due", "StepResult"]


class Edges:
    """What a step of one session touches: the store, upstream (the backend), the chat (its channel), local files, a log.

    ``record`` and ``observe_poll`` are the two ways a step writes what changes the session's
    state; a runner may extend them (the store itself keeps the legacy read model current).
    """

    def __init__(self, store: Any, session_id: str, *, api_key: str, env: Mapping[str, str] = os.environ,
                 settings: Optional[WaitSettings] = None, log: Callable[[str], None] = print,
                 http: Any = None) -> None:
        self.store = store
        self.sid = session_id
        self.api_key = api_key
        self.env = env
        self.settings = settings or WaitSettings.from_env(env)
        self.log = log
        self._http = http
        self._backend: Any = None
        self.prefixes = result_prefixes(env.get("LIBTV_EXTRA_RESULT_PREFIXES"))

    @property
    def http(self) -> Any:
        if self._http is None:
            from libtv_fsm.transport import new_session

            self._http = new_session()
        return self._http

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from libtv_fsm.backends import open_backend

            self._backend = open_backend(self.api_key, self.env, session=self.http)
        return self._backend

    def channel(self, session: Session) -> Any:
        from libtv_fsm.channels import get_channel

        assert session.delivery is not None
        return get_channel(session.delivery.channel, self.env, session=self.http)

    def record(self, *events: ev.Event) -> Session:
        return self.store.record(self.sid, *events)

    def observe_poll(self, messages: Sequence[Any]) -> Session:
        return observe(self.store, self.sid, messages, self.prefixes, "waiter")


def step(edges: Edges, session: Session, context: RunContext, clock: Callable[[], float]) -> StepResult:
    """Do the session's next unit of work; Finished with the exit code, or Due in some seconds (see the module doc)."""
    assert session.session_id == edges.sid, (session.session_id, edges.sid)
    state = session.state
    if state == CREATED:
        edges.log(f"session {edges.sid} was never submitted")
        return Finished(EXIT_ERROR)
    if state in WAITING:
        if conclusion(session) is not None:
            # The journal already supports a conclusion (a crash between a poll and it): record it first.
            settle(edges.store, edges.sid)
            return Due(0.0, context)
        return _poll(edges, session, context, clock)
    if state == COMPLETED:
        if session.delivery is None:
            edges.log(f"session {edges.sid} completed with {len(session.result_urls)} result(s); no chat to deliver to")
            _keep_copies(edges, session)
            return Finished(EXIT_OK)
        return _deliver(edges, session, context)
    if state == DELIVERED:
        if context.copies_due:
            _keep_copies(edges, session)
        else:
            edges.log(f"session {edges.sid} was already delivered; nothing sent")
        return Finished(EXIT_OK)
    if state == FAILED:
        _notify(edges, session, "failed", session.failure_message or "")
        return Finished(EXIT_FAILED)
    if state == TIMEOUT:
        _notify(edges, session, "timeout", "")
        return Finished(EXIT_TIMEOUT)
    return Finished(EXIT_ERROR)


# -- waiting upstream ------------------------------------------------------------------------------


def _poll(edges: Edges, session: Session, context: RunContext, clock: Callable[[], float]) -> StepResult:
    """One poll and what it concludes; the next poll is due per the backoff schedule, within the timeout."""
    s = edges.settings
    if context.wait_started is None:
        context = attr.evolve(context, wait_started=clock())
        edges.log(f"polling session {edges.sid} (from seq {session.last_seq}, first interval {s.first_interval:g} s)")
    polls = context.polls + 1
    try:
        messages = edges.backend.query_session(edges.sid, after_seq=session.last_seq)
    except TransientError as err:
        edges.log(f"poll {polls}: transient error, will retry: {err}")
    except PermanentError as err:
        edges.log(f"poll {polls}: upstream refused: {err}")
        edges.record(ev.Failed(at=ev.now(), reason=str(err)))
        return Due(0.0, context)
    else:
        session = edges.observe_poll(messages)
        if session.state not in WAITING:
            edges.log(f"session {edges.sid} is {session.state} after {polls} poll(s)")
            return Due(0.0, attr.evolve(context, polls=polls))
    context = attr.evolve(context, polls=polls)
    assert context.wait_started is not None
    elapsed = clock() - context.wait_started
    if (s.max_polls is not None and polls >= s.max_polls) or elapsed >= s.timeout_seconds:
        edges.log(f"giving up after {polls} poll(s) and {elapsed:.0f} s; the job may still finish upstream")
        edges.record(ev.TimedOut(at=ev.now(), polls=polls, waited_seconds=round(elapsed, 3)))
        return Due(0.0, context)
    wait = backoff.delay(polls - 1, s.first_interval, s.max_interval)
    return Due(min(wait, max(0.0, s.timeout_seconds - elapsed)), context)


# -- delivering --------------------------------------------------------------------------------------


def _deliver(edges: Edges, session: Session, context: RunContext) -> StepResult:
    """Send every pending result once, in order; a transient failure makes the rest due after its backoff."""
    assert session.delivery is not None
    try:
        channel = edges.channel(session)
        target = channel.normalize_target(session.delivery.chat_id)
    except LibtvError as err:
        edges.log(f"cannot deliver to {session.delivery.channel}: {err}")
        return Finished(EXIT_ERROR)
    for url in session.pending_urls:
        if url in context.gave_up:
            continue
        context, wait = _deliver_url(edges, session, channel, target, url, context)
        if wait is not None:
            return Due(wait, context)
    session = edges.store.load(edges.sid)
    if session.pending_urls:
        edges.log(f"{len(session.pending_urls)} result(s) not delivered; `recover` will try again")
        return Finished(EXIT_ERROR)
    session = edges.record(ev.Delivered(at=ev.now()))
    edges.log(f"session {edges.sid} delivered ({len(session.result_urls)} result(s))")
    return Due(0.0, attr.evolve(context, copies_due=True))


def _deliver_url(edges: Edges, session: Session, channel: Any, target: str, url: str,
                 context: RunContext) -> Tuple[RunContext, Optional[float]]:
    """Try ``url`` until it is delivered, refused, out of tries, or must wait; (context, seconds to wait or None)."""
    from libtv_fsm.channels.base import SendInDoubt
    from libtv_fsm.delivery import deliver_result

    s = edges.settings
    if context.tries_of(url) == 0 and url not in context.uncertain:
        in_doubt = session.attempts.get(url, 0)
        if in_doubt and not channel.dedupes:
            # A send started earlier (a crash) and its outcome was never recorded; this
            # platform would show a resend twice.
            if _reconcile(edges, channel, target, url, resent=in_doubt >= 2):
                return context, None
            context = context.with_uncertain(url)
    workdir = Path(edges.store.home) / "libtv-tmp"
    while context.tries_of(url) < s.delivery_tries:
        context = context.tried(url)
        attempt = context.tries_of(url)
        edges.record(ev.DeliveryAttempted(at=ev.now(), url=url, channel=channel.name, chat_id=target))
        try:
            outcome = deliver_result(channel, target, edges.sid, url, http=edges.http, workdir=workdir)
        except TransientError as err:
            if isinstance(err, SendInDoubt) and not channel.dedupes:
                # No answer to a send that went out: in doubt, as after a crash.
                edges.log(f"delivery of {url} (try {attempt}): {err}")
                if _reconcile(edges, channel, target, url, resent=url in context.uncertain):
                    return context, None
                context = context.with_uncertain(url)
                continue
            edges.record(ev.DeliveryFailed(at=ev.now(), url=url, error=str(err), transient=True))
            edges.log(f"delivery of {url} failed (try {attempt}), will retry: {err}")
            return context, backoff.delay(attempt - 1, s.first_interval, s.max_interval)
        except LibtvError as err:
            edges.record(ev.DeliveryFailed(at=ev.now(), url=url, error=str(err), transient=False))
            edges.log(f"delivery of {url} failed: {err}")
            return context.giving_up(url), None
        edges.record(ev.DeliverySucceeded(at=ev.now(), url=url, sent_as=outcome.sent_as,
                                          message_id=outcome.message_id, uncertain=url in context.uncertain))
        edges.log(f"delivered {url} as {outcome.sent_as}")
        return context, None
    return context.giving_up(url), None


def _reconcile(edges: Edges, channel: Any, target: str, url: str, resent: bool) -> bool:
    """Settle a send of ``url`` whose outcome is unknown on a platform that does not de-duplicate.

    If the platform shows the message (``find_sent``), it is recorded delivered. If it was
    already resent once, it is recorded delivered but uncertain: never a third send. Else
    False: the caller resends once, marked uncertain.
    """
    from libtv_fsm.delivery import dedupe_key

    found = channel.find_sent(target, dedupe_key(edges.sid, url))
    if not found and not resent:
        return False
    edges.record(ev.DeliverySucceeded(at=ev.now(), url=url, message_id=found or "",
                                      sent_as="reconciled" if found else "unknown", uncertain=resent or not found))
    edges.log(f"{url} was already in the chat ({found}); not sent again" if found
              else f"{url}: sent twice without an answer; not sending a third time (uncertain)")
    return True


# -- telling the chat, keeping copies -----------------------------------------------------------------


def _notify(edges: Edges, session: Session, kind: str, detail: str) -> None:
    """Tell the chat once that the session failed or is still generating."""
    if session.delivery is None or kind in session.notices:
        return
    from libtv_fsm.delivery import send_notice

    try:
        channel = edges.channel(session)
        target = channel.normalize_target(session.delivery.chat_id)
        outcome = send_notice(channel, target, edges.sid, kind, detail)
    except LibtvError as err:
        edges.log(f"could not tell the chat about the {kind}: {err}")
        return
    edges.record(ev.NoticeSent(at=ev.now(), kind=kind, message_id=outcome.message_id))
    edges.log(f"told the chat: {kind}")


def _keep_copies(edges: Edges, session: Session) -> None:
    """Download the results to LIBTV_DOWNLOAD_DIR as a local copy (best effort, journaled)."""
    from libtv_fsm.backends.download import download

    folder = Path(edges.env.get("LIBTV_DOWNLOAD_DIR") or os.path.expanduser("~/Downloads/libtv_results"))
    for index, url in enumerate(session.result_urls, start=1):
        if url in session.downloads:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = download(edges.http, url, folder, f"{edges.sid}_{index}", edges.prefixes)
        except (LibtvError, OSError) as err:
            edges.log(f"local copy of {url} failed: {err}")
            edges.store.record(edges.sid, ev.Downloaded(at=ev.now(), url=url, error=str(err)[:300]))
            continue
        edges.store.record(edges.sid, ev.Downloaded(at=ev.now(), url=url, path=str(path)))
