"""Discord HTTP API (/discord/api/v10): channel messages with attachments, DM channels, enforced nonces."""
from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from libtv_fsm.sim.faults import fault_reply
from libtv_fsm.sim.server import Recorded, Reply, json_reply, text_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.simulator import Simulator

PREFIX = "/discord/api/v10"
UPLOAD_LIMIT = 10 * 1024 * 1024
# enforce_nonce: a repeat within "a few minutes" gets the first message back.
NONCE_WINDOW = 300.0
_MESSAGES = re.compile(r"^/channels/(\d{5,21})/messages$")


def _error(status: int, code: int, message: str, **extra: Any) -> Reply:
    body: Dict[str, Any] = {"message": message, "code": code}
    body.update(extra)
    return json_reply(status, body)


def _invalid(field: str, code: str) -> Reply:
    return _error(400, 50035, "Invalid Form Body", errors={field: {"_errors": [{"code": code}]}})


class DiscordSim:
    """Discord's state; guarded by the simulator's lock. ``messages`` is what every channel received."""

    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self.messages: List[Dict[str, Any]] = []
        self.upload_limit = UPLOAD_LIMIT
        self.retry_after = 0.5
        self.dms: Dict[str, str] = {}  # user id -> DM channel id
        self._by_nonce: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._next = 1200000000000000000

    def chat(self, channel: str) -> List[Dict[str, Any]]:
        with self._sim.lock:
            return [m for m in self.messages if m["channel_id"] == channel]

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            return json_reply(429, {"message": "You are being rate limited.", "retry_after": self.retry_after,
                                    "global": False}, headers={"Retry-After": str(max(1, round(self.retry_after)))})
        if kind in ("500", "502", "503"):
            return text_reply(int(kind), "<html><body>upstream connect error</body></html>")
        if kind == "forbidden":
            return _error(403, 50013, "Missing Permissions")
        return fault_reply(kind, "gateway")

    def _snowflake(self) -> str:
        self._next += 4096
        return str(self._next)

    def handle(self, rec: Recorded) -> Reply:
        if not (rec.headers.get("user-agent") or "").startswith("DiscordBot ("):
            return text_reply(403, "<html><body>error code: 1010</body></html>")  # the edge refuses unknown clients
        auth = rec.headers.get("authorization") or ""
        if auth != f"Bot {self._sim.DISCORD_BOT_TOKEN}":
            return _error(401, 0, "401: Unauthorized")
        if rec.body_error:
            return _error(400, 50109, "The request body contains invalid JSON.")
        path = rec.path[len(PREFIX):]
        if path == "/users/@me/channels" and rec.method == "POST":
            return self._open_dm(rec)
        match = _MESSAGES.match(path)
        if match and rec.method == "POST":
            return self._create_message(match.group(1), rec)
        return _error(404, 0, "404: Not Found")

    def _open_dm(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        user = str(body.get("recipient_id") or "")
        if not user.isdigit():
            return _invalid("recipient_id", "NUMBER_TYPE_COERCE")
        with self._sim.lock:
            channel = self.dms.setdefault(user, self._snowflake())
        return json_reply(200, {"id": channel, "type": 1, "recipients": [{"id": user, "username": f"user{user[-4:]}"}]})

    def _create_message(self, channel: str, rec: Recorded) -> Reply:
        if "payload_json" in rec.form:
            try:
                payload = json.loads(rec.form["payload_json"])
            except ValueError:
                return _error(400, 50109, "The request body contains invalid JSON.")
        else:
            payload = rec.json if isinstance(rec.json, dict) else {}
        content = payload.get("content") or ""
        if not isinstance(content, str) or len(content) > 2000:
            return _invalid("content", "BASE_TYPE_MAX_LENGTH")
        nonce = payload.get("nonce")
        if nonce is not None and (not isinstance(nonce, (str, int)) or len(str(nonce)) > 25):
            return _invalid("nonce", "BASE_TYPE_MAX_LENGTH")
        files = {k: v for k, v in rec.files.items() if re.match(r"^files\[\d+\]$", k)}
        if not content and not files:
            return _error(400, 50006, "Cannot send an empty message")
        if any(size > self.upload_limit for _, size in files.values()):
            return _error(413, 40005, "Request entity too large")
        declared = payload.get("attachments") or []
        attachments = []
        for index, (name, size) in sorted(files.items()):
            meta = next((a for a in declared if isinstance(a, dict) and f"files[{a.get('id')}]" == index), {})
            attachments.append({"id": self._snowflake(), "filename": meta.get("filename") or name, "size": size,
                                "url": f"https://cdn.discordapp.com/attachments/{channel}/{name}"})
        with self._sim.lock:
            now = self._sim.clock()
            key = (channel, str(nonce))
            seen = self._by_nonce.get(key) if nonce is not None and payload.get("enforce_nonce") else None
            if seen is not None and now - seen["at"] < NONCE_WINDOW:
                return json_reply(200, seen["message"])
            message = {"id": self._snowflake(), "channel_id": channel, "content": content, "attachments": attachments,
                       "nonce": nonce, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                       "author": {"id": "1100000000000000001", "bot": True}, "type": 0}
            self.messages.append(message)
            if nonce is not None:
                self._by_nonce[key] = {"message": message, "at": now}
        return json_reply(200, message)


__all__ = ["DiscordSim", "PREFIX"]
