"""Hypothesis strategies for session events, shared by the replay and journal tests."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from libtv_fsm import events as ev

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
URLS = [f"https://libtv-res.liblib.art/claw/{i}.mp4" for i in range(4)]

times = st.integers(min_value=0, max_value=10_000).map(lambda s: T0 + timedelta(seconds=s))
urls = st.sampled_from(URLS)
text = st.text(max_size=30)
delivery = st.none() | st.builds(ev.Delivery, channel=st.just("feishu"), chat_id=st.sampled_from(["oc_group", "ou_user"]))

submitted = st.builds(
    ev.Submitted, at=times, project_uuid=st.uuids().map(str), project_url=st.just("https://www.liblib.tv/canvas?projectId=x"),
    text=text, message=text, auth_mode=st.sampled_from(["nexu_gateway", "libtv_direct"]),
    after_seq=st.integers(0, 50), delivery=delivery, continued=st.booleans(),
)
poll = st.builds(
    ev.PollAnswered, at=times, after_seq=st.integers(0, 50), last_seq=st.integers(0, 60), new_messages=st.integers(0, 5),
    urls=st.lists(urls, max_size=3).map(tuple), last_result_seq=st.none() | st.integers(0, 60),
    last_assistant_seq=st.none() | st.integers(0, 60), failure=st.none() | text,
)
any_event = st.one_of(
    submitted,
    poll,
    st.builds(ev.Completed, at=times, urls=st.lists(urls, max_size=3).map(tuple)),
    st.builds(ev.Failed, at=times, reason=text),
    st.builds(ev.TimedOut, at=times, polls=st.integers(0, 100), waited_seconds=st.floats(0, 4000, allow_nan=False)),
    st.builds(ev.Resumed, at=times, reason=text),
    st.builds(ev.DeliveryAttempted, at=times, url=urls, channel=st.just("feishu"), chat_id=st.just("oc_group")),
    st.builds(ev.DeliverySucceeded, at=times, url=urls, sent_as=st.sampled_from(["video", "image", "text"]), message_id=text,
              uncertain=st.booleans()),
    st.builds(ev.DeliveryFailed, at=times, url=urls, error=text, transient=st.booleans()),
    st.builds(ev.Delivered, at=times),
    st.builds(ev.NoticeSent, at=times, kind=st.sampled_from(["failed", "timeout"])),
    st.builds(ev.Downloaded, at=times, url=urls, path=text),
    st.builds(ev.WaiterStarted, at=times, pid=st.integers(1, 99999)),
)
event_lists = st.lists(any_event, max_size=25)
