"""Events round-trip through JSON with a type tag; unknown types from a newer version are kept."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given

from libtv_fsm import events as ev
from eventgen import any_event


@given(any_event)
def test_every_event_round_trips_through_json(event):
    record = json.loads(json.dumps(ev.to_record(event)))
    assert record["type"] == ev.type_tag(type(event))
    assert ev.from_record(record) == event


def test_timestamps_are_iso_8601_utc_with_z():
    at = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone(timedelta(hours=8)))
    record = ev.to_record(ev.Failed(at=at, reason="x"))
    assert record["at"] == "2026-01-01T19:04:05.600000Z"
    assert ev.from_record(record).at == at


def test_unknown_event_type_is_kept_not_fatal():
    record = {"type": "teleported", "at": "2026-01-01T00:00:00Z", "where": "moon"}
    event = ev.from_record(record)
    assert isinstance(event, ev.UnknownEvent)
    assert event.type == "teleported" and event.raw["where"] == "moon"
    assert ev.to_record(event) == record


def test_every_event_class_is_in_the_union():
    assert {ev.type_tag(c) for c in ev.EVENT_TYPES} >= {
        "submitted", "poll_answered", "completed", "failed", "timed_out", "resumed",
        "delivery_attempted", "delivery_succeeded", "delivery_failed", "delivered", "notice_sent",
    }
    for cls in ev.EVENT_TYPES:
        assert cls.trigger, cls
