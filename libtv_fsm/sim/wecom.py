"""WeCom app API (/cgi-bin): gettoken, media/upload, message/send with the duplicate check."""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

from libtv_fsm.sim.faults import fault_reply
from libtv_fsm.sim.server import Recorded, Reply, json_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.simulator import Simulator

PREFIX = "/cgi-bin"
MIB = 1024 * 1024
LIMITS = {"image": 2 * MIB, "voice": 2 * MIB, "video": 10 * MIB, "file": 20 * MIB}
TOKEN_TTL = 7200
DEFAULT_DUPLICATE_INTERVAL = 1800
MAX_DUPLICATE_INTERVAL = 14400


def _err(code: int, msg: str, **extra: Any) -> Reply:
    body: Dict[str, Any] = {"errcode": code, "errmsg": msg}
    body.update(extra)
    return json_reply(200, body)  # WeCom answers errors with HTTP 200 and a non-zero errcode


class WecomSim:
    """WeCom's state; guarded by the simulator's lock. ``messages`` is what every member received."""

    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self.messages: List[Dict[str, Any]] = []
        self.uploads: List[Dict[str, Any]] = []
        self.limits = dict(LIMITS)
        # Members the app cannot reach (answered as invaliduser / 81013).
        self.invalid_users: Set[str] = set()
        self.tokens_issued = 0
        self.tokens: Dict[str, float] = {}
        self._media: Dict[str, Dict[str, Any]] = {}
        self._sent: Dict[str, Dict[str, Any]] = {}  # duplicate-check key -> {"msgid", "at"}

    def chat(self, user: str) -> List[Dict[str, Any]]:
        with self._sim.lock:
            return [m for m in self.messages if m["touser"] == user]

    def revoke_tokens(self) -> None:
        with self._sim.lock:
            self.tokens.clear()

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            return _err(45009, "api freq out of limit")
        if kind in ("500", "502", "503"):
            return _err(-1, "system busy")
        if kind == "forbidden":
            return _err(60020, "not allow to access from your ip")
        return fault_reply(kind, "gateway")

    def handle(self, rec: Recorded) -> Reply:
        path = rec.path[len(PREFIX):]
        if path == "/gettoken" and rec.method == "GET":
            return self._token(rec)
        token = rec.query.get("access_token", "")
        if not token:
            return _err(41001, "access_token missing")
        with self._sim.lock:
            expiry = self.tokens.get(token)
        if expiry is None:
            return _err(40014, "invalid access_token")
        if expiry <= self._sim.clock():
            return _err(42001, "access_token expired")
        if rec.body_error:
            return _err(44004, "empty content or invalid body")
        if path == "/media/upload" and rec.method == "POST":
            return self._upload(rec)
        if path == "/message/send" and rec.method == "POST":
            return self._send(rec)
        return _err(60011, "no privilege to access/modify contact/party/agent")

    def _token(self, rec: Recorded) -> Reply:
        if rec.query.get("corpid") != self._sim.WECOM_CORP_ID:
            return _err(40013, "invalid corpid")
        if rec.query.get("corpsecret") != self._sim.WECOM_CORP_SECRET:
            return _err(40001, "invalid credential")
        with self._sim.lock:
            token = "wx-sim-" + uuid.uuid4().hex
            self.tokens[token] = self._sim.clock() + TOKEN_TTL
            self.tokens_issued += 1
        return json_reply(200, {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": TOKEN_TTL})

    def _upload(self, rec: Recorded) -> Reply:
        kind = rec.query.get("type", "")
        if kind not in self.limits:
            return _err(40004, "invalid media type")
        if "media" not in rec.files:
            return _err(41005, "media data missing")
        name, size = rec.files["media"]
        if size <= 5 or size > self.limits[kind]:
            return _err(40006, "invalid file size")
        media_id = f"3sim{uuid.uuid4().hex}"
        with self._sim.lock:
            self._media[media_id] = {"type": kind, "name": name, "size": size}
            self.uploads.append({"media_id": media_id, "type": kind, "name": name, "size": size})
        return json_reply(200, {"errcode": 0, "errmsg": "", "type": kind, "media_id": media_id,
                                "created_at": str(int(time.time()))})

    def _send(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            return _err(44004, "empty content")
        if str(body.get("agentid")) != str(self._sim.WECOM_AGENT_ID):
            return _err(40056, "invalid agentid")
        msgtype = body.get("msgtype")
        content = body.get(msgtype) if isinstance(msgtype, str) else None
        if msgtype not in ("text", "image", "video", "file") or not isinstance(content, dict):
            return _err(40008, "invalid message type")
        users = [u for u in str(body.get("touser") or "").split("|") if u]
        if not users:
            return _err(40003, "invalid userid")
        with self._sim.lock:
            if msgtype == "text":
                if not str(content.get("content") or "").strip():
                    return _err(44004, "empty content")
                if len(str(content["content"]).encode("utf-8")) > 2048:
                    return _err(45002, "content size out of limit")
            else:
                media = self._media.get(str(content.get("media_id") or ""))
                if media is None or media["type"] != msgtype:
                    return _err(40007, "invalid media_id")
            reachable = [u for u in users if u not in self.invalid_users]
            if not reachable:
                return _err(81013, "user & party & tag all invalid")
            invalid = "|".join(u for u in users if u in self.invalid_users)
            key: Optional[str] = None
            if body.get("enable_duplicate_check") == 1:
                # The check compares whole messages: same app, same receivers, same content.
                interval = min(int(body.get("duplicate_check_interval") or DEFAULT_DUPLICATE_INTERVAL),
                               MAX_DUPLICATE_INTERVAL)
                key = json.dumps([body.get("agentid"), body.get("touser"), msgtype, content], sort_keys=True)
                seen = self._sent.get(key)
                if seen is not None and self._sim.clock() - seen["at"] < interval:
                    return json_reply(200, {"errcode": 0, "errmsg": "ok", "invaliduser": invalid, "msgid": seen["msgid"]})
            msgid = "sim" + uuid.uuid4().hex[:24]
            for user in reachable:
                self.messages.append({"touser": user, "msgtype": msgtype, "content": dict(content), "msgid": msgid,
                                      "file_name": self._media.get(str(content.get("media_id")), {}).get("name")})
            if key is not None:
                self._sent[key] = {"msgid": msgid, "at": self._sim.clock()}
        return json_reply(200, {"errcode": 0, "errmsg": "ok", "invaliduser": invalid, "msgid": msgid})


__all__ = ["WecomSim", "PREFIX"]
