"""Both upstream routes against the loopback simulator: every operation, routing, error mapping, uploads."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from libtv_fsm import transport
from libtv_fsm.backends import Backend, open_backend
from libtv_fsm.backends.download import download, safe_prefix, target_in
from libtv_fsm.backends.upload import MAX_UPLOAD_BYTES
from libtv_fsm.errors import (
    AuthError, BadResponse, ConfigError, ExpiredError, InputError, InvalidSessionId, NetworkError,
    PermanentError, QuotaError, TransientError, UnavailableError,
)
from libtv_fsm.results import is_result_url, read_batch
from libtv_fsm.sim import Simulator

GW, DIRECT = Simulator.GATEWAY_KEY, Simulator.DIRECT_KEY
KEYS = {"gateway": GW, "direct": DIRECT}
FAST = (2.0, 2.0)


def make(sim: Simulator, route: str, retries: int = 0, timeout: Tuple[float, float] = FAST) -> Backend:
    session = transport.new_session(retries=transport.retry_policy(total=retries, backoff=0.01))
    return open_backend(KEYS[route], sim.env(), session=session, timeout=timeout)


@pytest.fixture(params=["gateway", "direct"])
def route(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def media(tmp_path: Path) -> Path:
    path = tmp_path / "cat.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 5000)
    return path


def run_to_results(backend: Backend, sim: Simulator, message: str = "a cat") -> Tuple[str, List[Any]]:
    created = backend.create_session(message)
    sim.complete_now(created.session_id)
    return created.session_id, backend.query_session(created.session_id)


# --- routing -----------------------------------------------------------------------------------

def test_key_prefix_picks_the_route(sim: Simulator) -> None:
    gw, direct = make(sim, "gateway"), make(sim, "direct")
    assert (gw.auth_mode, gw.base_url) == ("nexu_gateway", sim.url)
    assert (direct.auth_mode, direct.base_url) == ("libtv_direct", sim.url)
    with pytest.raises(ConfigError, match="Invalid API Key format"):
        open_backend("sk-other-123456789", sim.env())
    assert sim.requests == []


def test_a_key_never_travels_on_the_other_route(sim: Simulator, media: Path) -> None:
    for name in ("gateway", "direct"):
        backend = make(sim, name)
        sid, _ = run_to_results(backend, sim)
        backend.upload(media)
        backend.results(sid)
        backend.change_project()
    make(sim, "gateway").key_status()
    make(sim, "gateway").tasks()
    assert sim.requests
    for rec in sim.requests:
        seen = json.dumps([dict(rec.headers), rec.form, rec.query, rec.path])
        if rec.path.startswith("/openapi/"):
            assert rec.headers.get("authorization") == f"Bearer {DIRECT}"
            assert "x-api-key" not in rec.headers and GW not in seen
        else:
            assert rec.path.startswith(("/libtv/v1/", "/api/v1/"))
            assert rec.headers.get("x-api-key") == GW
            assert "authorization" not in rec.headers and DIRECT not in seen


def test_the_key_is_not_left_on_the_shared_session(sim: Simulator) -> None:
    backend = make(sim, "gateway")
    backend.key_status()
    assert GW not in json.dumps(dict(backend.session.headers)) and GW not in repr(backend)


# --- every operation -----------------------------------------------------------------------------

def test_gateway_operations(sim: Simulator, media: Path) -> None:
    sim.set_key(GW, remaining_uses=7, max_uses=10, expires_at="2030-01-01T00:00:00Z")
    gw = make(sim, "gateway")
    status = gw.key_status()
    assert (status.remaining_uses, status.max_uses, status.expires_at) == (7, 10, "2030-01-01T00:00:00Z")
    assert is_result_url(gw.upload(media), gw.prefixes)
    created = gw.create_session("a cat [sim:image+video]")
    assert created.project_url == f"https://www.liblib.tv/canvas?projectId={created.project_uuid}"
    first = gw.query_session(created.session_id)
    assert [m.role for m in first] == ["user"]
    sim.complete_now(created.session_id)
    later = gw.query_session(created.session_id, after_seq=first[-1].seq)
    assert later and all(m.seq > first[-1].seq for m in later)
    urls = read_batch(later, first[-1].seq, gw.prefixes).urls
    assert len(urls) == 2 and list(urls) == gw.results(created.session_id) == sim.result_urls(created.session_id)
    [task] = gw.tasks()
    assert task.id == created.session_id and task.status == "completed"
    project = gw.change_project()
    assert project != created.project_uuid
    assert gw.create_session("next").project_uuid == project


def test_direct_operations(sim: Simulator, media: Path) -> None:
    direct = make(sim, "direct")
    assert is_result_url(direct.upload(media), direct.prefixes)
    created = direct.create_session("a cat [sim:image]")
    assert created.project_url == f"https://www.liblib.tv/canvas?projectId={created.project_uuid}"
    sim.complete_now(created.session_id)
    messages = direct.query_session(created.session_id, after_seq=0)
    assert [m.seq for m in messages] == sorted(m.seq for m in messages)
    assert direct.results(created.session_id) == sim.result_urls(created.session_id)
    continued = direct.create_session("again", session_id=created.session_id)
    assert continued.session_id == created.session_id
    assert direct.change_project() != created.project_uuid
    with pytest.raises(PermanentError, match="only available for mgk_ keys"):
        direct.key_status()
    with pytest.raises(PermanentError, match="mgk_"):
        direct.tasks()
    assert not sim.requests_to("/api/") and not sim.requests_to("/libtv/")


def test_after_seq_is_sent_as_a_query(sim: Simulator, route: str) -> None:
    backend = make(sim, route)
    sid = backend.create_session("x").session_id
    backend.query_session(sid, after_seq=5)
    assert sim.requests[-1].query == {"afterSeq": "5"}


# --- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("error, cls, text", [
    ("invalid", AuthError, "Invalid API Key"),
    ("exhausted", QuotaError, "Free trial uses exhausted"),
    ("expired", ExpiredError, "Key expired"),
    ("unavailable", UnavailableError, "Service temporarily unavailable"),
])
def test_key_errors_carry_the_upstream_text(sim: Simulator, route: str, error: str, cls: type, text: str) -> None:
    sim.set_key(KEYS[route], error=error)
    with pytest.raises(cls) as caught:
        make(sim, route).create_session("x")
    assert str(caught.value) == text
    assert KEYS[route] not in str(caught.value)


def test_transient_poll_faults_are_transient(sim: Simulator, route: str) -> None:
    backend = make(sim, route)  # no urllib3 retries: each fault reaches us
    sid = backend.create_session("x [sim:transient]").session_id
    raised = []
    for _ in range(3):
        with pytest.raises(TransientError) as caught:
            backend.query_session(sid)
        raised.append(type(caught.value))
    assert raised == [UnavailableError, NetworkError, BadResponse]
    assert backend.query_session(sid)  # then it recovers


def test_malformed_polls_are_bad_responses(sim: Simulator, route: str) -> None:
    backend = make(sim, route)
    sid = backend.create_session("x [sim:malformed]").session_id
    for _ in range(3):
        with pytest.raises(BadResponse):
            backend.query_session(sid)


def test_a_forbidden_poll_is_permanent_with_its_text(sim: Simulator, route: str) -> None:
    backend = make(sim, route)
    sid = backend.create_session("x [sim:poll_forbidden]").session_id
    with pytest.raises(PermanentError, match="^Forbidden$") as caught:
        backend.query_session(sid)
    assert not caught.value.transient


def test_an_unknown_session_is_permanent(sim: Simulator, route: str) -> None:
    with pytest.raises(PermanentError, match="Session not found"):
        make(sim, route).query_session("no-such-session")


def test_a_hanging_upstream_times_out(sim: Simulator, route: str) -> None:
    backend = make(sim, route, timeout=(2.0, 0.3))
    sid = backend.create_session("x [sim:hang]").session_id
    with pytest.raises(NetworkError):
        backend.query_session(sid)


def test_a_refused_connection_is_a_network_error(route: str) -> None:
    env = {"LIBTV_GATEWAY_URL": "http://127.0.0.1:9", "LIBTV_DIRECT_BASE_URL": "http://127.0.0.1:9"}
    backend = open_backend(KEYS[route], env, transport.new_session(transport.retry_policy(0)), timeout=FAST)
    with pytest.raises(NetworkError):
        backend.create_session("x")


def test_get_is_retried_but_post_never(sim: Simulator, route: str) -> None:
    backend = make(sim, route, retries=2)
    base = "/libtv/v1" if route == "gateway" else "/openapi"
    sim.inject(f"{base}/session", "reset")
    with pytest.raises(NetworkError):
        backend.create_session("x")
    sim.inject(f"{base}/session", "503")
    with pytest.raises(UnavailableError):
        backend.create_session("x")
    assert len(sim.requests_to(f"{base}/session", "POST")) == 2
    sid = backend.create_session("x").session_id
    sim.inject(f"{base}/session/{sid}", "503", "reset")
    assert backend.query_session(sid)
    assert len(sim.requests_to(f"{base}/session/{sid}", "GET")) == 3


# --- a stub upstream for answers the simulator does not give --------------------------------------

class Stub:
    """A tiny HTTP server answering every request with one (status, headers, body)."""

    def __init__(self) -> None:
        self.answer: Tuple[int, Dict[str, str], bytes] = (200, {}, b"{}")
        self.hits: List[str] = []
        self.times: List[float] = []  # time.monotonic() of each hit
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                stub.hits.append(self.path)
                stub.times.append(time.monotonic())
                status, headers, body = stub.answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def json(self, status: int, doc: Any) -> None:
        self.answer = (status, {"Content-Type": "application/json"}, json.dumps(doc).encode())

    def backend(self, route: str) -> Backend:
        env = {"LIBTV_GATEWAY_URL": self.url, "LIBTV_DIRECT_BASE_URL": self.url}
        return open_backend(KEYS[route], env, transport.new_session(transport.retry_policy(0)), timeout=FAST)


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_redirects_are_never_followed(stub: Stub, sim: Simulator, route: str) -> None:
    stub.answer = (302, {"Location": sim.url + "/api/v1/key/status"}, b"")
    with pytest.raises(BadResponse, match="redirect"):
        stub.backend(route).create_session("x")
    assert sim.requests == []


def test_an_echoed_key_never_reaches_an_error_text(stub: Stub, route: str) -> None:
    stub.json(400, {"error": {"user_message": f"bad key {KEYS[route]}"}, "code": 1, "message": f"bad key {KEYS[route]}"})
    with pytest.raises(PermanentError) as caught:
        stub.backend(route).create_session("x")
    assert KEYS[route] not in str(caught.value) and "bad key ****" in str(caught.value)


@pytest.mark.parametrize("doc", [
    {"sessionId": "../../etc", "projectUuid": "p1"},
    {"sessionId": ".", "projectUuid": "p1"},
    {"sessionId": "a" * 129, "projectUuid": "p1"},
    {"sessionId": 12, "projectUuid": "p1"},
    {"sessionId": "s1"},
    {"sessionId": "s1", "projectUuid": "p/1"},
    ["sessionId"],
])
def test_hostile_or_missing_ids_from_upstream_are_refused(stub: Stub, route: str, doc: Any) -> None:
    stub.json(200, doc if route == "gateway" else {"code": 0, "message": "success", "data": doc})
    with pytest.raises(BadResponse):
        stub.backend(route).create_session("x")


def test_hostile_session_ids_are_refused_before_any_request(stub: Stub, route: str) -> None:
    for bad in ("../x", "..", "a/b", "", "a" * 129, "x?y=1"):
        with pytest.raises(InvalidSessionId):
            stub.backend(route).query_session(bad)
    assert stub.hits == []


@pytest.mark.parametrize("doc", [
    {"remaining_uses": "7", "max_uses": 10, "expires_at": None},
    {"remaining_uses": True, "max_uses": 10},
    {"remaining_uses": 1, "max_uses": 10, "expires_at": 5},
    [],
])
def test_wrong_types_are_bad_responses(stub: Stub, doc: Any) -> None:
    stub.json(200, doc)
    with pytest.raises(BadResponse):
        stub.backend("gateway").key_status()


def test_a_huge_body_is_not_read_whole(stub: Stub) -> None:
    stub.answer = (200, {"Content-Type": "application/json"}, b'{"messages": ["' + b"x" * (transport.MAX_JSON_BYTES + 10) + b'"]}')
    with pytest.raises(BadResponse):
        stub.backend("gateway").query_session("s1")


def test_html_error_pages_map_by_status(stub: Stub, route: str) -> None:
    stub.answer = (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")
    with pytest.raises(UnavailableError):
        stub.backend(route).create_session("x")
    stub.answer = (404, {"Content-Type": "text/html"}, b"<html>nope</html>")
    with pytest.raises(PermanentError, match="HTTP 404"):
        stub.backend(route).create_session("x")


def test_direct_code_must_be_numeric(stub: Stub) -> None:
    stub.json(200, {"code": "zero", "data": {}})
    with pytest.raises(BadResponse):
        stub.backend("direct").change_project()
    stub.json(200, {"code": 40300, "message": "Forbidden"})
    with pytest.raises(PermanentError, match="^Forbidden$"):
        stub.backend("direct").change_project()


# --- uploads -------------------------------------------------------------------------------------

def test_direct_upload_falls_back_to_the_older_endpoint(sim: Simulator, media: Path) -> None:
    sim.direct_legacy_upload = True
    url = make(sim, "direct").upload(media)
    assert is_result_url(url, make(sim, "direct").prefixes)
    first, second = sim.requests_to("/openapi/")
    assert (first.path, first.status) == ("/openapi/file/upload", 404)
    assert second.path == "/openapi/upload" and second.form.get("accessKey") == DIRECT
    assert second.files["file"] == ("cat.png", media.stat().st_size)


def test_the_upload_streams_the_file_with_its_name(sim: Simulator, route: str, media: Path) -> None:
    make(sim, route).upload(media)
    rec = sim.requests[-1]
    assert rec.files["file"] == ("cat.png", media.stat().st_size)
    assert rec.headers["content-type"].startswith("multipart/form-data")


@pytest.mark.parametrize("name, size, message", [
    ("missing.png", None, "File not found"),
    ("missing.txt", None, "File not found"),          # existence is checked first
    ("notes.txt", 10, "Unsupported file type"),
    ("vector.svg", 10, "Unsupported file type"),
    ("huge.txt", MAX_UPLOAD_BYTES + 1, "Unsupported file type"),  # type before size
    ("huge.mp4", MAX_UPLOAD_BYTES + 1, "File too large"),
])
def test_upload_guards_run_before_any_request(sim: Simulator, route: str, tmp_path: Path,
                                              name: str, size: Any, message: str) -> None:
    path = tmp_path / name
    if size is not None:
        with path.open("wb") as handle:  # sparse: no real 200 MB on disk
            handle.truncate(size)
    with pytest.raises(InputError, match=f"^{message}"):
        make(sim, route).upload(path)
    assert sim.requests == []


def test_a_file_of_exactly_the_limit_is_allowed(tmp_path: Path) -> None:
    from libtv_fsm.backends.upload import check_upload

    path = tmp_path / "edge.mov"
    with path.open("wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES)
    assert check_upload(path).content_type == "video/quicktime"


# --- downloads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("cat", "cat"), ("../../etc/passwd", "etc_passwd"), ("..", "libtv"), ("", "libtv"), (None, "libtv"),
    (".hidden", "hidden"), ("a/b\\c:d", "a_b_c_d"), ("视频", "libtv"), ("x" * 100, "x" * 64),
    ("a" * 63 + "._x", "a" * 63),
])
def test_prefix_is_reduced_to_a_plain_name(raw: Any, expected: str) -> None:
    assert safe_prefix(raw) == expected


def test_nothing_is_written_outside_the_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        target_in(tmp_path, "../x.mp4")
    with pytest.raises(InputError):
        target_in(tmp_path, "a/b.mp4")
    assert target_in(tmp_path, "ok_1.mp4") == tmp_path.resolve() / "ok_1.mp4"
    # A planted symlink would point the write elsewhere.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r_1.mp4").symlink_to(tmp_path / "victim")
    with pytest.raises(InputError):
        target_in(tmp_path / "out", "r_1.mp4")


def test_download_streams_a_result_and_refuses_others(sim: Simulator, tmp_path: Path) -> None:
    backend = make(sim, "gateway")
    url = sim.cdn_put("r/1.mp4", 300_000)
    path = download(backend.session, url, tmp_path, "r_1", backend.prefixes)
    assert path == tmp_path.resolve() / "r_1.mp4" and path.read_bytes() == sim.cdn_bytes(url)
    assert [p.name for p in tmp_path.iterdir()] == ["r_1.mp4"]  # no .part left
    with pytest.raises(InputError, match="Not a result URL"):
        download(backend.session, sim.url + "/elsewhere/1.mp4", tmp_path, "x", backend.prefixes)
    with pytest.raises(PermanentError, match="HTTP 404"):
        download(backend.session, sim.cdn_url("missing.mp4"), tmp_path, "m", backend.prefixes)
    with pytest.raises(BadResponse, match="larger than"):
        download(backend.session, url, tmp_path, "big", backend.prefixes, limit=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_1.mp4"]


# --- the shared transport ----------------------------------------------------------------------------

def test_a_netrc_never_replaces_or_adds_credentials(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1\nlogin someone\npassword secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    make(sim, "direct").change_project()
    make(sim, "gateway").key_status()
    assert sim.requests[0].headers.get("authorization") == f"Bearer {DIRECT}"
    assert "authorization" not in sim.requests[1].headers


def test_a_long_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Answer:
        headers = {"Retry-After": "3600"}

    assert transport.retry_policy().get_retry_after(Answer()) == transport.MAX_RETRY_AFTER
    assert transport.retry_policy().increment("GET", "/x").get_retry_after(Answer()) == transport.MAX_RETRY_AFTER


def test_retries_honour_retry_after_on_get(sim: Simulator) -> None:
    backend = make(sim, "gateway", retries=1)
    sim.inject("/api/v1/key/status", "429")
    assert backend.key_status().max_uses == 10
    assert len(sim.requests_to("/api/v1/key/status")) == 2


def test_a_get_refused_with_retry_after_is_tried_again_only_after_that_wait(sim: Simulator) -> None:
    backend = make(sim, "gateway", retries=1)  # its own backoff is 0.01 s: any longer gap is Retry-After's
    sim.inject("/api/v1/key/status", "429")  # answered with Retry-After: 1
    assert backend.key_status().max_uses == 10
    first, second = sim.requests_to("/api/v1/key/status")
    gap = second.at - first.at
    assert gap >= 0.9, f"the GET was retried {gap:.2f} s after a 429 that asked for 1 s"


def test_a_retry_after_longer_than_the_cap_is_waited_only_up_to_the_cap(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Retry-After: 3600` must not stall one call for an hour: the transport waits at most its cap.

    The cap is lowered to 1 s here so the test does not sleep 10 s; its real value is checked above.
    """
    monkeypatch.setattr(transport, "MAX_RETRY_AFTER", 1.0)
    stub.answer = (429, {"Retry-After": "3600", "Content-Type": "application/json"},
                   json.dumps({"error": {"user_message": "Too many requests"}}).encode())
    env = {"LIBTV_GATEWAY_URL": stub.url, "LIBTV_DIRECT_BASE_URL": stub.url}
    session = transport.new_session(transport.retry_policy(total=1, backoff=0.01))
    backend = open_backend(GW, env, session, timeout=FAST)
    raised: List[BaseException] = []

    def call() -> None:
        try:
            backend.key_status()
        except BaseException as err:  # handed to the test thread
            raised.append(err)

    # In a thread: an uncapped wait would sleep an hour inside urllib3, where no deadline reaches it.
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=10)
    assert not caller.is_alive(), "still waiting 10 s after a `Retry-After: 3600`: the wait is not capped"
    assert len(raised) == 1 and isinstance(raised[0], TransientError), raised
    assert len(stub.times) == 2, stub.hits
    gap = stub.times[1] - stub.times[0]
    assert 0.9 <= gap < 8, f"retried after {gap:.2f} s; expected the 1 s cap, neither at once nor the full hour"
