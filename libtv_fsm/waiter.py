"""The waiter: poll upstream until the job ends, deliver each result to the chat once, exit.

It is the loop that ties the edges together (journal, backend, channel). Every step is
journaled before its effect is trusted, and every decision is taken from a fresh replay,
so a waiter killed anywhere resumes where the journal says and sends nothing twice.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

import attr

from libtv_fsm import backoff
from libtv_fsm import events as ev
from libtv_fsm.errors import InputError, LibtvError, PermanentError, TransientError
from libtv_fsm.machine import COMPLETED, CREATED, DELIVERED, FAILED, POLLING, SUBMITTED, TIMEOUT
from libtv_fsm.replay import Session
from libtv_fsm.results import is_complete, read_batch, result_prefixes

EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_TIMEOUT, EXIT_BUSY = 0, 1, 3, 4, 5
# `recover` probes the run lock for a moment to see whether a waiter is alive; a waiter starting
# just then waits this long instead of leaving the session without one.
CLAIM_WAIT_SECONDS = 0.25
WAITING = (SUBMITTED, POLLING)


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
        def number(name: str, default: Optional[float], cast: Callable[[str], Any] = float) -> Any:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise InputError(f"{name} must be a number, got {raw[:20]!r}") from None
            if value < 0:
                raise InputError(f"{name} must not be negative")
            return value

        return cls(
            first_interval=number("LIBTV_POLL_INTERVAL_SECONDS", backoff.DEFAULT_FIRST),
            max_interval=number("LIBTV_MAX_POLL_INTERVAL_SECONDS", backoff.DEFAULT_CAP),
            max_polls=number("LIBTV_MAX_POLLS", None, int),
            timeout_seconds=number("LIBTV_WAIT_TIMEOUT_SECONDS", 3600.0),
        )


def observe(store: Any, session_id: str, messages: Sequence[Any], prefixes: Sequence[str], source: str,
            always: bool = True) -> Session:
    """Journal what a poll's messages say (results, failure, progress) and any conclusion they allow.

    ``always`` records even a poll that brought nothing new (the waiter's quiet polls count);
    ``query-session`` records only news.
    """
    def poll_event(session: Session) -> List[ev.Event]:
        if session.state == CREATED:
            return []
        fresh = [m for m in messages if m.seq > session.last_seq]
        if not fresh and not always:
            return []
        batch = read_batch(fresh, max(session.last_seq, session.after_seq), prefixes)
        return [ev.PollAnswered(
            at=ev.now(), after_seq=session.last_seq, last_seq=batch.last_seq, new_messages=len(fresh),
            urls=batch.urls, last_result_seq=batch.last_result_seq, last_assistant_seq=batch.last_assistant_seq,
            failure=batch.failure, source=source,
        )]

    store.record_with(session_id, poll_event)
    return settle(store, session_id)


def conclusion(session: Session) -> Optional[ev.Event]:
    """The event the session's own facts call for while it waits: failed, completed, or none yet."""
    if session.state not in WAITING:
        return None
    if session.reported_failure:
        return ev.Failed(at=ev.now(), reason=session.reported_failure)
    if is_complete(bool(session.result_urls), session.last_result_seq, session.last_assistant_seq, session.quiet_polls):
        return ev.Completed(at=ev.now(), urls=tuple(session.result_urls))
    return None


def settle(store: Any, session_id: str) -> Session:
    """Record the conclusion the journal already supports (idempotent; safe after a crash)."""
    def decide(session: Session) -> List[ev.Event]:
        event = conclusion(session)
        return [event] if event is not None else []

    return store.record_with(session_id, decide)


class Waiter:
    """Waits on one session and delivers it; :meth:`run` returns the CONTRACT exit code."""

    def __init__(self, store: Any, session_id: str, *, api_key: str, env: Mapping[str, str] = os.environ,
                 settings: Optional[WaitSettings] = None, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 http: Any = None) -> None:
        self.store = store
        self.sid = session_id
        self.api_key = api_key
        self.env = env
        self.settings = settings or WaitSettings.from_env(env)
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self._http = http
        self.prefixes = result_prefixes(env.get("LIBTV_EXTRA_RESULT_PREFIXES"))

    @property
    def http(self) -> Any:
        if self._http is None:
            from libtv_fsm.transport import new_session

            self._http = new_session()
        return self._http

    def record(self, *events: ev.Event) -> Session:
        return self.store.record(self.sid, *events)  # the store keeps the read model (journal/projections.py)

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        claim = self.store.journal.claim_waiter(self.sid, wait=CLAIM_WAIT_SECONDS)
        if not claim.held:
            self.log(f"another waiter is already working on session {self.sid}; nothing to do")
            return EXIT_BUSY
        with claim:
            session = self.store.load(self.sid)
            if session.state == DELIVERED:
                self.log(f"session {self.sid} was already delivered; nothing sent")
                return EXIT_OK
            if session.state == CREATED:
                self.log(f"session {self.sid} was never submitted")
                return EXIT_ERROR
            session = self.record(ev.WaiterStarted(at=ev.now(), pid=os.getpid()))
            if session.state == TIMEOUT:
                session = self.record(ev.Resumed(at=ev.now(), reason="waiter started again"))
            session = settle(self.store, self.sid)
            if session.state in WAITING:
                session = self.wait(session)
            if session.state == COMPLETED:
                return self.deliver(session)
            if session.state == FAILED:
                self.notify(session, "failed", session.failure_message or "")
                return EXIT_FAILED
            if session.state == TIMEOUT:
                self.notify(session, "timeout", "")
                return EXIT_TIMEOUT
            return EXIT_OK if session.state == DELIVERED else EXIT_ERROR

    # -- waiting upstream ----------------------------------------------------------------------

    def wait(self, session: Session) -> Session:
        from libtv_fsm.backends import open_backend

        backend = open_backend(self.api_key, self.env, session=self.http)
        s = self.settings
        started = self.clock()
        polls = 0
        self.log(f"polling session {self.sid} (from seq {session.last_seq}, first interval {s.first_interval:g} s)")
        while True:
            try:
                messages = backend.query_session(self.sid, after_seq=session.last_seq)
            except TransientError as err:
                self.log(f"poll {polls + 1}: transient error, will retry: {err}")
            except PermanentError as err:
                self.log(f"poll {polls + 1}: upstream refused: {err}")
                return self.record(ev.Failed(at=ev.now(), reason=str(err)))
            else:
                session = observe(self.store, self.sid, messages, self.prefixes, "waiter")
                if session.state not in WAITING:
                    self.log(f"session {self.sid} is {session.state} after {polls + 1} poll(s)")
                    return session
            polls += 1
            elapsed = self.clock() - started
            if (s.max_polls is not None and polls >= s.max_polls) or elapsed >= s.timeout_seconds:
                self.log(f"giving up after {polls} poll(s) and {elapsed:.0f} s; the job may still finish upstream")
                return self.record(ev.TimedOut(at=ev.now(), polls=polls, waited_seconds=round(elapsed, 3)))
            self.sleep(min(backoff.delay(polls - 1, s.first_interval, s.max_interval), max(0.0, s.timeout_seconds - elapsed)))

    # -- delivering ----------------------------------------------------------------------------

    def channel(self, session: Session) -> Any:
        from libtv_fsm.channels import get_channel

        assert session.delivery is not None
        return get_channel(session.delivery.channel, self.env, session=self.http)

    def deliver(self, session: Session) -> int:
        if session.delivery is None:
            self.log(f"session {self.sid} completed with {len(session.result_urls)} result(s); no chat to deliver to")
            self.keep_copies(session)
            return EXIT_OK
        from libtv_fsm.channels.base import SendInDoubt
        from libtv_fsm.delivery import deliver_result

        try:
            channel = self.channel(session)
            target = channel.normalize_target(session.delivery.chat_id)
        except LibtvError as err:
            self.log(f"cannot deliver to {session.delivery.channel}: {err}")
            return EXIT_ERROR
        workdir = Path(self.store.home) / "libtv-tmp"
        stuck = False
        for url in session.pending_urls:
            uncertain = False
            in_doubt = session.attempts.get(url, 0)
            if in_doubt and not channel.dedupes:
                # A send started earlier (a crash) and its outcome was never recorded; this
                # platform would show a resend twice.
                if self.reconcile(channel, target, url, resent=in_doubt >= 2):
                    continue
                uncertain = True
            for attempt in range(1, self.settings.delivery_tries + 1):
                self.record(ev.DeliveryAttempted(at=ev.now(), url=url, channel=channel.name, chat_id=target))
                try:
                    outcome = deliver_result(channel, target, self.sid, url, http=self.http, workdir=workdir)
                except TransientError as err:
                    if isinstance(err, SendInDoubt) and not channel.dedupes:
                        # No answer to a send that went out: in doubt, as after a crash.
                        self.log(f"delivery of {url} (try {attempt}): {err}")
                        if self.reconcile(channel, target, url, resent=uncertain):
                            break
                        uncertain = True
                        continue
                    self.record(ev.DeliveryFailed(at=ev.now(), url=url, error=str(err), transient=True))
                    self.log(f"delivery of {url} failed (try {attempt}), will retry: {err}")
                    self.sleep(backoff.delay(attempt - 1, self.settings.first_interval, self.settings.max_interval))
                    continue
                except LibtvError as err:
                    self.record(ev.DeliveryFailed(at=ev.now(), url=url, error=str(err), transient=False))
                    self.log(f"delivery of {url} failed: {err}")
                    break
                self.record(ev.DeliverySucceeded(at=ev.now(), url=url, sent_as=outcome.sent_as,
                                                 message_id=outcome.message_id, uncertain=uncertain))
                self.log(f"delivered {url} as {outcome.sent_as}")
                break
            else:
                stuck = True
        session = self.store.load(self.sid)
        if session.pending_urls or stuck:
            self.log(f"{len(session.pending_urls)} result(s) not delivered; `recover` will try again")
            return EXIT_ERROR
        session = self.record(ev.Delivered(at=ev.now()))
        self.log(f"session {self.sid} delivered ({len(session.result_urls)} result(s))")
        self.keep_copies(session)
        return EXIT_OK

    def reconcile(self, channel: Any, target: str, url: str, resent: bool) -> bool:
        """Settle a send of ``url`` whose outcome is unknown on a platform that does not de-duplicate.

        If the platform shows the message (``find_sent``), it is recorded delivered. If it was
        already resent once, it is recorded delivered but uncertain: never a third send. Else
        False: the caller resends once, marked uncertain.
        """
        from libtv_fsm.delivery import dedupe_key

        found = channel.find_sent(target, dedupe_key(self.sid, url))
        if not found and not resent:
            return False
        self.record(ev.DeliverySucceeded(at=ev.now(), url=url, message_id=found or "",
                                         sent_as="reconciled" if found else "unknown", uncertain=resent or not found))
        self.log(f"{url} was already in the chat ({found}); not sent again" if found
                 else f"{url}: sent twice without an answer; not sending a third time (uncertain)")
        return True

    def notify(self, session: Session, kind: str, detail: str) -> None:
        """Tell the chat once that the session failed or is still generating."""
        if session.delivery is None or kind in session.notices:
            return
        from libtv_fsm.delivery import send_notice

        try:
            channel = self.channel(session)
            target = channel.normalize_target(session.delivery.chat_id)
            outcome = send_notice(channel, target, self.sid, kind, detail)
        except LibtvError as err:
            self.log(f"could not tell the chat about the {kind}: {err}")
            return
        self.record(ev.NoticeSent(at=ev.now(), kind=kind, message_id=outcome.message_id))
        self.log(f"told the chat: {kind}")

    def keep_copies(self, session: Session) -> None:
        """Download the results to LIBTV_DOWNLOAD_DIR as a local copy (best effort, journaled)."""
        from libtv_fsm.backends.download import download

        folder = Path(self.env.get("LIBTV_DOWNLOAD_DIR") or os.path.expanduser("~/Downloads/libtv_results"))
        for index, url in enumerate(session.result_urls, start=1):
            if url in session.downloads:
                continue
            try:
                folder.mkdir(parents=True, exist_ok=True)
                path = download(self.http, url, folder, f"{self.sid}_{index}", self.prefixes)
            except (LibtvError, OSError) as err:
                self.log(f"local copy of {url} failed: {err}")
                self.store.record(self.sid, ev.Downloaded(at=ev.now(), url=url, error=str(err)[:300]))
                continue
            self.store.record(self.sid, ev.Downloaded(at=ev.now(), url=url, path=str(path)))


def stderr_log(session_id: str) -> Callable[[str], None]:
    """Timestamped log lines on stderr (the detached waiter's stderr is its log file)."""
    def log(line: str) -> None:
        print(f"{ev.format_time(ev.now())} [{session_id}] {line}", file=sys.stderr, flush=True)

    return log
