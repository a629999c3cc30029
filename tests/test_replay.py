"""Replay: the machine of CONTRACT section 5, deterministic, tolerant of events out of place."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libtv_fsm import events as ev
from libtv_fsm.machine import STATES
from libtv_fsm.replay import may, replay
from libtv_fsm.timeline import session_view
from eventgen import T0, URLS, any_event, event_lists

A, B = URLS[0], URLS[1]


def submitted(after_seq=0, continued=False, chat="oc_group"):
    return ev.Submitted(at=T0, project_uuid="p1", project_url="https://www.liblib.tv/canvas?projectId=p1",
                        text="a cat", message="a cat, video ratio 16:9", auth_mode="nexu_gateway",
                        after_seq=after_seq, delivery=ev.Delivery("feishu", chat) if chat else None, continued=continued)


def run(*events):
    return replay("s1", list(enumerate(events, start=1)))


def fingerprint(session):
    return (session_view(session), session.state, session.version, dict(session.delivered), dict(session.attempts),
            [(e.seq, e.applied, e.note) for e in session.events], session.quiet_polls, session.polls)


@given(event_lists)
def test_replaying_the_same_events_twice_gives_the_same_session(events):
    entries = list(enumerate(events, start=1))
    assert fingerprint(replay("s", entries)) == fingerprint(replay("s", entries))


@given(event_lists)
def test_replay_never_raises_and_state_is_always_a_contract_state(events):
    session = replay("s", list(enumerate(events, start=1)))
    assert session.state in STATES
    assert len(session.events) == len(events)
    assert [e for e in session.events if not e.applied] == session.ignored
    assert session.version == len(events)


@settings(max_examples=200)
@given(st.lists(any_event, max_size=40))
def test_a_walk_of_only_accepted_events_replays_with_nothing_ignored(candidates):
    # Build a valid history by keeping only the candidates the machine accepts at each step.
    kept = []
    for event in candidates:
        probe = replay("s", list(enumerate(kept, start=1)))
        if may(probe, event)[0]:
            kept.append(event)
    session = replay("s", list(enumerate(kept, start=1)))
    assert session.ignored == []
    if session.state == "delivered":
        assert all(u in session.delivered for u in session.result_urls)


def test_happy_path_ends_delivered_with_every_result_once():
    s = run(
        submitted(after_seq=1),
        ev.PollAnswered(at=T0, after_seq=1, last_seq=1, new_messages=0),
        ev.PollAnswered(at=T0, after_seq=1, last_seq=4, new_messages=3, urls=(A, B, A), last_result_seq=3, last_assistant_seq=4),
        ev.Completed(at=T0, urls=(A, B)),
        ev.DeliverySucceeded(at=T0, url=A, sent_as="video"),
        ev.DeliverySucceeded(at=T0, url=B, sent_as="image"),
        ev.Delivered(at=T0),
    )
    assert s.state == "delivered" and s.result_urls == [A, B] and s.pending_urls == []
    assert s.delivered_at == T0 and s.ignored == []


def test_delivered_is_refused_while_a_result_is_still_undelivered():
    s = run(submitted(), ev.Completed(at=T0, urls=(A, B)), ev.DeliverySucceeded(at=T0, url=A, sent_as="video"), ev.Delivered(at=T0))
    assert s.state == "completed" and s.pending_urls == [B]
    assert "condition" in s.ignored[0].note


def test_final_states_refuse_everything_but_a_new_turn():
    s = run(submitted(), ev.Failed(at=T0, reason="policy"), ev.Completed(at=T0, urls=(A,)), ev.TimedOut(at=T0))
    assert s.state == "failed" and s.failure_message == "policy" and len(s.ignored) == 2


def test_a_continued_turn_starts_clean_and_never_redelivers_an_earlier_result():
    s = run(
        submitted(), ev.Completed(at=T0, urls=(A,)), ev.DeliverySucceeded(at=T0, url=A, sent_as="video"), ev.Delivered(at=T0),
        submitted(after_seq=5, continued=True, chat=None),
    )
    assert s.state == "submitted" and s.turn == 2 and s.result_urls == [] and s.after_seq == 5
    assert s.delivery == ev.Delivery("feishu", "oc_group")  # the chat carries over to the next turn
    assert A in s.delivered and s.delivered_at is None


def test_a_new_turn_is_refused_while_the_last_one_is_still_generating():
    s = run(submitted(), ev.PollAnswered(at=T0, after_seq=0, last_seq=1, new_messages=1))
    assert may(s, submitted(after_seq=1, continued=True))[0] is False


def test_quiet_polls_count_polls_in_a_row_without_new_messages():
    s = run(
        submitted(after_seq=1),
        ev.PollAnswered(at=T0, after_seq=1, last_seq=3, new_messages=2, urls=(A,)),
        ev.PollAnswered(at=T0, after_seq=3, last_seq=3, new_messages=0),
        ev.PollAnswered(at=T0, after_seq=3, last_seq=3, new_messages=0),
    )
    assert s.quiet_polls == 2 and s.polls == 3


def test_timeout_then_resume_then_deliver():
    s = run(submitted(), ev.TimedOut(at=T0, polls=3), ev.NoticeSent(at=T0, kind="timeout"), ev.Resumed(at=T0),
            ev.Completed(at=T0, urls=(A,)), ev.DeliverySucceeded(at=T0, url=A, sent_as="video"), ev.Delivered(at=T0))
    assert s.state == "delivered" and s.ignored == []


def test_an_attempt_without_outcome_is_uncertain_until_recorded():
    s = run(submitted(), ev.Completed(at=T0, urls=(A,)), ev.DeliveryAttempted(at=T0, url=A, channel="feishu", chat_id="oc_group"))
    assert s.uncertain_urls == [A]
    s2 = run(*[e.event for e in s.events], ev.DeliverySucceeded(at=T0, url=A, sent_as="video"))
    assert s2.uncertain_urls == []


def test_unknown_events_are_kept_in_the_timeline_and_skipped():
    unknown = ev.UnknownEvent(type="teleported", raw={"type": "teleported", "at": "2026-01-01T00:00:00Z"})
    s = run(submitted(), unknown, ev.Failed(at=T0, reason="x"))
    assert s.state == "failed" and s.events[1].applied is False and "unknown" in s.events[1].note
