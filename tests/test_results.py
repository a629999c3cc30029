"""The pure result/completion rule: which URLs are results, in what order, and when a session is done."""
from __future__ import annotations

import json
from typing import List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libtv_fsm.backends.base import Message
from libtv_fsm.results import (
    RESULT_PREFIXES, Batch, is_complete, is_result_url, prose_urls, read_batch, result_prefixes,
)

P = RESULT_PREFIXES
VID = "https://libtv-res.liblib.art/claw/abc/video.mp4"
IMG = "https://libtv-res.liblib.art/sd-gen-save-img/x/1.png"


def tool(seq: int, images=(), videos=(), video_key: str = "previewPath", **extra) -> Message:
    result = {"images": [{"previewPath": u} for u in images], "videos": [{video_key: u} for u in videos]}
    result.update(extra)
    return Message(id=f"m{seq}", seq=seq, role="tool", content=json.dumps({"task_result": result}))


def msg(seq: int, role: str, content: str) -> Message:
    return Message(id=f"m{seq}", seq=seq, role=role, content=content)


# --- which URLs are results --------------------------------------------------------------------

@pytest.mark.parametrize("url", [VID, IMG, "https://libtv-res.liblib.art/claw/a.mp4?x=1#t",
                                 "https://LIBTV-RES.liblib.art/claw/a.mp4"])
def test_result_urls_on_the_result_cdn_are_accepted(url: str) -> None:
    assert is_result_url(url, P)


@pytest.mark.parametrize("url", [
    "https://libtv-res.liblib.art.evil.com/claw/a.mp4",          # look-alike host
    "https://evil-libtv-res.liblib.art/claw/a.mp4",
    "https://libtv-res.liblib.art@evil.com/claw/a.mp4",          # userinfo trick
    "https://evil.com@libtv-res.liblib.art/claw/a.mp4",
    "https://evil.com/?https://libtv-res.liblib.art/claw/a.mp4",
    "https://evil.com#https://libtv-res.liblib.art/claw/a.mp4",
    "http://libtv-res.liblib.art/claw/a.mp4",                    # not https
    "https://libtv-res.liblib.art:8443/claw/a.mp4",              # another port
    "https://libtv-res.liblib.art/other/a.mp4",                  # another path
    "https://libtv-res.liblib.art/clawx/a.mp4",
    "https://libtv-res.liblib.art/claw/",                        # the bare prefix
    "https://libtv-res.liblib.art/claw/../secret",               # dot segments
    "https://libtv-res.liblib.art/claw/%2e%2e/secret",
    "https://libtv-res.liblib.art/claw/a b.mp4",
    "https://libtv-res.liblib.art/claw/a\\..\\b",
    "javascript:alert(1)//libtv-res.liblib.art/claw/",
    "", None, 42,
])
def test_look_alike_and_foreign_urls_are_not_results(url: object) -> None:
    assert not is_result_url(url, P)


def test_extra_prefixes_are_added_only_when_well_formed() -> None:
    extra = result_prefixes("http://127.0.0.1:9/cdn/, ftp://x/y/, http://nohost-slash, ,")
    assert extra == P + ("http://127.0.0.1:9/cdn/",)
    assert is_result_url("http://127.0.0.1:9/cdn/a.mp4", extra)
    assert not is_result_url("http://127.0.0.1:10/cdn/a.mp4", extra)
    assert result_prefixes(None) == P


@pytest.mark.parametrize("text, expected", [
    (f"Done: {VID}.", [VID]),
    (f"视频已生成：{VID}，请查看。", [VID]),
    (f"[video]({VID}) and ({IMG}),", [VID, IMG]),
    (f"\"{VID}\"; '{IMG}'", [VID, IMG]),
    (f"<{VID}>", [VID]),
])
def test_prose_urls_stop_at_punctuation(text: str, expected: List[str]) -> None:
    assert [u for u in prose_urls(text) if is_result_url(u, P)] == expected


# --- read_batch --------------------------------------------------------------------------------

def test_tool_results_images_and_videos_in_order_without_duplicates() -> None:
    batch = read_batch([
        msg(1, "user", f"make it like {VID}"),
        tool(2, images=[IMG], videos=[VID]),
        tool(3, videos=[VID], video_key="url"),
        msg(4, "assistant", f"Here: {VID} and https://www.liblib.tv/canvas?projectId=p"),
    ], 0, P)
    assert batch == Batch(last_seq=4, urls=(IMG, VID), last_result_seq=3, last_assistant_seq=4, failure=None)


def test_user_messages_never_contribute() -> None:
    assert read_batch([msg(1, "user", VID), msg(2, "user", json.dumps({"task_result": {"videos": [{"url": VID}]}}))],
                      0, P).urls == ()


@pytest.mark.parametrize("content", [
    "not json", "", "null", "[]", "{", json.dumps({"task_result": None}),
    json.dumps({"task_result": {"images": None, "videos": "x"}}),
    json.dumps({"task_result": {"images": [None, 3, {"previewPath": None}], "videos": [{"url": 5}]}}),
    json.dumps({"task_result": {"videos": [{"previewPath": "https://evil.com/claw/a.mp4"}]}}),
])
def test_odd_tool_content_is_tolerated_and_yields_nothing(content: str) -> None:
    batch = read_batch([msg(5, "tool", content)], 0, P)
    assert batch.urls == () and batch.last_result_seq is None and batch.last_seq == 5


def test_tool_content_encoded_twice_is_read() -> None:
    inner = json.dumps({"task_result": {"videos": [{"url": VID}]}})
    assert read_batch([msg(1, "tool", json.dumps(inner))], 0, P).urls == (VID,)


def test_a_failed_tool_result_carries_its_text() -> None:
    failed = msg(3, "tool", json.dumps({"task_result": {"status": "failed", "error_message": "Content\npolicy  violation"}}))
    assert read_batch([failed], 0, P).failure == "Content policy violation"
    bare = msg(4, "tool", json.dumps({"task_result": {"error": "quota"}}))
    assert read_batch([bare], 0, P).failure == "quota"
    nameless = msg(5, "tool", json.dumps({"task_result": {"status": "error"}}))
    assert read_batch([nameless], 0, P).failure == "Generation failed"


def test_an_error_field_beside_results_is_not_a_failure() -> None:
    assert read_batch([tool(1, videos=[VID], error="partial")], 0, P).failure is None


def test_empty_poll_keeps_the_submission_point() -> None:
    assert read_batch([], 7, P) == Batch(last_seq=7, urls=(), last_result_seq=None, last_assistant_seq=None, failure=None)


def test_earlier_turns_results_are_never_delivered_again() -> None:
    old = [tool(1, videos=[VID]), msg(2, "assistant", f"done {VID}"), msg(3, "user", "again")]
    new_url = "https://libtv-res.liblib.art/claw/new.mp4"
    batch = read_batch(old + [tool(4, videos=[VID, new_url])], 3, P)
    # VID appeared before the submission point, but the new turn's tool result names it again;
    # it is in this turn's result set (the waiter's journal de-duplicates deliveries).
    assert batch.urls == (VID, new_url)
    assert read_batch(old, 3, P).urls == ()


# Properties over generated conversations.
_URLS = st.sampled_from([VID, IMG, "https://libtv-res.liblib.art/claw/2.mp4", "https://evil.com/claw/x.mp4",
                         "https://libtv-res.liblib.art.evil.com/claw/y.mp4", "http://libtv-res.liblib.art/claw/z.mp4"])


@st.composite
def conversations(draw: st.DrawFn) -> List[Message]:
    n = draw(st.integers(0, 12))
    seqs = sorted(draw(st.sets(st.integers(0, 100), min_size=n, max_size=n)))
    out = []
    for seq in seqs:
        role = draw(st.sampled_from(["user", "assistant", "tool"]))
        urls = draw(st.lists(_URLS, max_size=3))
        if role == "tool":
            out.append(tool(seq, images=urls[:1], videos=urls[1:], video_key=draw(st.sampled_from(["previewPath", "url"]))))
        else:
            out.append(msg(seq, role, " and ".join(f"see {u}." for u in urls)))
    return out


def _expected(messages: List[Message], after: int) -> List[str]:
    seen: List[str] = []
    for m in messages:
        if m.seq > after and m.role != "user":
            for u in prose_urls(m.content) if m.role == "assistant" else [
                    x.get("previewPath") or x.get("url")
                    for k in ("images", "videos") for x in json.loads(m.content)["task_result"][k]]:
                if is_result_url(u, P) and u not in seen:
                    seen.append(u)
    return seen


@settings(max_examples=300, deadline=None)
@given(conversations(), st.integers(-1, 100), st.randoms())
def test_read_batch_properties(messages: List[Message], after: int, rnd) -> None:
    shuffled = list(messages)
    rnd.shuffle(shuffled)  # upstream order must not matter: seq decides
    batch = read_batch(shuffled, after, P)
    assert list(batch.urls) == _expected(messages, after)            # order of first appearance
    assert len(set(batch.urls)) == len(batch.urls)                   # no duplicates
    assert all(is_result_url(u, P) for u in batch.urls)              # only allowed prefixes
    old = {u for m in messages if m.seq <= after for u in _expected([m], -1)}
    new = {u for m in messages if m.seq > after for u in _expected([m], -1)}
    assert not (set(batch.urls) & (old - new))                       # nothing only from seq <= after_seq
    assert batch.last_seq == max([after] + [m.seq for m in messages])
    for marker in (batch.last_result_seq, batch.last_assistant_seq):
        assert marker is None or marker > after


# --- completion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("has_urls, last_result, last_assistant, quiet, complete", [
    (False, None, None, 0, False),   # nothing yet
    (False, None, 9, 5, False),      # an answer without results is never complete
    (True, 5, None, 0, False),       # a clip, no answer yet: maybe intermediate
    (True, 5, 4, 0, False),          # the answer came before the last clip
    (True, 5, 5, 1, False),
    (True, 5, 6, 0, True),           # an answer follows the last result
    (True, 5, None, 1, False),       # one quiet poll is not enough
    (True, 5, None, 2, True),        # two quiet polls are
    (True, 5, 4, 3, True),
    (True, None, 6, 0, True),        # results only in the answer's prose
])
def test_completion_rule(has_urls: bool, last_result: Optional[int], last_assistant: Optional[int],
                         quiet: int, complete: bool) -> None:
    assert is_complete(has_urls, last_result, last_assistant, quiet) is complete


def test_results_rule_is_pure() -> None:
    import subprocess
    import sys

    code = ("import sys, libtv_fsm.results; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'socket', 'libtv_fsm.transport')]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
