"""Telegram Bot API (/bot<token>/METHOD): sendVideo, sendPhoto, sendMessage, getMe; no de-duplication.

A file goes as a multipart part named after the field (our client), or, as grammY (OpenClaw's
Telegram library) sends it, as the field's value `attach://<name>` with the file in the part `<name>`.
What a polling bot calls at start (deleteWebhook, setMyCommands, getUpdates) is answered too, so a
real OpenClaw gateway can run against the simulator.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from libtv_fsm.sim.faults import fault_reply
from libtv_fsm.sim.server import Recorded, Reply, json_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.simulator import Simulator

MIB = 1024 * 1024
UPLOAD_LIMIT = 50 * MIB
PHOTO_LIMIT = 10 * MIB
_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
# Bot setup calls a polling bot makes at start; the simulator has nothing to change for them.
_SETUP = frozenset({"deletewebhook", "setwebhook", "setmycommands", "deletemycommands", "setmydescription",
                    "setmyshortdescription", "setchatmenubutton", "close", "logout"})
# getUpdates holds a long poll at most this long (a real bot asks for 30 s; a test should not wait that).
LONG_POLL_SECONDS = 5.0


def _error(status: int, description: str, **parameters: Any) -> Reply:
    body: Dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json_reply(status, body)


class TelegramSim:
    """The Bot API's state; guarded by the simulator's lock. ``messages`` is what every chat received."""

    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self.messages: List[Dict[str, Any]] = []
        self.upload_limit = UPLOAD_LIMIT
        self.photo_limit = PHOTO_LIMIT
        self.retry_after = 1
        # Basic groups that became supergroups: old id -> new id (answered with migrate_to_chat_id).
        self.migrated: Dict[str, str] = {}
        # Chats the bot is not in (or that do not exist): answered "chat not found".
        self.unreachable: Set[str] = set()
        self._next_id: Dict[str, int] = {}

    def chat(self, chat_id: str, thread: Optional[int] = None) -> List[Dict[str, Any]]:
        """The messages one chat (and, if given, one forum topic) received, in order."""
        with self._sim.lock:
            return [m for m in self.messages if m["chat_id"] == str(chat_id) and (thread is None or m["thread"] == thread)]

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            seconds = self.retry_after
            return _error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
        if kind in ("500", "502", "503"):
            return _error(int(kind), "Internal Server Error" if kind == "500" else "Bad Gateway")
        if kind == "forbidden":
            return _error(403, "Forbidden: bot was blocked by the user")
        return fault_reply(kind, "gateway")

    def handle(self, rec: Recorded) -> Reply:
        match = _PATH.match(rec.path)
        if match is None:
            return _error(404, "Not Found")
        if match.group("token") != self._sim.TELEGRAM_BOT_TOKEN:
            return _error(401, "Unauthorized")
        if rec.body_error:
            return _error(400, "Bad Request: can't parse request body")
        if rec.method not in ("GET", "POST"):
            return _error(405, "Method Not Allowed")
        method = match.group("method").lower()  # the Bot API's method names are case-insensitive
        params: Dict[str, Any] = dict(rec.query)
        params.update(rec.form)
        if isinstance(rec.json, dict):
            params.update(rec.json)
        if method == "getme":
            return json_reply(200, {"ok": True, "result": {"id": 1000001, "is_bot": True, "first_name": "LibTV sim",
                                                           "username": "libtv_sim_bot"}})
        if method in _SETUP:
            return json_reply(200, {"ok": True, "result": True})
        if method == "getupdates":
            # Nobody writes to the bot here: an empty answer after the long poll, as the real API gives.
            try:
                wait = min(max(float(params.get("timeout") or 0), 0.0), LONG_POLL_SECONDS)
            except (TypeError, ValueError):
                wait = 0.0
            return Reply(status=200, body=b'{"ok":true,"result":[]}', length=23,
                         headers={"Content-Type": "application/json"}, delay=wait)
        if method == "sendmessage":
            return self._send(params, "text", rec)
        if method == "sendvideo":
            return self._send(params, "video", rec)
        if method == "sendphoto":
            return self._send(params, "photo", rec)
        return _error(404, "Not Found: method not found")

    def _send(self, params: Dict[str, Any], kind: str, rec: Recorded) -> Reply:
        chat = str(params.get("chat_id", "")).strip()
        if not chat:
            return _error(400, "Bad Request: chat_id is empty")
        if not _CHAT.match(chat) or chat in self.unreachable:
            return _error(400, "Bad Request: chat not found")
        with self._sim.lock:
            if chat in self.migrated:
                return _error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                              migrate_to_chat_id=int(self.migrated[chat]))
        thread_raw = params.get("message_thread_id")
        thread: Optional[int] = None
        if thread_raw not in (None, ""):
            try:
                thread = int(thread_raw)
            except (TypeError, ValueError):
                return _error(400, "Bad Request: invalid message_thread_id")
            if not chat.startswith("-100"):
                return _error(400, "Bad Request: message thread not found")
        entry: Dict[str, Any] = {"chat_id": chat, "thread": thread, "kind": kind}
        result: Dict[str, Any] = {}
        if kind == "text":
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                return _error(400, "Bad Request: message text is empty")
            if len(text) > 4096:
                return _error(400, "Bad Request: message is too long")
            entry["text"] = result["text"] = text
        else:
            part = kind
            value = params.get(kind)
            if isinstance(value, str) and value.startswith("attach://"):
                part = value[len("attach://"):]  # grammY: the file is in the part this names
            if part not in rec.files:
                # Any other string would be a file_id or a URL for Telegram to fetch; the clients always upload.
                return _error(400, f"Bad Request: there is no {kind} in the request")
            name, size = rec.files[part]
            if size > self.upload_limit:
                return _error(413, "Request Entity Too Large")
            if kind == "photo" and size > self.photo_limit:
                return _error(400, "Bad Request: file is too big")
            if size == 0:
                return _error(400, "Bad Request: file must be non-empty")
            entry.update(file_name=name, size=size, caption=params.get("caption") or "")
            media = {"file_id": f"sim-{kind}-{len(self.messages) + 1}", "file_unique_id": f"u{len(self.messages) + 1}",
                     "file_size": size}
            result[kind] = [media] if kind == "photo" else dict(media, file_name=name, mime_type="video/mp4")
        with self._sim.lock:
            message_id = self._next_id.get(chat, 0) + 1
            self._next_id[chat] = message_id
            entry["message_id"] = message_id
            self.messages.append(entry)
        chat_type = "private" if not chat.startswith("-") else "supergroup" if chat.startswith("-100") else "group"
        chat_view = {"id": int(chat) if chat.lstrip("-").isdigit() else chat, "type": chat_type}
        result.update(message_id=message_id, date=int(time.time()), chat=chat_view,
                      **({"message_thread_id": thread, "is_topic_message": True} if thread is not None else {}))
        return json_reply(200, {"ok": True, "result": result})
