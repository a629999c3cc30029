"""Replay: a session's state and derived fields, rebuilt by feeding its events to the machine.

Pure: no I/O and no clock. The same records always replay to the same ``Session``.
An event that is not valid in the state it arrives in is kept in ``ignored``, not raised.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import attr
from transitions import MachineError

from libtv_fsm import events as ev
from libtv_fsm.machine import CREATED, attached


@attr.frozen
class Entry:
    """One event of a session's timeline, with its journal sequence number."""

    seq: int
    event: Union[ev.Event, ev.UnknownEvent]
    applied: bool = True
    note: str = ""

    @property
    def type(self) -> str:
        e = self.event
        return e.type if isinstance(e, ev.UnknownEvent) else ev.type_tag(type(e))


class Session:
    """Everything the journal says about one session. Build it with :func:`replay`."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.state: str = CREATED
        self.version = 0                      # the last journal seq applied; the next append expects it
        self.turn = 0
        self.project_uuid: Optional[str] = None
        self.project_url: Optional[str] = None
        self.submitted_text = ""
        self.message = ""
        self.auth_mode: Optional[str] = None
        self.delivery: Optional[ev.Delivery] = None
        self.after_seq = 0                    # this turn's submission point
        self.last_seq = 0                     # the highest upstream message seq seen
        self.result_urls: List[str] = []      # this turn's results, in order of first appearance
        self.last_result_seq: Optional[int] = None
        self.last_assistant_seq: Optional[int] = None
        self.polls = 0                        # polls answered this turn
        self.quiet_polls = 0                  # polls in a row that brought no new message
        self.failure_message: Optional[str] = None
        self.reported_failure: Optional[str] = None   # a tool result of this turn said the job failed
        self.created_at: Optional[datetime] = None
        self.updated_at: Optional[datetime] = None
        self.submitted_at: Optional[datetime] = None
        self.completed_at: Optional[datetime] = None
        self.delivered_at: Optional[datetime] = None
        self.timed_out_at: Optional[datetime] = None
        self.delivered: Dict[str, str] = {}   # url -> how it was sent; across turns: never twice
        self.attempts: Dict[str, int] = {}    # url -> attempts started without a recorded outcome
        self.uncertain_deliveries: List[str] = []
        self.delivery_errors: Dict[str, str] = {}
        self.notices: List[str] = []          # notice kinds sent this turn ("failed", "timeout")
        self.downloads: Dict[str, str] = {}   # url -> local path
        self.events: List[Entry] = []
        self.ignored: List[Entry] = []
        self.skipped_lines = 0                # journal lines that could not be read (torn, garbage)
        self.journal_problems: Tuple[str, ...] = ()

    # -- derived views -----------------------------------------------------------------------

    @property
    def pending_urls(self) -> List[str]:
        """This turn's results not yet delivered, in order."""
        return [u for u in self.result_urls if u not in self.delivered]

    @property
    def uncertain_urls(self) -> List[str]:
        """Results whose send started but whose outcome was never recorded (a crash mid-send),
        and results delivered without certainty that the chat shows them only once."""
        in_doubt = [u for u, n in self.attempts.items() if n > 0 and u not in self.delivered]
        return in_doubt + [u for u in self.uncertain_deliveries if u not in in_doubt]

    @property
    def is_final(self) -> bool:
        from libtv_fsm.machine import FINAL_STATES

        return self.state in FINAL_STATES

    def __repr__(self) -> str:
        return f"<Session {self.session_id} {self.state} v{self.version} results={len(self.result_urls)}>"

    # -- machine conditions and the fold (called by transitions) -----------------------------

    def has_results(self, event: ev.Event) -> bool:
        return bool(getattr(event, "urls", ()) or self.result_urls)

    def all_delivered(self, event: ev.Event) -> bool:
        return not self.pending_urls

    def fold(self, event: ev.Event) -> None:
        """Fold an accepted event's data into the derived fields (before the state changes)."""
        handler = _FOLDS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _fold_submitted(self, e: ev.Submitted) -> None:
        self.turn += 1
        self.project_uuid = e.project_uuid
        self.project_url = e.project_url
        self.submitted_text = e.text
        self.message = e.message
        self.auth_mode = e.auth_mode
        if e.delivery is not None or not e.continued:
            self.delivery = e.delivery
        self.after_seq = e.after_seq
        self.last_seq = max(self.last_seq, e.after_seq)
        self.result_urls = []
        self.last_result_seq = self.last_assistant_seq = None
        self.polls = self.quiet_polls = 0
        self.failure_message = self.reported_failure = None
        self.submitted_at = e.at
        self.completed_at = self.delivered_at = self.timed_out_at = None
        self.attempts = {}
        self.delivery_errors = {}
        self.notices = []
        if self.created_at is None:
            self.created_at = e.at

    def _fold_poll(self, e: ev.PollAnswered) -> None:
        self.polls += 1
        if e.last_seq > self.last_seq:
            self.last_seq = e.last_seq
            self.quiet_polls = 0
        else:
            self.quiet_polls += 1
        for url in e.urls:
            if url not in self.result_urls:
                self.result_urls.append(url)
        if e.last_result_seq is not None:
            self.last_result_seq = max(self.last_result_seq or 0, e.last_result_seq)
        if e.last_assistant_seq is not None:
            self.last_assistant_seq = max(self.last_assistant_seq or 0, e.last_assistant_seq)
        if e.failure:
            self.reported_failure = e.failure

    def _fold_completed(self, e: ev.Completed) -> None:
        for url in e.urls:
            if url not in self.result_urls:
                self.result_urls.append(url)
        self.completed_at = e.at

    def _fold_failed(self, e: ev.Failed) -> None:
        self.failure_message = e.reason

    def _fold_timed_out(self, e: ev.TimedOut) -> None:
        self.timed_out_at = e.at

    def _fold_resumed(self, e: ev.Resumed) -> None:
        # Notices stay: the chat hears "still generating" once per turn, however often it resumes.
        self.quiet_polls = 0

    def _fold_attempted(self, e: ev.DeliveryAttempted) -> None:
        self.attempts[e.url] = self.attempts.get(e.url, 0) + 1

    def _fold_succeeded(self, e: ev.DeliverySucceeded) -> None:
        self.delivered.setdefault(e.url, e.sent_as)
        if e.uncertain and e.url not in self.uncertain_deliveries:
            self.uncertain_deliveries.append(e.url)
        self.attempts.pop(e.url, None)
        self.delivery_errors.pop(e.url, None)

    def _fold_delivery_failed(self, e: ev.DeliveryFailed) -> None:
        # A recorded failure is an outcome: the attempt is no longer in doubt.
        self.attempts.pop(e.url, None)
        self.delivery_errors[e.url] = e.error

    def _fold_delivered(self, e: ev.Delivered) -> None:
        self.delivered_at = e.at

    def _fold_notice(self, e: ev.NoticeSent) -> None:
        if e.kind not in self.notices:
            self.notices.append(e.kind)

    def _fold_download(self, e: ev.Downloaded) -> None:
        if e.path:
            self.downloads[e.url] = e.path


_FOLDS: Dict[type, Any] = {
    ev.Submitted: Session._fold_submitted,
    ev.PollAnswered: Session._fold_poll,
    ev.Completed: Session._fold_completed,
    ev.Failed: Session._fold_failed,
    ev.TimedOut: Session._fold_timed_out,
    ev.Resumed: Session._fold_resumed,
    ev.DeliveryAttempted: Session._fold_attempted,
    ev.DeliverySucceeded: Session._fold_succeeded,
    ev.DeliveryFailed: Session._fold_delivery_failed,
    ev.Delivered: Session._fold_delivered,
    ev.NoticeSent: Session._fold_notice,
    ev.Downloaded: Session._fold_download,
}


def apply(session: Session, seq: int, event: Union[ev.Event, ev.UnknownEvent]) -> bool:
    """Apply one event to a session whose model is attached; False (and noted) if it was ignored."""
    session.version = seq
    if isinstance(event, ev.UnknownEvent):
        entry = Entry(seq, event, applied=False, note="unknown event type (newer version?)")
        session.events.append(entry)
        session.ignored.append(entry)
        return False
    state = session.state
    try:
        accepted = bool(session.trigger(event.trigger, event))  # type: ignore[attr-defined]  # transitions adds it on attach
        note = "" if accepted else f"condition not met in state {state}"
    except MachineError:
        accepted, note = False, f"not valid in state {state}"
    entry = Entry(seq, event, applied=accepted, note=note)
    session.events.append(entry)
    if accepted:
        session.updated_at = event.at
    else:
        session.ignored.append(entry)
    return accepted


def may(session: Session, event: ev.Event) -> Tuple[bool, str]:
    """Whether ``event`` would be accepted in the session's current state (conditions included)."""
    with attached(session):
        try:
            ok = getattr(session, "may_" + event.trigger)(event)
        except (AttributeError, MachineError):
            ok = False
    return ok, ("" if ok else f"{ev.type_tag(type(event))} is not valid in state {session.state}")


def replay(
    session_id: str,
    entries: Iterable[Tuple[int, Union[ev.Event, ev.UnknownEvent]]],
    skipped_lines: int = 0,
    problems: Tuple[str, ...] = (),
) -> Session:
    """Rebuild a session from its ``(seq, event)`` entries, in order."""
    session = Session(session_id)
    session.skipped_lines = skipped_lines
    session.journal_problems = tuple(problems)
    with attached(session):
        for seq, event in entries:
            apply(session, seq, event)
    return session
