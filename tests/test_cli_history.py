"""`history`: the replayed timeline of one session, through every entry point."""
from __future__ import annotations

from libtv_fsm import SessionStore
from libtv_fsm import events as ev
from eventgen import T0, URLS
from test_replay import submitted


def _delivered_session(home):
    store = SessionStore(home)
    store.record("sess-1", submitted(after_seq=1), ev.PollAnswered(at=T0, after_seq=1, last_seq=3, new_messages=2, urls=(URLS[0],)),
                 ev.Completed(at=T0, urls=(URLS[0],)), ev.DeliverySucceeded(at=T0, url=URLS[0], sent_as="video"), ev.Delivered(at=T0))
    return store


def test_history_json_shows_the_timeline(any_cli, home):
    store = _delivered_session(home)
    ran = any_cli("history", "sess-1", "--json")
    assert ran.code == 0, ran
    doc = ran.json()
    assert doc["session_id"] == "sess-1" and doc["state"] == "delivered"
    assert doc["journal"] == store.journal.location("sess-1") and doc["journal"].startswith("/")
    assert [e["type"] for e in doc["events"]] == ["submitted", "poll_answered", "completed", "delivery_succeeded", "delivered"]
    assert all(e["at"].endswith("Z") for e in doc["events"])
    assert doc["delivery"] == {"channel": "feishu", "chat_id": "oc_group"}


def test_history_human_lines_report_skipped_garbage(cli, home):
    store = _delivered_session(home)
    with open(store.journal.location("sess-1"), "a") as fh:
        fh.write("garbage\n")
    ran = cli("history", "sess-1")
    assert ran.code == 0, ran
    assert "delivered" in ran.lines[0] and any("delivery_succeeded" in line for line in ran.lines)
    assert "1 unreadable journal line(s) skipped" in ran.out


def test_history_of_an_unknown_or_hostile_session_is_one_clear_line(cli):
    for sid, words in (("nope", "Unknown session"), ("../etc", "Invalid session id")):
        ran = cli("history", sid)
        assert ran.code != 0 and ran.lines[-1].startswith("❌ ") and words in ran.out, ran
        assert "Traceback" not in ran.err
