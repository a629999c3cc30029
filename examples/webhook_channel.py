"""A custom chat channel: every result is POSTed to a webhook, with an Idempotency-Key so a retried send shows once.

Use it from the CLI and the detached waiter by declaring it as a plugin in your package's
pyproject.toml, then `--channel webhook --chat-id ROOM` with LIBTV_WEBHOOK_URL set:

    [project.entry-points."libtv_fsm.channels"]
    webhook = "webhook_channel:WebhookChannel"

Run this file (`python examples/webhook_channel.py`) to send a video, an image and a text to a
small receiver on 127.0.0.1 and see what it got.
"""
from __future__ import annotations

import email
import json
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import requests

from libtv_fsm import errors
from libtv_fsm.channels import Channel

MB = 1024 * 1024


class WebhookChannel(Channel):
    """POST JSON (text) or multipart (`payload` JSON + `file`) to ``LIBTV_WEBHOOK_URL``; the answer is `{"id"}`."""

    name = "webhook"
    dedupes = True  # the receiver drops a repeated Idempotency-Key, as WebhookReceiver below does
    max_video_bytes = 50 * MB
    max_image_bytes = 10 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None) -> None:
        super().__init__(env, session, variant)
        self.url = (env.get("LIBTV_WEBHOOK_URL") or "").strip()
        self.token = (env.get("LIBTV_WEBHOOK_TOKEN") or "").strip()

    def normalize_target(self, chat_id: str) -> str:
        room = (chat_id or "").strip()
        if not room or len(room) > 200 or any(c.isspace() for c in room):
            raise errors.InputError(f"Not a webhook room: {chat_id!r}")
        return room

    def check_ready(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise errors.ConfigError("Set LIBTV_WEBHOOK_URL to the webhook's http(s) URL")

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        return self._send_file(target, "video", path, file_name, dedupe_key)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        return self._send_file(target, "image", path, path.name, dedupe_key)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        return self._post(dedupe_key, json={"chat": target, "kind": "text", "text": text})

    def _send_file(self, target: str, kind: str, path: Path, file_name: str, dedupe_key: str) -> str:
        from requests_toolbelt import MultipartEncoder  # streams the file instead of loading it

        payload = json.dumps({"chat": target, "kind": kind, "file_name": file_name})
        with path.open("rb") as handle:
            body = MultipartEncoder({"payload": payload, "file": (file_name, handle, "application/octet-stream")})
            return self._post(dedupe_key, data=body, headers={"Content-Type": body.content_type})

    def _post(self, dedupe_key: str, **kwargs: Any) -> str:
        from libtv_fsm import transport

        self.check_ready()
        headers = dict(kwargs.pop("headers", {}), **{"Idempotency-Key": dedupe_key})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = transport.request(self.http, "POST", self.url, headers=headers, **kwargs)
        except requests.RequestException as err:
            raise errors.NetworkError(f"Webhook unreachable ({type(err).__name__})") from None
        if response.status_code == 413:
            from libtv_fsm.channels import TooLarge

            raise TooLarge("The webhook refused the file as too large")
        if response.status_code >= 500 or response.status_code == 429:
            raise errors.UnavailableError(f"Webhook answered HTTP {response.status_code}", status=response.status_code)
        if response.status_code >= 300:
            raise errors.PermanentError(f"Webhook refused the message (HTTP {response.status_code})",
                                        status=response.status_code)
        try:
            return str(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise errors.BadResponse("Webhook answer has no id") from None


class WebhookReceiver:
    """A receiving end on 127.0.0.1 for tries and tests: keeps each message once per Idempotency-Key."""

    def __init__(self) -> None:
        self.messages: List[Dict[str, Any]] = []
        self.requests = 0
        self._by_key: Dict[str, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                message = receiver.parse(self.headers.get("Content-Type", ""), body)
                answer = json.dumps({"id": receiver.keep(self.headers.get("Idempotency-Key", ""), message)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def parse(content_type: str, body: bytes) -> Dict[str, Any]:
        if not content_type.startswith("multipart/"):
            return json.loads(body.decode("utf-8"))
        parts = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        message: Dict[str, Any] = {}
        for part in parts.get_payload():  # type: ignore[union-attr]
            data = part.get_payload(decode=True) or b""
            if part.get_param("name", header="content-disposition") == "payload":
                message.update(json.loads(data.decode("utf-8")))
            else:
                message["bytes"] = len(data)
        return message

    def keep(self, key: str, message: Dict[str, Any]) -> str:
        with self._lock:
            self.requests += 1
            if key not in self._by_key:
                self._by_key[key] = f"hook-{len(self.messages) + 1}"
                self.messages.append(dict(message, id=self._by_key[key]))
            return self._by_key[key]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> int:
    receiver = WebhookReceiver()
    try:
        channel = WebhookChannel({"LIBTV_WEBHOOK_URL": receiver.url})
        channel.check_ready()
        with tempfile.TemporaryDirectory() as tmp:
            clip, still = Path(tmp, "clip.mp4"), Path(tmp, "still.png")
            clip.write_bytes(b"\0" * 200_000)
            still.write_bytes(b"\x89PNG" + b"\0" * 5_000)
            channel.send_video("room-7", clip, file_name="clip.mp4", dedupe_key="k-video")
            channel.send_video("room-7", clip, file_name="clip.mp4", dedupe_key="k-video")  # a retry: shown once
            channel.send_image("room-7", still, dedupe_key="k-image")
            channel.send_text("room-7", "Your video is ready", dedupe_key="k-text")
        print(f"{receiver.requests} requests, {len(receiver.messages)} messages:")
        for message in receiver.messages:
            print(f"  {message['id']} {message['chat']} {message['kind']}: "
                  f"{message.get('file_name') or message.get('text')} {message.get('bytes', '')}".rstrip())
        return 0 if len(receiver.messages) == 3 else 1
    finally:
        receiver.close()


if __name__ == "__main__":
    sys.exit(main())
