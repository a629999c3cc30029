"""What can happen to a session: one frozen attrs class per event, and the converter that stores them.

Pure: no I/O, no clock. Every event carries the time it happened (``at``, UTC) as given by
its caller. Adding an event is adding a class here and listing it in ``EVENT_TYPES``.
An event's ``type`` tag is its snake_case name; ``trigger`` names the machine trigger it
fires (see ``machine.py``).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union

import attr
import cattrs
from cattrs.strategies import configure_tagged_union


@attr.frozen
class Delivery:
    """Where a session's results go: a chat channel and the chat (or user) id in it."""

    channel: str
    chat_id: str


@attr.frozen(kw_only=True)
class Event:
    """Base of every event; ``at`` is when it happened (timezone-aware UTC)."""

    trigger: ClassVar[str] = ""
    at: datetime


# -- the job upstream ---------------------------------------------------------------------------


@attr.frozen(kw_only=True)
class Submitted(Event):
    """A message was accepted upstream: a new session, or a new turn of an existing one.

    ``after_seq`` is the submission point: only messages with a higher ``seq`` belong to
    this turn, so an earlier turn's results are never taken for this one's.
    """

    trigger: ClassVar[str] = "submit"
    project_uuid: str
    project_url: str
    text: str
    message: str
    auth_mode: str
    after_seq: int = 0
    delivery: Optional[Delivery] = None
    continued: bool = False


@attr.frozen(kw_only=True)
class PollAnswered(Event):
    """Upstream answered one poll; what the new messages said (results only, not the prose)."""

    trigger: ClassVar[str] = "poll"
    after_seq: int
    last_seq: int
    new_messages: int
    urls: Tuple[str, ...] = ()
    last_result_seq: Optional[int] = None
    last_assistant_seq: Optional[int] = None
    failure: Optional[str] = None
    source: str = "waiter"


@attr.frozen(kw_only=True)
class Completed(Event):
    """The completion rule held: ``urls`` are this turn's results, in order."""

    trigger: ClassVar[str] = "complete"
    urls: Tuple[str, ...]


@attr.frozen(kw_only=True)
class Failed(Event):
    """Upstream said the job failed (or refused it); ``reason`` is its text, verbatim."""

    trigger: ClassVar[str] = "fail"
    reason: str


@attr.frozen(kw_only=True)
class TimedOut(Event):
    """The waiter gave up waiting; the job may still finish upstream."""

    trigger: ClassVar[str] = "time_out"
    polls: int = 0
    waited_seconds: float = 0.0


@attr.frozen(kw_only=True)
class Resumed(Event):
    """A timed-out session is being waited on again (recover, wait-and-deliver)."""

    trigger: ClassVar[str] = "resume"
    reason: str = ""


# -- delivery to the chat -----------------------------------------------------------------------


@attr.frozen(kw_only=True)
class DeliveryAttempted(Event):
    """About to send ``url`` to the chat; written before the call so a crash leaves a trace."""

    trigger: ClassVar[str] = "attempt"
    url: str
    channel: str
    chat_id: str


@attr.frozen(kw_only=True)
class DeliverySucceeded(Event):
    """``url`` reached the chat, as a video, an image or a text link."""

    trigger: ClassVar[str] = "record_delivery"
    url: str
    sent_as: str
    message_id: str = ""
    # True when the chat may show it twice: a resend after a crash on a platform that does not
    # de-duplicate, or a give-up after two sends whose outcome was never recorded.
    uncertain: bool = False


@attr.frozen(kw_only=True)
class DeliveryFailed(Event):
    """Sending ``url`` failed; ``transient`` failures are tried again, others need a human."""

    trigger: ClassVar[str] = "record_delivery_failure"
    url: str
    error: str
    transient: bool = True


@attr.frozen(kw_only=True)
class Delivered(Event):
    """Every result of the turn reached the chat (or there was no chat to send to)."""

    trigger: ClassVar[str] = "deliver"
    note: str = ""


@attr.frozen(kw_only=True)
class NoticeSent(Event):
    """The chat was told the session ``failed`` or hit ``timeout`` (once per turn and kind)."""

    trigger: ClassVar[str] = "notify"
    kind: str
    message_id: str = ""


# -- local side effects and bookkeeping ------------------------------------------------------


@attr.frozen(kw_only=True)
class Downloaded(Event):
    """A local copy of a result was saved (best effort)."""

    trigger: ClassVar[str] = "note_download"
    url: str
    path: str = ""
    error: str = ""


@attr.frozen(kw_only=True)
class WaiterStarted(Event):
    """A background waiter took the session's run lock (audit only)."""

    trigger: ClassVar[str] = "note_waiter"
    pid: int = 0
    # The runner's host (a queue worker may run anywhere); empty for a local waiter.
    host: str = ""


@attr.frozen(kw_only=True)
class UnknownEvent:
    """A journal line whose ``type`` this version does not know (written by a newer one): kept, skipped."""

    trigger: ClassVar[str] = ""
    type: str
    raw: Dict[str, Any]

    @property
    def at(self) -> Optional[datetime]:
        try:
            return parse_time(self.raw["at"])
        except (KeyError, TypeError, ValueError):
            return None


EVENT_TYPES: Tuple[Type[Event], ...] = (
    Submitted, PollAnswered, Completed, Failed, TimedOut, Resumed,
    DeliveryAttempted, DeliverySucceeded, DeliveryFailed, Delivered, NoticeSent,
    Downloaded, WaiterStarted,
)
AnyEvent = Union[
    Submitted, PollAnswered, Completed, Failed, TimedOut, Resumed,
    DeliveryAttempted, DeliverySucceeded, DeliveryFailed, Delivered, NoticeSent,
    Downloaded, WaiterStarted,
]


def type_tag(cls: type) -> str:
    """``DeliverySucceeded`` -> ``delivery_succeeded``: the ``type`` written to the journal."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: Any) -> datetime:
    """The inverse of :func:`format_time` (Python 3.9's fromisoformat does not take ``Z``)."""
    if not isinstance(text, str):
        raise ValueError(f"not a timestamp: {text!r}")
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, format_time)
    conv.register_structure_hook(datetime, lambda value, _: parse_time(value))
    conv.register_structure_hook(UnknownEvent, lambda value, _: UnknownEvent(type=str(value.get("type")), raw=dict(value)))
    configure_tagged_union(AnyEvent, conv, tag_generator=type_tag, tag_name="type", default=UnknownEvent)
    return conv


converter = _make_converter()


def to_record(event: Event) -> Dict[str, Any]:
    """The JSON-ready dict of an event, with its ``type`` tag."""
    if isinstance(event, UnknownEvent):
        return dict(event.raw)
    record: Dict[str, Any] = converter.unstructure(event, AnyEvent)
    return record


def from_record(record: Dict[str, Any]) -> Union[Event, UnknownEvent]:
    """An event from its dict; an unknown ``type`` gives an UnknownEvent; a malformed known one raises."""
    return converter.structure(record, AnyEvent)  # type: ignore[arg-type]  # a Union is a valid cattrs target


def now() -> datetime:
    """The current time in UTC: the clock the edges pass into events."""
    return datetime.now(timezone.utc)
