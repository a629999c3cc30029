"""Delivering one result to a chat: as a file when it fits, else exactly one text with the URL; never twice."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import urlsplit

import pytest
import requests

from libtv_fsm import errors
from libtv_fsm.channels import get_channel
from libtv_fsm.channels.base import MB, FileRefused
from libtv_fsm.delivery import (
    dedupe_key, deliver_result, file_name_for, notice_text, result_kind, same_host, send_notice,
)
from libtv_fsm.transport import new_session, retry_policy

ROOT = Path(__file__).resolve().parent.parent
SEND_SCRIPT = ROOT / "scripts" / "feishu_send_video.py"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    # No urllib3 retries, so an injected 503 fails at once instead of after backoff.
    session = new_session(retry_policy(total=0))
    yield session
    session.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def channel(sim: Any, http: requests.Session) -> Any:
    return get_channel("feishu", sim.env(), http)


def deliver(channel: Any, url: str, http: requests.Session, workdir: Path, session_id: str = "sess-1",
            target: str = "oc_group1") -> Any:
    outcome = deliver_result(channel, target, session_id, url, http=http, workdir=workdir)
    assert list(workdir.iterdir()) == [], "the temp file is removed after the send"
    return outcome


# ---- pure parts ----

@pytest.mark.parametrize("url, kind", [
    ("https://libtv-res.liblib.art/claw/a/b.mp4", "video"),
    ("https://x/y.MOV?sign=abc.png", "video"),
    ("https://x/y.webm#t=1", "video"),
    ("https://x/y.png?x-oss-process=a.mp4", "image"),
    ("https://x/y.JPG", "image"), ("https://x/y.jpeg", "image"), ("https://x/y.webp", "image"), ("https://x/y.gif", "image"),
    ("https://x/y.pdf", "other"), ("https://x/mp4", "other"), ("https://x/y?f=z.mp4", "other"),
])
def test_result_kind_comes_from_the_path_extension_only(url: str, kind: str) -> None:
    assert result_kind(url) == kind


def test_dedupe_keys_are_stable_short_and_distinct() -> None:
    key = dedupe_key("sess-1", "https://x/a.mp4")
    assert key == dedupe_key("sess-1", "https://x/a.mp4") and len(key) <= 50
    others = {dedupe_key("sess-2", "https://x/a.mp4"), dedupe_key("sess-1", "https://x/b.mp4"),
              dedupe_key("sess-1", "https://x/a.mp4", "notice")}
    assert key not in others and len(others) == 3


def test_file_names_shown_in_the_chat_are_safe() -> None:
    assert file_name_for("https://x/claw/abc/final-cut.mp4?sig=1") == "final-cut.mp4"
    assert file_name_for("https://x/a/%E8%A7%86%E9%A2%91 1.mp4") == "E8_A7_86_E9_A2_91_1.mp4"
    assert file_name_for("https://x/") == "result.mp4"


@pytest.mark.parametrize("origin, hop, ok", [
    ("https://cdn.test/a.mp4", "https://cdn.test/b.mp4", True),
    ("http://cdn.test/a.mp4", "https://cdn.test/b.mp4", True),
    ("https://cdn.test/a.mp4", "http://cdn.test/b.mp4", False),
    ("https://cdn.test/a.mp4", "https://evil.test/b.mp4", False),
    ("https://cdn.test/a.mp4", "https://cdn.test.evil.test/b.mp4", False),
    ("http://127.0.0.1:8000/a.mp4", "http://127.0.0.1:9000/a.mp4", False),
    ("https://cdn.test/a.mp4", "file:///etc/passwd", False),
])
def test_redirects_are_followed_only_on_the_same_host(origin: str, hop: str, ok: bool) -> None:
    assert same_host(urlsplit(origin), urlsplit(hop)) is ok


# ---- against the simulator ----

def test_a_video_within_the_limit_is_sent_as_media(sim: Any, channel: Any, http: requests.Session, workdir: Path) -> None:
    url = sim.cdn_put("claw/s1/clip.mp4", 3 * MB + 7)
    outcome = deliver(channel, url, http, workdir)
    assert (outcome.url, outcome.sent_as, outcome.note) == (url, "video", "")
    [msg] = sim.feishu.messages
    assert msg["msg_type"] == "media" and msg["message_id"] == outcome.message_id
    assert msg["uuid"] == dedupe_key("sess-1", url)
    assert sim.feishu.uploads[0]["size"] == 3 * MB + 7 and sim.feishu.uploads[0]["file_name"] == "clip.mp4"


def test_an_image_within_the_limit_is_sent_as_an_image(sim: Any, channel: Any, http: requests.Session,
                                                       workdir: Path) -> None:
    url = sim.cdn_put("sd-gen-save-img/pic.png", 4096)
    outcome = deliver(channel, url, http, workdir, target="ou_user1")
    assert outcome.sent_as == "image"
    [msg] = sim.feishu.messages
    assert (msg["msg_type"], msg["receive_id_type"]) == ("image", "open_id")


def test_a_video_over_the_limit_is_one_text_with_the_url(sim: Any, channel: Any, http: requests.Session,
                                                         workdir: Path) -> None:
    url = sim.cdn_put("claw/s1/huge.mp4", 30 * MB + 1)
    outcome = deliver(channel, url, http, workdir)
    assert outcome.sent_as == "text" and "30 MB" in outcome.note
    [msg] = sim.feishu.messages
    assert msg["msg_type"] == "text" and url in msg["content"]["text"]
    assert sim.feishu.uploads == []


def test_an_image_just_at_the_limit_is_still_sent_as_an_image(sim: Any, channel: Any, http: requests.Session,
                                                              workdir: Path) -> None:
    url = sim.cdn_put("claw/s1/edge.png", 10 * MB)
    assert deliver(channel, url, http, workdir).sent_as == "image"


def test_missing_upload_scope_is_one_text_with_the_url_and_the_grant_link(sim: Any, channel: Any,
                                                                          http: requests.Session, workdir: Path) -> None:
    sim.feishu.deny_scope = True
    url = sim.cdn_put("claw/s1/clip.mp4", 2048)
    outcome = deliver(channel, url, http, workdir)
    assert outcome.sent_as == "text" and sim.feishu.grant_link() in outcome.note
    [msg] = sim.feishu.messages
    assert url in msg["content"]["text"] and sim.feishu.grant_link() in msg["content"]["text"]


class _Recorder:
    """A channel that keeps what it was handed (the file's name and size) and can refuse files."""

    name, dedupes, max_video_bytes, max_image_bytes = "recorder", False, 50 * MB, 10 * MB

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.sent: List[Any] = []

    def _file(self, kind: str, path: Path) -> str:
        self.sent.append((kind, path.name, path.stat().st_size))
        if self.refuse:
            raise FileRefused(f"nope: {self.refuse}", reason=self.refuse)
        return f"m{len(self.sent)}"

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        return self._file("video", path)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        return self._file("image", path)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        self.sent.append(("text", text, 0))
        return f"m{len(self.sent)}"


def test_the_file_handed_to_the_channel_carries_the_results_own_name(sim: Any, http: requests.Session,
                                                                     workdir: Path) -> None:
    # A channel that passes the path on (the openclaw delegate) shows this name in the chat.
    channel = _Recorder()
    deliver(channel, sim.cdn_put("claw/s1/final-cut.mp4", 2048), http, workdir)
    deliver(channel, sim.cdn_put("sd-gen-save-img/poster.png", 512), http, workdir)
    assert channel.sent == [("video", "final-cut.mp4", 2048), ("image", "poster.png", 512)]


def test_a_file_the_channel_refuses_arrives_as_its_url_with_the_channels_reason(sim: Any, http: requests.Session,
                                                                                workdir: Path) -> None:
    channel = _Recorder(refuse="the chat app may not read that file")
    url = sim.cdn_put("claw/s1/clip.mp4", 2048)
    outcome = deliver(channel, url, http, workdir)
    assert (outcome.sent_as, outcome.note) == ("text", "the chat app may not read that file")
    kind, text, _ = channel.sent[-1]
    assert kind == "text" and url in text and "may not read that file" in text


def test_a_result_that_is_neither_video_nor_image_is_sent_as_its_url(sim: Any, channel: Any,
                                                                     http: requests.Session, workdir: Path) -> None:
    url = sim.cdn_put("claw/s1/notes.pdf", 100)
    outcome = deliver(channel, url, http, workdir)
    assert outcome.sent_as == "text" and sim.requests_to("/cdn/") == []
    assert url in sim.feishu.messages[0]["content"]["text"]


def test_delivering_the_same_result_again_never_shows_twice(sim: Any, channel: Any, http: requests.Session,
                                                            workdir: Path) -> None:
    video = sim.cdn_put("claw/s1/clip.mp4", 2048)
    sim.feishu.deny_scope = True
    first = deliver(channel, video, http, workdir)  # the link as text, then the scope is granted
    sim.feishu.deny_scope = False
    again = deliver(channel, video, http, workdir)
    twice = deliver(channel, video, http, workdir)
    assert first.message_id == again.message_id == twice.message_id
    assert len(sim.feishu.messages) == 1
    other_session = deliver(channel, video, http, workdir, session_id="sess-2")
    assert other_session.message_id != first.message_id and len(sim.feishu.messages) == 2


@pytest.mark.parametrize("fault, error", [
    ("503", errors.UnavailableError), ("429", errors.UnavailableError), ("reset", errors.NetworkError),
])
def test_download_failures_are_transient_and_send_nothing(sim: Any, channel: Any, http: requests.Session,
                                                         workdir: Path, fault: str, error: type) -> None:
    url = sim.cdn_put("claw/s1/clip.mp4", 2048)
    sim.inject("/cdn/", fault)
    with pytest.raises(error) as err:
        deliver_result(channel, "oc_group1", "sess-1", url, http=http, workdir=workdir)
    assert err.value.transient
    assert list(workdir.iterdir()) == [] and sim.feishu.messages == []
    assert deliver(channel, url, http, workdir).sent_as == "video"  # the waiter's retry


def test_a_missing_result_is_a_transient_download_error(sim: Any, channel: Any, http: requests.Session,
                                                        workdir: Path) -> None:
    with pytest.raises(errors.TransientError, match="HTTP 404"):
        deliver_result(channel, "oc_group1", "sess-1", sim.cdn_url("claw/nope.mp4"), http=http, workdir=workdir)
    assert sim.feishu.messages == []


def test_only_http_urls_are_fetched(channel: Any, http: requests.Session, workdir: Path) -> None:
    with pytest.raises(errors.InputError):
        deliver_result(channel, "oc_group1", "sess-1", "file:///etc/passwd.png", http=http, workdir=workdir)


# ---- a CDN that redirects and streams without Content-Length ----

class _Cdn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    other_host = ""
    served: List[int] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/hop/"):
            self._redirect("/file/" + self.path[len("/hop/"):])
        elif self.path.startswith("/away/"):
            self._redirect(self.other_host + "/cdn/" + self.path[len("/away/"):])
        elif self.path.startswith("/file/"):
            body = b"\x00" * 4096
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith(("/endless/", "/declared/")):
            chunked = self.path.startswith("/endless/")  # no Content-Length: the size is known only by reading
            chunk = b"\x00" * (1024 * 1024)
            self.send_response(200)
            self.send_header(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(64 * len(chunk)))))
            self.end_headers()
            sent = 0
            try:
                for _ in range(64):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    sent += len(chunk)
                self.wfile.write(b"0\r\n\r\n" if chunked else b"")
            except OSError:
                pass
            _Cdn.served.append(sent)
            self.close_connection = True

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def odd_cdn(sim: Any) -> Iterator[str]:
    _Cdn.other_host = sim.url.replace("127.0.0.1", "localhost")
    _Cdn.served = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cdn)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_same_host_redirect_is_followed(sim: Any, odd_cdn: str, channel: Any, http: requests.Session,
                                          workdir: Path) -> None:
    assert deliver(channel, odd_cdn + "/hop/clip.mp4", http, workdir).sent_as == "video"
    assert sim.feishu.uploads[0]["size"] == 4096


def test_a_redirect_to_another_host_is_not_followed_and_the_url_is_sent(sim: Any, odd_cdn: str, channel: Any,
                                                                        http: requests.Session, workdir: Path) -> None:
    sim.cdn_put("clip.mp4", 2048)
    url = odd_cdn + "/away/clip.mp4"
    outcome = deliver(channel, url, http, workdir)
    assert outcome.sent_as == "text" and "another host" in outcome.note
    assert sim.requests_to("/cdn/") == [] and url in sim.feishu.messages[0]["content"]["text"]


@pytest.mark.parametrize("path, most", [("/endless/pic.png", 64 * MB), ("/declared/pic.png", 10 * MB)])
def test_a_body_over_the_limit_is_not_read_to_the_end(sim: Any, odd_cdn: str, channel: Any, http: requests.Session,
                                                      workdir: Path, path: str, most: int) -> None:
    outcome = deliver(channel, odd_cdn + path, http, workdir)
    assert outcome.sent_as == "text" and "10 MB" in outcome.note and sim.feishu.uploads == []
    deadline = time.monotonic() + 10
    while not _Cdn.served and time.monotonic() < deadline:
        time.sleep(0.02)
    # Chunked: read just past the limit; with a Content-Length over the limit: not read at all.
    assert _Cdn.served and _Cdn.served[0] < most, f"the download read {_Cdn.served} bytes"


# ---- notices ----

def test_failed_and_timeout_notices_say_what_to_do() -> None:
    failed = notice_text("failed", "sess-9", "Content policy violation")
    assert "sess-9" in failed and "Content policy violation" in failed
    timeout = notice_text("timeout", "sess-9", "")
    assert "still generating" in timeout.lower()
    assert "query-session sess-9" in timeout and "ask me to check session sess-9" in timeout
    with pytest.raises(ValueError):
        notice_text("delivered", "sess-9", "")


def test_each_notice_is_sent_once(sim: Any, channel: Any) -> None:
    first = send_notice(channel, "oc_group1", "sess-9", "failed", "Content policy violation")
    again = send_notice(channel, "oc_group1", "sess-9", "failed", "Content policy violation")
    timeout = send_notice(channel, "oc_group1", "sess-9", "timeout", "")
    assert first == again and first.sent_as == "text" and first.note == "failed"
    assert timeout.message_id != first.message_id
    assert [m["msg_type"] for m in sim.feishu.messages] == ["text", "text"]
    assert "Content policy violation" in sim.feishu.messages[0]["content"]["text"]


# ---- scripts/feishu_send_video.py ----

def run_script(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIBTV_", "OPENCLAW_", "FEISHU_", "NEXU_"))}
    base.update(env)
    return subprocess.run([sys.executable, str(SEND_SCRIPT), *args], env=base, capture_output=True, text=True,
                          encoding="utf-8", timeout=60, cwd=str(ROOT))


def test_the_send_script_delivers_one_url_and_prints_one_json_line(sim: Any, tmp_path: Path) -> None:
    url = sim.cdn_put("claw/s1/clip.mp4", 2048)
    ran = run_script(dict(sim.env(), NEXU_HOME=str(tmp_path)), "--url", url, "--chat-id", "oc_group1",
                     "--session-id", "sess-1")
    assert ran.returncode == 0, ran
    [line] = ran.stdout.splitlines()
    out = json.loads(line)
    assert out["sent_as"] == "video" and out["chat_id"] == "oc_group1" and out["url"] == url
    assert out["message_id"] == sim.feishu.messages[0]["message_id"]
    assert sim.feishu.messages[0]["uuid"] == dedupe_key("sess-1", url)


@pytest.mark.parametrize("case", ["bad chat id", "no credentials", "missing result"])
def test_the_send_script_fails_with_one_line_and_no_traceback(sim: Any, tmp_path: Path, case: str) -> None:
    env = dict(sim.env(), NEXU_HOME=str(tmp_path))
    url, chat = sim.cdn_put("claw/s1/clip.mp4", 2048), "oc_group1"
    if case == "bad chat id":
        chat = "telegram:123"
    elif case == "no credentials":
        del env["FEISHU_APP_ID"], env["FEISHU_APP_SECRET"]
    else:
        url = sim.cdn_url("claw/missing.mp4")
    ran = run_script(env, "--url", url, "--chat-id", chat)
    assert ran.returncode != 0
    assert ran.stdout.startswith("❌ ") and len(ran.stdout.splitlines()) == 1, ran
    assert "Traceback" not in ran.stdout + ran.stderr
    assert sim.FEISHU_APP_SECRET not in ran.stdout + ran.stderr
    assert sim.feishu.messages == []
