"""Feishu Open Platform (/open-apis): tenant token, file and image uploads, messages with uuid de-dup."""
from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from libtv_fsm.sim.server import Recorded, Reply, json_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.simulator import Simulator

MIB = 1024 * 1024
FILE_LIMIT = 30 * MIB
IMAGE_LIMIT = 10 * MIB
TOKEN_TTL = 7200
# A repeated uuid within this many seconds sends nothing new.
UUID_WINDOW = 3600
FILE_TYPES = ("opus", "mp4", "pdf", "doc", "xls", "ppt", "stream")
MSG_TYPES = ("text", "post", "image", "file", "audio", "media", "sticker", "interactive", "share_chat", "share_user")
# The content key each message type must carry.
_CONTENT_KEYS = {"text": "text", "image": "image_key", "file": "file_key", "media": "file_key", "audio": "file_key"}
ID_PREFIX = {"open_id": "ou_", "chat_id": "oc_", "union_id": "on_"}


def _ok(data: Any) -> Reply:
    return json_reply(200, {"code": 0, "msg": "success", "data": data})


def _err(status: int, code: int, msg: str, **extra: Any) -> Reply:
    body = {"code": code, "msg": msg}
    body.update(extra)
    return json_reply(status, body)


class FeishuSim:
    """Feishu's state; guarded by the simulator's lock."""

    def __init__(self, sim: "Simulator") -> None:
        self._sim = sim
        self.messages: List[Dict[str, Any]] = []
        self.uploads: List[Dict[str, Any]] = []
        # True: uploads answer HTTP 400 code 99991672 with a grant link (the app lacks im:resource).
        self.deny_scope = False
        self.tokens_issued = 0
        self.tokens: Dict[str, float] = {}  # token -> expiry (sim clock)
        self._by_uuid: Dict[str, Dict[str, Any]] = {}
        self._keys: Dict[str, Dict[str, Any]] = {}  # file_key / image_key -> upload record

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next call with one answers 99991663)."""
        with self._sim.lock:
            self.tokens.clear()

    def grant_link(self, scopes: str = "im:resource") -> str:
        return (f"https://open.feishu.cn/app/{self._sim.FEISHU_APP_ID}/auth?q={scopes}"
                f"&op_from=openapi&token_type=tenant")

    def handle(self, rec: Recorded) -> Reply:
        if rec.body_error:
            return _err(400, 9499, "Bad Request: invalid body")
        if rec.path == "/open-apis/auth/v3/tenant_access_token/internal" and rec.method == "POST":
            return self._token(rec)
        denied = self._check_token(rec)
        if denied is not None:
            return denied
        if rec.path == "/open-apis/im/v1/files" and rec.method == "POST":
            return self._upload(rec, "file")
        if rec.path == "/open-apis/im/v1/images" and rec.method == "POST":
            return self._upload(rec, "image")
        if rec.path == "/open-apis/im/v1/messages" and rec.method == "POST":
            return self._send(rec)
        return json_reply(404, {"code": 404, "msg": "404 page not found"})

    def _token(self, rec: Recorded) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        if body.get("app_id") != self._sim.FEISHU_APP_ID:
            return _err(400, 10003, "invalid param: app_id is invalid")
        if body.get("app_secret") != self._sim.FEISHU_APP_SECRET:
            return _err(400, 10014, "app secret invalid")
        with self._sim.lock:
            token = f"t-sim{uuid.uuid4().hex}"
            self.tokens[token] = self._sim.clock() + TOKEN_TTL
            self.tokens_issued += 1
        # The token endpoint answers flat, not under "data".
        return json_reply(200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": TOKEN_TTL})

    def _check_token(self, rec: Recorded) -> Optional[Reply]:
        auth = rec.headers.get("authorization") or ""
        if not auth.startswith("Bearer "):
            return _err(400, 99991661, "Missing access token for authorization. Please make a request with token attached.")
        token = auth[len("Bearer "):].strip()
        with self._sim.lock:
            expiry = self.tokens.get(token)
        if expiry is None or expiry <= self._sim.clock():
            return _err(400, 99991663, "Invalid access token for authorization. Please make a request with token attached.")
        return None

    def _scope_denied(self) -> Reply:
        link = self.grant_link()
        msg = ("Access denied. One of the following scopes is required: [im:resource]."
               f"应用尚未开通所需的应用身份权限：[im:resource]，点击链接申请并开通任一权限即可：{link}")
        error = {"log_id": f"sim{uuid.uuid4().hex[:24]}", "helps": [{"url": link, "description": "Grant the scope"}],
                 "permission_violations": [{"type": "action_scope_required", "subject": "im:resource"}]}
        return _err(400, 99991672, msg, error=error)

    def _upload(self, rec: Recorded, kind: str) -> Reply:
        if self.deny_scope:
            return self._scope_denied()
        field = "file" if kind == "file" else "image"
        if field not in rec.files:
            return _err(400, 234001, f"Invalid request param: missing field {field}.")
        filename, size = rec.files[field]
        if kind == "file":
            file_type = rec.form.get("file_type", "")
            if file_type not in FILE_TYPES:
                return _err(400, 234001, "Invalid request param: file_type.")
            if not rec.form.get("file_name"):
                return _err(400, 234001, "Invalid request param: file_name.")
            if size > FILE_LIMIT:
                return _err(400, 234006, "The file size exceeds the limit (30MB).")
        else:
            file_type = rec.form.get("image_type", "")
            if file_type not in ("message", "avatar"):
                return _err(400, 234001, "Invalid request param: image_type.")
            if size > IMAGE_LIMIT:
                return _err(400, 234006, "The image size exceeds the limit (10MB).")
        if size == 0:
            return _err(400, 234010, "File size is 0.")
        prefix = "file_v3_sim_" if kind == "file" else "img_v3_sim_"
        key = prefix + uuid.uuid4().hex[:20]
        record = {"kind": kind, "file_type": file_type, "file_name": rec.form.get("file_name") or filename,
                  "size": size, "key": key}
        with self._sim.lock:
            self.uploads.append(record)
            self._keys[key] = record
        return _ok({"file_key": key} if kind == "file" else {"image_key": key})

    def _send(self, rec: Recorded) -> Reply:
        id_type = rec.query.get("receive_id_type", "")
        body = rec.json if isinstance(rec.json, dict) else {}
        receive_id, msg_type, raw = body.get("receive_id"), body.get("msg_type"), body.get("content")
        if id_type not in ID_PREFIX:
            return _err(400, 99992402, "field validation failed: receive_id_type")
        if not isinstance(receive_id, str) or not receive_id.startswith(ID_PREFIX[id_type]):
            return _err(400, 230001, f"Your request contains an invalid request parameter, ext=invalid receive_id for {id_type}.")
        if msg_type not in MSG_TYPES:
            return _err(400, 230001, "Your request contains an invalid request parameter, ext=invalid msg_type.")
        if not isinstance(raw, str):
            return _err(400, 230001, "Your request contains an invalid request parameter, ext=content must be a string.")
        try:
            content = json.loads(raw)
        except ValueError:
            return _err(400, 230001, "Your request contains an invalid request parameter, ext=content is not valid json.")
        need = _CONTENT_KEYS.get(msg_type)
        if need and not (isinstance(content, dict) and isinstance(content.get(need), str) and content.get(need)):
            return _err(400, 230001, f"Your request contains an invalid request parameter, ext=content.{need} is required.")
        msg_uuid = body.get("uuid")
        with self._sim.lock:
            now = self._sim.clock()
            seen = self._by_uuid.get(msg_uuid) if msg_uuid else None
            if seen is not None and now - seen["at"] < UUID_WINDOW:
                return _ok(dict(seen["data"]))
            if msg_type in ("image", "file", "media"):
                upload = self._keys.get(content[need])
                if upload is None or (msg_type == "image") != (upload["kind"] == "image"):
                    return _err(400, 230001, f"Your request contains an invalid request parameter, ext=invalid {need}.")
                if msg_type == "file" and upload["file_type"] == "mp4":
                    return _err(400, 230055, "The type of file upload does not match the type of message being sent.")
            message_id = f"om_sim{uuid.uuid4().hex[:24]}"
            data = {"message_id": message_id, "root_id": "", "parent_id": "", "msg_type": msg_type,
                    "create_time": str(int(time.time() * 1000)), "chat_id": receive_id if id_type == "chat_id" else "oc_sim_p2p",
                    "sender": {"id": self._sim.FEISHU_APP_ID, "id_type": "app_id", "sender_type": "app"},
                    "body": {"content": raw}}
            entry = {"receive_id": receive_id, "receive_id_type": id_type, "msg_type": msg_type,
                     "content": content, "uuid": msg_uuid, "message_id": message_id}
            self.messages.append(entry)
            if msg_uuid:
                self._by_uuid[msg_uuid] = {"data": data, "at": now}
        return _ok(data)
