"""Events round-trip through JSON with a type tag; unknown types from a newer version are kept."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
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


@given(any_event)
def test_records_are_exactly_the_converters_without_importing_cattrs(event):
    # to_record/from_record skip cattrs for well-formed events (create-session must not pay for
    # importing it); what they give must be the converter's, key order included.
    conv = ev.get_converter()
    record = ev.to_record(event)
    expected = conv.unstructure(event, ev.AnyEvent)
    assert record == expected and list(record) == list(expected)
    parsed = json.loads(json.dumps(record))
    got, want = ev.from_record(parsed), conv.structure(parsed, ev.AnyEvent)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("change", [
    {"reason": 5},  # a number where text belongs: the converter makes it "5"
    {"reason": None},
    {"at": "yesterday"},
    {"at": 1700000000},
    {"type": "submitted"},  # required fields missing
    {"type": "submitted", "project_uuid": "p", "project_url": "u", "text": "t", "message": "m", "auth_mode": "a",
     "delivery": {"channel": "feishu"}},
    {"type": "poll_answered", "after_seq": 1, "last_seq": True, "new_messages": 0},
    {"type": "completed", "urls": "https://x/1.mp4"},
    {"type": "completed", "urls": [1, 2]},
    {"type": "timed_out", "polls": 3, "waited_seconds": 12},
    {"type": None},
    {"type": "teleported", "where": "moon"},
])
def test_records_not_as_to_record_writes_them_are_read_as_the_converter_reads_them(change):
    record = {"type": "failed", "at": "2026-01-01T00:00:00.000000Z", "reason": "x", **change}
    try:
        want = ev.get_converter().structure(dict(record), ev.AnyEvent)
    except Exception as err:  # whatever the converter raises, from_record must raise alike
        with pytest.raises(type(err)) as raised:
            ev.from_record(dict(record))
        assert str(raised.value) == str(err)
    else:
        got = ev.from_record(dict(record))
        assert got == want and type(got) is type(want)
