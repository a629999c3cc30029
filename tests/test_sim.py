"""The loopback simulator answers like the real upstreams (CONTRACT section 2), with faults on demand."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Dict, List, Optional

import pytest
import requests
from requests_toolbelt import MultipartEncoder

from libtv_fsm.sim import Scenario, Simulator

MIB = 1024 * 1024


class Zeros:
    """A file-like of n zero bytes that never exists in memory at once."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pos = 0

    def read(self, size: int = -1) -> bytes:
        size = self.n - self.pos if size < 0 else size
        size = min(size, self.n - self.pos, MIB)
        self.pos += size
        return b"\0" * size

    def __len__(self) -> int:
        return self.n - self.pos


def gw(sim: Simulator, key: Optional[str] = None) -> Dict[str, str]:
    return {"X-API-KEY": key or sim.GATEWAY_KEY}


def dk(sim: Simulator, key: Optional[str] = None) -> Dict[str, str]:
    return {"Authorization": f"Bearer {key or sim.DIRECT_KEY}"}


def create(sim: Simulator, message: str = "a cat", **extra: Any) -> Dict[str, Any]:
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": message, **extra}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def poll(sim: Simulator, sid: str, after: Optional[int] = None) -> List[Dict[str, Any]]:
    params = {"afterSeq": after} if after is not None else None
    r = requests.get(f"{sim.url}/libtv/v1/session/{sid}", headers=gw(sim), params=params, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def urls_in(messages: List[Dict[str, Any]]) -> List[str]:
    out = []
    for m in messages:
        if m["role"] == "tool":
            result = json.loads(m["content"]).get("task_result", {})
            for item in result.get("images", []) + result.get("videos", []):
                out.append(item.get("previewPath") or item.get("url"))
    return out


def feishu_token(sim: Simulator) -> Dict[str, str]:
    r = requests.post(f"{sim.url}/open-apis/auth/v3/tenant_access_token/internal",
                      json={"app_id": sim.FEISHU_APP_ID, "app_secret": sim.FEISHU_APP_SECRET}, timeout=5)
    return {"Authorization": f"Bearer {r.json()['tenant_access_token']}"}


def feishu_upload(sim: Simulator, auth: Dict[str, str], size: int, kind: str = "file", file_type: str = "mp4") -> requests.Response:
    if kind == "file":
        fields: Dict[str, Any] = {"file_type": file_type, "file_name": f"a.{file_type}", "file": ("a.mp4", Zeros(size), "video/mp4")}
        path = "/open-apis/im/v1/files"
    else:
        fields = {"image_type": "message", "image": ("a.png", Zeros(size), "image/png")}
        path = "/open-apis/im/v1/images"
    enc = MultipartEncoder(fields)
    return requests.post(sim.url + path, data=enc, headers={**auth, "Content-Type": enc.content_type}, timeout=30)


def feishu_send(sim: Simulator, auth: Dict[str, str], receive_id: str, msg_type: str, content: Any,
                id_type: str = "chat_id", uuid: Optional[str] = None) -> requests.Response:
    body: Dict[str, Any] = {"receive_id": receive_id, "msg_type": msg_type,
                            "content": content if isinstance(content, str) else json.dumps(content)}
    if uuid:
        body["uuid"] = uuid
    return requests.post(f"{sim.url}/open-apis/im/v1/messages", params={"receive_id_type": id_type},
                         headers=auth, json=body, timeout=5)


# -- server, env, recording -------------------------------------------------------------------

def test_env_points_every_upstream_at_the_simulator(sim: Simulator) -> None:
    env = sim.env()
    assert env["LIBTV_GATEWAY_URL"] == sim.url + "/"
    assert env["LIBTV_DIRECT_BASE_URL"] == env["LIBTV_FEISHU_BASE_URL"] == sim.url
    assert env["LIBTV_EXTRA_RESULT_PREFIXES"] == sim.url + "/cdn/"
    assert env["FEISHU_APP_ID"] == sim.FEISHU_APP_ID and env["FEISHU_APP_SECRET"] == sim.FEISHU_APP_SECRET
    assert sim.url.startswith("http://127.0.0.1:") and sim.cdn_url("a/b.mp4") == sim.url + "/cdn/a/b.mp4"


def test_every_request_is_recorded_with_its_body(sim: Simulator) -> None:
    create(sim, "hello")
    requests.get(f"{sim.url}/api/v1/key/status", headers=gw(sim), params={"x": "1"}, timeout=5)
    posts = sim.requests_to("/libtv/v1/session")
    assert len(posts) == 1 and posts[0].method == "POST" and posts[0].json == {"message": "hello"}
    assert posts[0].headers["X-Api-Key"] == sim.GATEWAY_KEY and posts[0].status == 200
    status = sim.requests_to("/api/v1/key/status")[0]
    assert status.query == {"x": "1"} and status.body_size == 0 and status.at > 0


def test_paths_with_a_double_slash_are_not_found(sim: Simulator) -> None:
    import http.client

    # Raw HTTP: requests before 2.33 collapses a leading "//" before sending it.
    conn = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    try:
        conn.request("GET", "//api/v1/key/status", headers=gw(sim))
        assert conn.getresponse().status == 404
    finally:
        conn.close()


def test_stop_cuts_pooled_connections_and_start_comes_back_on_the_same_port() -> None:
    client = requests.Session()
    with Simulator() as one:
        url = one.url
        assert client.get(url + "/api/v1/key/status", headers=gw(one), timeout=5).ok
    with pytest.raises(requests.ConnectionError):
        client.get(url + "/api/v1/key/status", headers=gw(one), timeout=2)
    one.start()
    try:
        assert one.url == url and client.get(url + "/api/v1/key/status", headers=gw(one), timeout=5).ok
    finally:
        one.stop()
        client.close()


# -- keys and auth ----------------------------------------------------------------------------

def test_any_key_with_the_right_prefix_has_ten_uses(sim: Simulator) -> None:
    r = requests.get(f"{sim.url}/api/v1/key/status", headers=gw(sim, "mgk_anything"), timeout=5)
    assert r.json() == {"remaining_uses": 10, "max_uses": 10, "expires_at": None}


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": "sk-libtv-x"}, {"Authorization": "Bearer mgk_x"}])
def test_gateway_refuses_a_missing_or_wrong_key_header(sim: Simulator, headers: Dict[str, str]) -> None:
    r = requests.get(f"{sim.url}/api/v1/key/status", headers=headers, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["user_message"] == "Invalid API Key"


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": "sk-libtv-x"}, {"Authorization": "Bearer mgk_x"}])
def test_direct_refuses_a_missing_or_wrong_key_header(sim: Simulator, headers: Dict[str, str]) -> None:
    r = requests.post(f"{sim.url}/openapi/session", headers=headers, json={}, timeout=5)
    assert r.status_code == 401 and r.json()["code"] != 0 and r.json()["message"] == "Invalid API Key"


@pytest.mark.parametrize("error,status,message", [
    ("invalid", 401, "Invalid API Key"), ("exhausted", 403, "Free trial uses exhausted"),
    ("expired", 403, "Key expired"), ("unavailable", 503, "Service temporarily unavailable"),
])
def test_key_errors_carry_the_contract_messages(sim: Simulator, error: str, status: int, message: str) -> None:
    sim.set_key(sim.GATEWAY_KEY, error=error)
    sim.set_key(sim.DIRECT_KEY, error=error)
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": "x"}, timeout=5)
    assert r.status_code == status and r.json()["error"]["user_message"] == message
    d = requests.post(f"{sim.url}/openapi/session", headers=dk(sim), json={"message": "x"}, timeout=5)
    assert d.json()["code"] != 0 and d.json()["message"] == message


def test_each_gateway_message_uses_one_and_then_the_trial_is_exhausted(sim: Simulator) -> None:
    sim.set_key(sim.GATEWAY_KEY, remaining_uses=1, max_uses=3, expires_at="2030-01-01T00:00:00Z")
    sid = create(sim, "one")["sessionId"]
    status = requests.get(f"{sim.url}/api/v1/key/status", headers=gw(sim), timeout=5).json()
    assert status == {"remaining_uses": 0, "max_uses": 3, "expires_at": "2030-01-01T00:00:00Z"}
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": "two", "sessionId": sid}, timeout=5)
    assert r.status_code == 403 and r.json()["error"]["user_message"] == "Free trial uses exhausted"


# -- sessions ---------------------------------------------------------------------------------

def test_create_session_answers_ids_and_the_canvas_url(sim: Simulator) -> None:
    data = create(sim)
    assert data["sessionId"].startswith("sim-") and data["sessionId"] in sim.sessions
    assert data["projectUrl"] == "https://www.liblib.tv/canvas?projectId=" + data["projectUuid"]
    assert create(sim)["projectUuid"] == data["projectUuid"]  # same project until change-project
    r = requests.post(f"{sim.url}/libtv/v1/session/change-project", headers=gw(sim), json={}, timeout=5)
    assert r.status_code == 200 and r.json()["projectUuid"] != data["projectUuid"]
    assert create(sim)["projectUuid"] == r.json()["projectUuid"]


def test_direct_api_wraps_every_body(sim: Simulator) -> None:
    r = requests.post(f"{sim.url}/openapi/session", headers=dk(sim), json={"message": "a dog"}, timeout=5).json()
    assert r["code"] == 0 and r["message"] == "success" and set(r["data"]) == {"sessionId", "projectUuid"}
    sid = r["data"]["sessionId"]
    for _ in range(2):
        p = requests.get(f"{sim.url}/openapi/session/{sid}", headers=dk(sim), params={"afterSeq": 1}, timeout=5).json()
    assert p["code"] == 0 and urls_in(p["data"]["messages"])
    c = requests.post(f"{sim.url}/openapi/session/change-project", headers=dk(sim), json={}, timeout=5).json()
    assert c["code"] == 0 and c["data"]["projectUuid"] != r["data"]["projectUuid"]


def test_results_appear_after_the_configured_polls(sim: Simulator) -> None:
    sim.default_scenario = Scenario(polls_before_result=2)
    sid = create(sim)["sessionId"]
    first = poll(sim, sid)
    assert [m["role"] for m in first] == ["user"] and first[0]["content"] == "a cat"
    user_seq = first[0]["seq"]
    assert poll(sim, sid, user_seq) == []
    msgs = poll(sim, sid, user_seq)
    assert [m["role"] for m in msgs] == ["tool", "assistant"]
    assert all({"id", "seq", "role", "content"} <= set(m) for m in msgs)
    assert [m["seq"] for m in msgs] == [user_seq + 1, user_seq + 2]
    url = urls_in(msgs)[0]
    assert url == sim.cdn_url(f"{sid}/1.mp4")
    assert url in msgs[1]["content"] and "https://example.com/help" in msgs[1]["content"]
    assert poll(sim, sid, msgs[-1]["seq"]) == []
    r = requests.get(f"{sim.url}/libtv/v1/session/{sid}/results", headers=gw(sim), timeout=5)
    assert r.json() == {"urls": [url]}
    assert sim.sessions[sid].polls == 4


def test_after_seq_returns_only_newer_messages(sim: Simulator) -> None:
    sid = create(sim)["sessionId"]
    poll(sim, sid)
    everything = poll(sim, sid)
    assert [m["seq"] for m in everything] == [1, 2, 3]
    assert [m["seq"] for m in poll(sim, sid, 2)] == [3]
    assert poll(sim, sid, 3) == []


def test_a_continued_session_keeps_earlier_results_in_its_history(sim: Simulator) -> None:
    sid = create(sim)["sessionId"]
    poll(sim, sid)
    old = urls_in(poll(sim, sid))
    again = create(sim, "now a dog [sim:image]", sessionId=sid)
    assert again["sessionId"] == sid
    history = poll(sim, sid)
    assert urls_in(history) == old and history[-1]["role"] == "user"
    new_user_seq = history[-1]["seq"]
    new = urls_in(poll(sim, sid, new_user_seq))
    assert len(new) == 1 and new[0].endswith(".png") and new[0] not in old
    assert urls_in(poll(sim, sid)) == old + new


def test_unknown_session_is_404_in_each_routes_shape(sim: Simulator) -> None:
    r = requests.get(f"{sim.url}/libtv/v1/session/sim-nope", headers=gw(sim), timeout=5)
    assert r.status_code == 404 and r.json()["error"]["user_message"]
    r = requests.get(f"{sim.url}/libtv/v1/session/sim-nope/results", headers=gw(sim), timeout=5)
    assert r.status_code == 404
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": "x", "sessionId": "sim-nope"}, timeout=5)
    assert r.status_code == 404
    d = requests.get(f"{sim.url}/openapi/session/sim-nope", headers=dk(sim), timeout=5)
    assert d.status_code == 404 and d.json()["code"] != 0 and d.json()["message"]


def test_a_tag_in_the_message_picks_the_scenario(sim: Simulator) -> None:
    sid = create(sim, "both please [sim:image+video]")["sessionId"]
    poll(sim, sid)
    msgs = poll(sim, sid, 1)
    result = json.loads(msgs[0]["content"])["task_result"]
    assert result["images"][0]["previewPath"].endswith(".png") and result["videos"][0]["url"].endswith(".mp4")
    assert sim.sessions[sid].scenario is sim.scenarios["image+video"]


def test_intermediate_clips_come_one_poll_at_a_time_before_the_final(sim: Simulator) -> None:
    sid = create(sim, "[sim:intermediate]")["sessionId"]
    roles = [[m["role"] for m in poll(sim, sid, 1)] for _ in range(4)]
    assert roles == [[], ["tool"], ["tool", "tool"], ["tool", "tool", "tool", "assistant"]]
    assert len(urls_in(poll(sim, sid))) == 3
    assert len(sim.result_urls(sid)) == 3


def test_quiet_scenario_sends_no_assistant_message(sim: Simulator) -> None:
    sid = create(sim, "[sim:quiet]")["sessionId"]
    for _ in range(5):
        msgs = poll(sim, sid)
    assert [m["role"] for m in msgs] == ["user", "tool"]


def test_fail_scenario_reports_failure_in_a_tool_result(sim: Simulator) -> None:
    sid = create(sim, "[sim:fail]")["sessionId"]
    poll(sim, sid)
    tool = poll(sim, sid, 1)[0]
    assert json.loads(tool["content"]) == {"task_result": {"status": "failed", "error_message": "Content policy violation"}}
    tasks = requests.get(f"{sim.url}/api/v1/tasks", headers=gw(sim), timeout=5).json()["tasks"]
    assert tasks[0]["status"] == "failed" and tasks[0]["error_message"] == "Content policy violation"


def test_never_finishes_until_forced(sim: Simulator) -> None:
    sid = create(sim, "[sim:never]")["sessionId"]
    for _ in range(5):
        assert poll(sim, sid, 1) == []
    sim.complete_now(sid)
    assert len(urls_in(poll(sim, sid, 1))) == 1


def test_ready_after_seconds_follows_the_clock(sim: Simulator) -> None:
    now = [1000.0]
    sim.clock = lambda: now[0]
    sim.default_scenario = Scenario(ready_after_seconds=60)
    sid = create(sim)["sessionId"]
    assert poll(sim, sid, 1) == [] and poll(sim, sid, 1) == []
    now[0] += 61
    assert len(poll(sim, sid, 1)) == 2


def test_task_list_shows_the_keys_sessions(sim: Simulator) -> None:
    sid = create(sim)["sessionId"]
    tasks = requests.get(f"{sim.url}/api/v1/tasks", headers=gw(sim), timeout=5).json()["tasks"]
    assert tasks[0]["id"] == sid and tasks[0]["status"] == "running" and tasks[0]["video_url"] is None
    poll(sim, sid), poll(sim, sid)
    task = requests.get(f"{sim.url}/api/v1/tasks", headers=gw(sim), timeout=5).json()["tasks"][0]
    assert task["status"] == "completed" and task["video_url"].endswith(".mp4") and task["completed_at"]
    assert set(task) == {"id", "status", "backend", "created_at", "completed_at", "video_url", "error_message"}


# -- poll faults ------------------------------------------------------------------------------

def _raw_poll(sim: Simulator, sid: str, **kw: Any) -> requests.Response:
    return requests.get(f"{sim.url}/libtv/v1/session/{sid}", headers=gw(sim), params={"afterSeq": 1}, **kw)


def test_transient_scenario_answers_500_then_reset_then_html_then_normally(sim: Simulator) -> None:
    sid = create(sim, "[sim:transient]")["sessionId"]
    assert _raw_poll(sim, sid, timeout=5).status_code == 500
    with pytest.raises(requests.ConnectionError):
        _raw_poll(sim, sid, timeout=5)
    html = _raw_poll(sim, sid, timeout=5)
    assert html.status_code == 200 and html.text.startswith("<html")
    with pytest.raises(ValueError):
        html.json()
    assert poll(sim, sid, 1) == []
    assert urls_in(poll(sim, sid, 1))


def test_poll_forbidden_is_403_on_the_gateway_and_a_code_on_direct(sim: Simulator) -> None:
    sid = create(sim, "[sim:poll_forbidden]")["sessionId"]
    for _ in range(2):
        r = _raw_poll(sim, sid, timeout=5)
        assert r.status_code == 403 and r.json() == {"error": {"code": "forbidden", "user_message": "Forbidden"}}
    d = requests.get(f"{sim.url}/openapi/session/{sid}", headers=dk(sim), timeout=5)
    assert d.json()["code"] != 0 and d.json()["message"] == "Forbidden"


def test_malformed_scenario_sends_wrong_shapes_then_recovers(sim: Simulator) -> None:
    sid = create(sim, "[sim:malformed]")["sessionId"]
    for _ in range(3):
        body = _raw_poll(sim, sid, timeout=5).json()
        assert not (isinstance(body, dict) and isinstance(body.get("messages"), list)
                    and all(isinstance(m, dict) for m in body["messages"]))
    assert poll(sim, sid, 1) == [] and urls_in(poll(sim, sid, 1))


def test_hang_delays_the_first_poll(sim: Simulator) -> None:
    sim.scenarios["hang"].hang_seconds = 0.6
    sid = create(sim, "[sim:hang]")["sessionId"]
    with pytest.raises(requests.Timeout):
        _raw_poll(sim, sid, timeout=0.2)
    started = time.monotonic()
    assert _raw_poll(sim, sid, timeout=5).status_code == 200
    assert time.monotonic() - started < 0.5


def test_injected_faults_hit_the_next_requests_of_a_route(sim: Simulator) -> None:
    sim.inject("/open-apis/im/v1/messages", "503")
    r = feishu_send(sim, feishu_token(sim), "oc_1", "text", {"text": "x"})
    assert r.status_code == 503 and r.json()["code"] == 503 and sim.feishu.messages == []
    sim.inject("/libtv/v1/session", "429", "502")
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": "x"}, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    r = requests.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": "x"}, timeout=5)
    assert r.status_code == 502 and "user_message" in r.json()["error"]
    assert create(sim)["sessionId"]
    assert len(sim.sessions) == 1


# -- uploads ----------------------------------------------------------------------------------

def test_a_200_mb_upload_is_counted_not_held(sim: Simulator) -> None:
    size = 200 * MIB
    enc = MultipartEncoder({"file": ("big.mp4", Zeros(size), "video/mp4")})
    tracemalloc.start()
    try:
        r = requests.post(f"{sim.url}/libtv/v1/upload", data=enc,
                          headers={**gw(sim), "Content-Type": enc.content_type}, timeout=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert peak < 16 * MIB
    rec = sim.requests_to("/libtv/v1/upload")[0]
    assert rec.files == {"file": ("big.mp4", size)} and rec.body_size > size
    head = requests.head(r.json()["url"], timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size


def test_a_chunked_upload_is_counted(sim: Simulator) -> None:
    def body() -> Any:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="c.png"\r\n\r\n'
        for _ in range(10):
            yield b"a" * 100_000
        yield b"\r\n--XyZ--\r\n"

    r = requests.post(f"{sim.url}/libtv/v1/upload", data=body(), timeout=5,
                      headers={**gw(sim), "Content-Type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 200 and sim.requests[-1].files == {"file": ("c.png", 1_000_000)}


def test_direct_upload_and_the_older_deployments_route(sim: Simulator) -> None:
    r = requests.post(f"{sim.url}/openapi/file/upload", headers=dk(sim), files={"file": ("a.png", b"x" * 10)}, timeout=5)
    assert r.json()["code"] == 0 and r.json()["data"]["url"].startswith(sim.url + "/cdn/")
    sim.direct_legacy_upload = True
    r = requests.post(f"{sim.url}/openapi/file/upload", headers=dk(sim), files={"file": ("a.png", b"x")}, timeout=5)
    assert r.status_code == 404
    r = requests.post(f"{sim.url}/openapi/upload", data={"accessKey": sim.DIRECT_KEY},
                      files={"file": ("b.mp4", b"y" * 7)}, timeout=5)
    assert r.json()["code"] == 0 and r.json()["data"]["url"].endswith("/b.mp4")
    assert sim.requests[-1].form == {"accessKey": sim.DIRECT_KEY}
    assert sim.uploads[-1]["size"] == 7


def test_upload_without_a_file_field_is_refused(sim: Simulator) -> None:
    r = requests.post(f"{sim.url}/libtv/v1/upload", headers=gw(sim), files={"other": ("a.png", b"x")}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["user_message"]


# -- CDN --------------------------------------------------------------------------------------

def test_cdn_serves_deterministic_real_bytes(sim: Simulator) -> None:
    sid = create(sim, "[sim:image+video]")["sessionId"]
    poll(sim, sid), poll(sim, sid)
    png, mp4 = sim.result_urls(sid)
    body = requests.get(png, timeout=5)
    assert body.headers["Content-Type"] == "image/png" and body.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert body.content == sim.cdn_bytes(png) and len(body.content) == sim.scenarios["image+video"].image_bytes
    video = requests.get(mp4, timeout=5).content
    assert video[4:8] == b"ftyp" and video == requests.get(mp4, timeout=5).content and video != body.content
    assert requests.get(sim.cdn_url("nope.mp4"), timeout=5).status_code == 404


def test_cdn_head_and_range_on_a_40_mb_video(sim: Simulator) -> None:
    url = sim.cdn_put("x/big.mp4", 40 * MIB)
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(40 * MIB) and head.content == b""
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert part.status_code == 206 and part.content == sim.cdn_bytes(url)[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{40 * MIB}"
    with requests.get(url, stream=True, timeout=10) as whole:
        assert sum(len(c) for c in whole.iter_content(MIB)) == 40 * MIB


def test_big_scenarios_point_at_big_files(sim: Simulator) -> None:
    for name, size in (("big_video", 40 * MIB), ("big_image", 12 * MIB)):
        sid = create(sim, f"[sim:{name}]")["sessionId"]
        poll(sim, sid), poll(sim, sid)
        (url,) = sim.result_urls(sid)
        assert int(requests.head(url, timeout=5).headers["Content-Length"]) == size


# -- Feishu -----------------------------------------------------------------------------------

def test_feishu_token_checks_the_app_credentials(sim: Simulator) -> None:
    url = f"{sim.url}/open-apis/auth/v3/tenant_access_token/internal"
    bad = requests.post(url, json={"app_id": sim.FEISHU_APP_ID, "app_secret": "wrong"}, timeout=5)
    assert bad.json()["code"] != 0
    good = requests.post(url, json={"app_id": sim.FEISHU_APP_ID, "app_secret": sim.FEISHU_APP_SECRET}, timeout=5).json()
    assert good["code"] == 0 and good["expire"] == 7200 and good["tenant_access_token"]
    assert sim.feishu.tokens_issued == 1


def test_feishu_calls_need_a_live_token(sim: Simulator) -> None:
    r = feishu_send(sim, {"Authorization": "Bearer t-forged"}, "oc_1", "text", {"text": "hi"})
    assert r.json()["code"] == 99991663
    auth = feishu_token(sim)
    assert feishu_send(sim, auth, "oc_1", "text", {"text": "hi"}).json()["code"] == 0
    sim.feishu.revoke_tokens()
    assert feishu_send(sim, auth, "oc_1", "text", {"text": "hi"}).json()["code"] == 99991663


def test_feishu_video_goes_as_media_and_is_refused_as_file(sim: Simulator) -> None:
    auth = feishu_token(sim)
    key = feishu_upload(sim, auth, 1000).json()["data"]["file_key"]
    assert sim.feishu.uploads[0] == {"kind": "file", "file_type": "mp4", "file_name": "a.mp4", "size": 1000, "key": key}
    assert feishu_send(sim, auth, "oc_1", "file", {"file_key": key}).json()["code"] == 230055
    ok = feishu_send(sim, auth, "ou_1", "media", {"file_key": key}, id_type="open_id").json()
    assert ok["code"] == 0 and ok["msg"] == "success" and ok["data"]["message_id"]
    assert sim.feishu.messages == [{"receive_id": "ou_1", "receive_id_type": "open_id", "msg_type": "media",
                                    "content": {"file_key": key}, "uuid": None,
                                    "message_id": ok["data"]["message_id"]}]


def test_feishu_image_upload_and_send(sim: Simulator) -> None:
    auth = feishu_token(sim)
    key = feishu_upload(sim, auth, 500, kind="image").json()["data"]["image_key"]
    assert feishu_send(sim, auth, "oc_1", "image", {"image_key": key}).json()["code"] == 0
    assert sim.feishu.uploads[0]["kind"] == "image"


def test_feishu_size_limits(sim: Simulator) -> None:
    auth = feishu_token(sim)
    big_file = feishu_upload(sim, auth, 30 * MIB + 1)
    assert big_file.json()["code"] == 234006
    big_image = feishu_upload(sim, auth, 10 * MIB + 1, kind="image")
    assert big_image.json()["code"] != 0
    assert sim.feishu.uploads == []


@pytest.mark.parametrize("receive_id,id_type,content", [
    ("ou_1", "chat_id", '{"text": "x"}'), ("oc_1", "open_id", '{"text": "x"}'),
    ("oc_1", "chat_id", {"text": "x"}), ("oc_1", "chat_id", "not json"), ("oc_1", "email", '{"text": "x"}'),
])
def test_feishu_refuses_bad_targets_and_content(sim: Simulator, receive_id: str, id_type: str, content: Any) -> None:
    auth = feishu_token(sim)
    body = {"receive_id": receive_id, "msg_type": "text", "content": content}
    r = requests.post(f"{sim.url}/open-apis/im/v1/messages", params={"receive_id_type": id_type},
                      headers=auth, json=body, timeout=5)
    assert r.json()["code"] != 0 and sim.feishu.messages == []


def test_feishu_uuid_sends_one_message_however_often_retried(sim: Simulator) -> None:
    auth = feishu_token(sim)
    first = feishu_send(sim, auth, "oc_1", "text", {"text": "hi"}, uuid="u-1").json()
    again = feishu_send(sim, auth, "oc_1", "text", {"text": "hi"}, uuid="u-1").json()
    assert first["data"]["message_id"] == again["data"]["message_id"]
    feishu_send(sim, auth, "oc_1", "text", {"text": "other"}, uuid="u-2")
    assert [m["uuid"] for m in sim.feishu.messages] == ["u-1", "u-2"]
    later = time.time() + 3601
    sim.clock = lambda: later  # the de-dup window is one hour
    sim.feishu.tokens.clear()
    auth = feishu_token(sim)
    feishu_send(sim, auth, "oc_1", "text", {"text": "hi"}, uuid="u-1")
    assert [m["uuid"] for m in sim.feishu.messages] == ["u-1", "u-2", "u-1"]


def test_feishu_scope_denial_carries_a_grant_link(sim: Simulator) -> None:
    sim.feishu.deny_scope = True
    r = feishu_upload(sim, feishu_token(sim), 100)
    body = r.json()
    assert r.status_code == 400 and body["code"] == 99991672
    link = body["error"]["helps"][0]["url"]
    assert link.startswith(f"https://open.feishu.cn/app/{sim.FEISHU_APP_ID}/auth?q=") and link in body["msg"]


# -- the command --------------------------------------------------------------------------------

def test_module_prints_exports_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "libtv_fsm.sim", "--scenario", "quiet"],
                            stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # undo an inherited SIG_IGN
    try:
        lines = [proc.stdout.readline() for _ in range(8)]  # type: ignore[union-attr]
        url = lines[0].split()[-1]
        assert url.startswith("http://127.0.0.1:")
        assert f"export LIBTV_GATEWAY_URL={url}/\n" in lines
        assert requests.get(url + "/api/v1/key/status", headers={"X-API-KEY": "mgk_x"}, timeout=5).ok
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]


# -- robustness -------------------------------------------------------------------------------

def test_a_simulator_bug_answers_500_and_is_kept_for_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    with Simulator() as broken:
        monkeypatch.setattr(broken.feishu, "handle", lambda rec: 1 / 0)
        r = requests.post(f"{broken.url}/open-apis/im/v1/messages", json={}, timeout=5)
        assert r.status_code == 500 and "ZeroDivisionError" in broken.errors[0]


def test_concurrent_clients_see_consistent_sessions(sim: Simulator) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> List[int]:
        with requests.Session() as client:
            sid = client.post(f"{sim.url}/libtv/v1/session", headers=gw(sim), json={"message": f"n{i}"}, timeout=5).json()["sessionId"]
            for _ in range(3):
                msgs = client.get(f"{sim.url}/libtv/v1/session/{sid}", headers=gw(sim), timeout=5).json()["messages"]
            return [m["seq"] for m in msgs]

    sim.set_key(sim.GATEWAY_KEY, remaining_uses=100, max_uses=100)
    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(one, range(24)))
    assert all(s == [1, 2, 3] for s in seqs) and len(sim.sessions) == 24
    assert sim.key_state(sim.GATEWAY_KEY).remaining_uses == 76


def test_telegram_takes_a_file_the_way_grammy_attaches_it(sim: Simulator) -> None:
    # grammY (OpenClaw's Telegram library) sends `video=attach://<name>` and the file in the part `<name>`.
    root = f"{sim.url}/bot{sim.TELEGRAM_BOT_TOKEN}"
    body = MultipartEncoder(fields={"chat_id": "424242", "video": "attach://f1x9",
                                    "f1x9": ("trailer.mp4", b"v" * 300, "video/mp4")})
    answer = requests.post(f"{root}/sendVideo", data=body, headers={"Content-Type": body.content_type}).json()
    assert answer["ok"] is True and answer["result"]["video"]["file_name"] == "trailer.mp4"
    missing = MultipartEncoder(fields={"chat_id": "424242", "photo": "attach://nothere"})
    refused = requests.post(f"{root}/sendPhoto", data=missing, headers={"Content-Type": missing.content_type})
    assert refused.status_code == 400 and "no photo" in refused.json()["description"]
    [got] = sim.telegram.chat("424242")
    assert (got["kind"], got["file_name"], got["size"]) == ("video", "trailer.mp4", 300)


def test_telegram_answers_what_a_polling_bot_asks_at_start(sim: Simulator) -> None:
    root = f"{sim.url}/bot{sim.TELEGRAM_BOT_TOKEN}"
    for method in ("deleteWebhook", "setMyCommands", "deleteMyCommands"):
        assert requests.post(f"{root}/{method}", json={}).json() == {"ok": True, "result": True}
    started = time.monotonic()
    assert requests.post(f"{root}/getUpdates", json={"timeout": 0.3}).json() == {"ok": True, "result": []}
    assert 0.25 < time.monotonic() - started < 3  # a long poll, cut at what the bot asked for
    assert sim.telegram.messages == []
