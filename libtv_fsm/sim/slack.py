"""Slack Web API (/slack/api/METHOD) with the external upload flow (/slack/upload/<file>), DMs and history."""
from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from libtv_fsm.sim.faults import fault_reply
from libtv_fsm.sim.server import Recorded, Reply, json_reply, text_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.simulator import Simulator

API_PREFIX = "/slack/api/"
UPLOAD_PREFIX = "/slack/upload/"
FILE_LIMIT = 1024 * 1024 * 1024


def _fail(error: str, **extra: Any) -> Reply:
    body: Dict[str, Any] = {"ok": False, "error": error}
    body.update(extra)
    return json_reply(200, body)  # Slack answers method errors with HTTP 200 and ok:false


class SlackSim:
    """Slack's state; guarded by the simulator's lock. ``messages`` is what every conversation received."""

    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self.messages: List[Dict[str, Any]] = []
        self.upload_limit = FILE_LIMIT
        self.retry_after = 1
        # Conversations the bot is not a member of, and whether the token lacks the history scope.
        self.not_in_channel: Set[str] = set()
        self.history_denied = False
        self._files: Dict[str, Dict[str, Any]] = {}
        self._ts = 0

    def dm_of(self, user: str) -> str:
        """The bot's DM conversation with a user (stable, as Slack's is)."""
        return "D" + hashlib.sha256(user.encode()).hexdigest()[:10].upper()

    def chat(self, channel: str) -> List[Dict[str, Any]]:
        with self._sim.lock:
            return [m for m in self.messages if m["channel"] == channel]

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            return json_reply(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": str(self.retry_after)})
        if kind in ("500", "502", "503"):
            return text_reply(int(kind), "<html><body>Slack is having trouble</body></html>")
        return fault_reply(kind, "gateway")

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, rec: Recorded) -> Reply:
        if rec.path.startswith(UPLOAD_PREFIX):
            return self._upload(rec)
        auth = rec.headers.get("authorization") or ""
        if not auth.startswith("Bearer "):
            return _fail("not_authed")
        if auth[len("Bearer "):].strip() != self._sim.SLACK_BOT_TOKEN:
            return _fail("invalid_auth")
        if rec.body_error:
            return _fail("invalid_form_data")
        params: Dict[str, Any] = dict(rec.query)
        params.update(rec.form)
        if isinstance(rec.json, dict):
            params.update(rec.json)
        method = rec.path[len(API_PREFIX):]
        handler = {
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete,
            "chat.postMessage": self._post,
            "conversations.open": self._open,
            "conversations.history": self._history,
            "files.upload": lambda p: _fail("method_deprecated"),  # retired: a client must never use it
        }.get(method)
        if handler is None:
            return _fail("unknown_method")
        return handler(params)

    def _next_ts(self) -> str:
        self._ts += 1
        return f"{int(time.time())}.{self._ts:06d}"

    def _conversation(self, channel: Any) -> Optional[str]:
        channel = str(channel or "")
        if channel[:1] in ("U", "W") and len(channel) > 2:
            return self.dm_of(channel)  # chat.postMessage to a user id posts in the app's DM
        return channel if channel[:1] in ("C", "G", "D") and len(channel) > 2 else None

    # -- methods -----------------------------------------------------------------------------

    def _get_upload_url(self, params: Dict[str, Any]) -> Reply:
        name = str(params.get("filename") or "")
        try:
            length = int(params.get("length"))  # type: ignore[arg-type]  # None: TypeError, answered below
        except (TypeError, ValueError):
            return _fail("invalid_arguments")
        if not name or length <= 0:
            return _fail("invalid_arguments")
        if length > self.upload_limit:
            return _fail("file_too_large")
        with self._sim.lock:
            file_id = f"F{len(self._files) + 1:08d}SIM"
            self._files[file_id] = {"name": name, "length": length, "size": None}
        return json_reply(200, {"ok": True, "upload_url": f"{self._sim.url}{UPLOAD_PREFIX}{file_id}", "file_id": file_id})

    def _upload(self, rec: Recorded) -> Reply:
        file_id = rec.path[len(UPLOAD_PREFIX):]
        if rec.method != "POST":
            return text_reply(405, "Method Not Allowed", "text/plain")
        if "authorization" in rec.headers:
            return text_reply(400, "the upload URL is pre-signed; no token belongs here", "text/plain")
        size = rec.files["file"][1] if "file" in rec.files else rec.body_size
        with self._sim.lock:
            entry = self._files.get(file_id)
            if entry is None:
                return text_reply(404, "Not Found", "text/plain")
            entry["size"] = size
        return text_reply(200, f"OK - {size}", "text/plain")

    def _complete(self, params: Dict[str, Any]) -> Reply:
        files = params.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                return _fail("invalid_arguments")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
            return _fail("invalid_arguments")
        channel = self._conversation(params.get("channel_id"))
        if params.get("channel_id") and channel is None:
            return _fail("channel_not_found")
        if channel in self.not_in_channel:
            return _fail("not_in_channel")
        shared = []
        with self._sim.lock:
            for f in files:
                entry = self._files.get(str(f.get("id")))
                if entry is None or entry["size"] is None:
                    return _fail("file_not_found")
                if entry["size"] != entry["length"]:
                    return _fail("file_upload_size_mismatch")
                shared.append({"id": f["id"], "name": entry["name"], "title": f.get("title") or entry["name"],
                               "size": entry["size"]})
            if channel:
                self.messages.append({"channel": channel, "kind": "file", "ts": self._next_ts(), "files": shared,
                                      "text": str(params.get("initial_comment") or "")})
        return json_reply(200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shared]})

    def _post(self, params: Dict[str, Any]) -> Reply:
        channel = self._conversation(params.get("channel"))
        if channel is None:
            return _fail("channel_not_found")
        if channel in self.not_in_channel:
            return _fail("not_in_channel")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _fail("no_text")
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                return _fail("invalid_metadata_format")
        with self._sim.lock:
            ts = self._next_ts()
            entry: Dict[str, Any] = {"channel": channel, "kind": "text", "ts": ts, "text": text, "files": [], "metadata": metadata}
            self.messages.append(entry)
        return json_reply(200, {"ok": True, "channel": channel, "ts": ts,
                                "message": {"type": "message", "text": text, "ts": ts, "bot_id": "BSIM"}})

    def _open(self, params: Dict[str, Any]) -> Reply:
        users = [u.strip() for u in str(params.get("users") or "").split(",") if u.strip()]
        if len(users) != 1 or users[0][:1] not in ("U", "W"):
            return _fail("user_not_found")
        return json_reply(200, {"ok": True, "channel": {"id": self.dm_of(users[0])}})

    def _history(self, params: Dict[str, Any]) -> Reply:
        if self.history_denied:
            return _fail("missing_scope", needed="channels:history", provided="chat:write,files:write")
        channel = self._conversation(params.get("channel"))
        if channel is None:
            return _fail("channel_not_found")
        if channel in self.not_in_channel:
            return _fail("not_in_channel")
        try:
            limit = max(1, min(int(params.get("limit") or 100), 999))
            start = int(params.get("cursor") or 0)
        except ValueError:
            return _fail("invalid_cursor")
        metadata = str(params.get("include_all_metadata") or "").lower() in ("true", "1")
        with self._sim.lock:
            newest_first = list(reversed(self.chat(channel)))
        page = newest_first[start:start + limit]
        out = []
        for m in page:
            view: Dict[str, Any] = {"type": "message", "ts": m["ts"], "text": m["text"], "bot_id": "BSIM"}
            if m["files"]:
                view["files"] = [dict(f) for f in m["files"]]
            if metadata and m.get("metadata"):
                view["metadata"] = m["metadata"]
            out.append(view)
        more = start + limit < len(newest_first)
        return json_reply(200, {"ok": True, "messages": out, "has_more": more,
                                "response_metadata": {"next_cursor": str(start + limit) if more else ""}})
