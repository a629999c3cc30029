"""WeCom (企业微信) app mode: the access token, media uploads, and messages with the server's duplicate check."""
from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attrs
import requests

from libtv_fsm import errors
from libtv_fsm.channels.accounts import override_url, pick_account, resolve_secret
from libtv_fsm.channels.base import MB, Channel, RateLimit, TooLarge, exchange, scrub

log = logging.getLogger(__name__)

BASE_URL = "https://qyapi.weixin.qq.com/cgi-bin"
FILE_LIMIT = 20 * MB
TOKEN_REJECTED = frozenset({40014, 41001, 42001})  # invalid / missing / expired access_token
BUSY = frozenset({-1, 45009, 45033})  # system busy, call frequency, concurrency
TOO_LARGE = frozenset({40006, 40009, 40011, 40058})
# The widest window WeCom allows (4 hours): an identical message within it is dropped.
DUPLICATE_CHECK_SECONDS = 14400
# No Retry-After here: a short pause, then the bounded waits hand over to the waiter's backoff.
BUSY_WAIT_SECONDS = 2.0
TOKEN_MARGIN_SECONDS = 300.0
# Uploaded media live 3 days; a kept media_id is reused only inside the duplicate-check window.
MEDIA_KEEP_SECONDS = 3 * 24 * 3600
MAX_TEXT_BYTES = 2048
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@attrs.frozen
class WecomCredentials:
    """One self-built app: corp id, its secret, its agent id, and the API base; no secret in a repr."""

    corp_id: str
    corp_secret: str = attrs.field(repr=False)
    agent_id: int
    base_url: str
    source: str


def _agent_id(value: Any, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise errors.ConfigError(f"{where}: the WeCom agentId must be a number") from None


def resolve_credentials(env: Mapping[str, str]) -> WecomCredentials:
    """WECOM_CORP_ID / WECOM_CORP_SECRET / WECOM_AGENT_ID, else channels.wecom.agent of openclaw.json."""
    base = override_url(env, "LIBTV_WECOM_BASE_URL", BASE_URL)
    names = ("WECOM_CORP_ID", "WECOM_CORP_SECRET", "WECOM_AGENT_ID")
    values = [(env.get(n) or "").strip() for n in names]
    if any(values):
        if not all(values):
            raise errors.ConfigError("WECOM_CORP_ID, WECOM_CORP_SECRET and WECOM_AGENT_ID must be set together")
        return WecomCredentials(values[0], values[1], _agent_id(values[2], "WECOM_AGENT_ID"), base, "environment")

    def read(account: Mapping[str, Any], where: str) -> Optional[Tuple[str, str, int]]:
        agent = account.get("agent")
        if not isinstance(agent, dict):
            return None
        corp = resolve_secret(agent.get("corpId"), env, where + " agent.corpId")
        secret = resolve_secret(agent.get("corpSecret"), env, where + " agent.corpSecret")
        if not (corp and secret and agent.get("agentId") not in (None, "")):
            return None
        return corp, secret, _agent_id(agent.get("agentId"), where)

    try:
        (corp, secret, agent_id), where, _ = pick_account(env, "wecom", read)
    except errors.ConfigError as err:
        raise errors.ConfigError(
            "No WeCom app credentials: set WECOM_CORP_ID, WECOM_CORP_SECRET and WECOM_AGENT_ID, or "
            "channels.wecom.agent.{corpId,corpSecret,agentId} in openclaw.json (only the app mode can send); "
            f"{err}") from None
    return WecomCredentials(corp, secret, agent_id, base, where)


def parse_target(chat_id: str) -> str:
    """The member's userid for `wecom:<id>`, `user:<id>` or a bare id (`@all` is refused: it is everyone)."""
    raw = (chat_id or "").strip()
    shown = raw[:60]
    for prefix in ("wecom:", "user:"):
        if raw.lower().startswith(prefix):
            raw = raw[len(prefix):].strip()
    if not _USER.match(raw) or raw.lower() == "@all":
        raise errors.InputError(f"Invalid WeCom target '{shown}': expected a member's userid, as wecom:<userid> "
                                "or a bare userid")
    return raw


class MediaKeep:
    """media_ids by dedupe key, on disk, so a resend after a crash posts the identical request.

    WeCom's duplicate check compares whole messages; a re-upload would get a new media_id and
    slip past it. A lost entry only weakens that check; it never changes a session.
    """

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.clock = clock

    def _path(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json")

    def get(self, key: str, kind: str) -> Optional[str]:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        fresh = self.clock() - float(entry.get("at", 0)) < DUPLICATE_CHECK_SECONDS
        return entry.get("media_id") if fresh and entry.get("type") == kind else None

    def put(self, key: str, kind: str, media_id: str) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=str(self.folder), prefix=".media-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"type": kind, "media_id": media_id, "at": self.clock()}, out)
            os.replace(tmp, self._path(key))
            for old in self.folder.glob("*.json"):
                if self.clock() - old.stat().st_mtime > MEDIA_KEEP_SECONDS:
                    old.unlink()
        except OSError as err:
            log.warning("wecom: could not keep media_id %s: %s", media_id, err)


class WecomChannel(Channel[WecomCredentials]):
    """Sends as a WeCom self-built app (the "agent" mode) to members of the corp."""

    name = "wecom"
    dedupes = True  # enable_duplicate_check: an identical message within the window is dropped
    max_video_bytes = 10 * MB
    max_image_bytes = 2 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None, sleep: Optional[Callable[[float], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(env, session, variant, sleep)
        from libtv_fsm.config import nexu_home

        self._clock = clock
        self._token: Optional[str] = None
        self._token_until = 0.0
        self.media = MediaKeep(nexu_home(env) / "libtv-channel-cache" / "wecom-media")

    def load_credentials(self) -> WecomCredentials:
        return resolve_credentials(self.env)

    def normalize_target(self, chat_id: str) -> str:
        return parse_target(chat_id)

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        name = file_name or path.name
        # WeCom plays only mp4 as a video; other containers go as a file.
        kind = "video" if name.lower().endswith(".mp4") else "file"
        return self._send_media(target, path, name, kind, self.max_video_bytes, dedupe_key)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        kind = "image" if path.suffix.lower() in (".jpg", ".jpeg", ".png") else "file"
        return self._send_media(target, path, path.name, kind, self.max_image_bytes, dedupe_key)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        content = text.encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
        return self._send(parse_target(target), "text", {"content": content})

    def _send_media(self, target: str, path: Path, name: str, kind: str, limit: int, dedupe_key: str) -> str:
        user = parse_target(target)
        size = path.stat().st_size
        if size > (FILE_LIMIT if kind == "file" else limit):
            raise TooLarge(f"The {kind} is {size} bytes; WeCom accepts at most {limit}")
        media_id = self.media.get(dedupe_key, kind)
        if media_id is None:
            media_id = self._upload(path, name, kind)
            self.media.put(dedupe_key, kind, media_id)
        return self._send(user, kind, {"media_id": media_id})

    def _upload(self, path: Path, name: str, kind: str) -> str:
        from requests_toolbelt import MultipartEncoder

        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"

        def body() -> Dict[str, Any]:
            encoder = MultipartEncoder(fields={"media": (name, path.open("rb"), mime)})
            return {"data": encoder, "headers": {"Content-Type": encoder.content_type}}

        data = self._api("/media/upload", "media upload", body, params={"type": kind})
        media_id = data.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise errors.BadResponse("WeCom media upload: the answer has no media_id")
        return media_id

    def _send(self, user: str, msgtype: str, content: Dict[str, str]) -> str:
        payload = {"touser": user, "msgtype": msgtype, "agentid": self.credentials.agent_id, msgtype: content,
                   "enable_duplicate_check": 1, "duplicate_check_interval": DUPLICATE_CHECK_SECONDS}
        data = self._api("/message/send", "send message", lambda: {"json": payload}, sent_message=True)
        if str(data.get("invaliduser") or "").strip():
            raise errors.PermanentError(f"WeCom send message: the app cannot reach member '{user}' (invaliduser)")
        log.info("wecom: sent %s to %s as %s", msgtype, user, data.get("msgid"))
        return str(data.get("msgid") or "")

    # ---- HTTP ----

    def _api(self, path: str, what: str, body: Callable[[], Dict[str, Any]], *,
             params: Optional[Dict[str, str]] = None, sent_message: bool = False) -> Dict[str, Any]:
        limits = RateLimit("WeCom", self.pause)
        refreshed = False
        while True:
            query = {"access_token": self._access_token(), **(params or {})}
            parsed = self._request("POST", path, what, body(), query, sent_message)
            code = parsed.get("errcode")
            if code in TOKEN_REJECTED and not refreshed:
                self._token, refreshed = None, True  # revoked or expired early: a new one, once
                continue
            if code in BUSY:
                limits.wait(BUSY_WAIT_SECONDS, what)
                continue
            return self._check(parsed, what)

    def _access_token(self) -> str:
        now = self._clock()
        if self._token and now < self._token_until:
            return self._token
        creds = self.credentials
        parsed = self._request("GET", "/gettoken", "token", {}, {"corpid": creds.corp_id, "corpsecret": creds.corp_secret},
                               False)
        if parsed.get("errcode") not in (0, None) or not isinstance(parsed.get("access_token"), str):
            raise errors.AuthError(f"WeCom refused the app credentials of corp {creds.corp_id} from {creds.source}: "
                                   f"{self._scrub(parsed.get('errmsg'))} (errcode {parsed.get('errcode')})")
        lifetime = float(parsed.get("expires_in") or 7200)
        self._token = parsed["access_token"]
        self._token_until = now + (lifetime - TOKEN_MARGIN_SECONDS if lifetime > 2 * TOKEN_MARGIN_SECONDS else lifetime / 2)
        return self._token

    def _request(self, method: str, path: str, what: str, kwargs: Dict[str, Any], query: Dict[str, str],
                 sent_message: bool) -> Dict[str, Any]:
        url = self.credentials.base_url + path
        headers = kwargs.pop("headers", {})
        # The secret and the token ride in the query string: no error text may quote the URL.
        response, parsed = exchange(self.http, "WeCom", method, url, what, sent_message=sent_message,
                                    params=query, headers=headers, **kwargs)
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise errors.UnavailableError(f"WeCom {what}: temporarily unavailable (HTTP {status})", status=status)
        if status == 413:
            raise TooLarge(f"WeCom {what}: the file is too large (HTTP 413)", status=status)
        if not isinstance(parsed, dict):
            if 200 <= status < 300:
                raise errors.BadResponse(f"WeCom {what}: unexpected answer", status=status)
            raise errors.PermanentError(f"WeCom {what} failed (HTTP {status})", status=status)
        return parsed

    def _check(self, parsed: Dict[str, Any], what: str) -> Dict[str, Any]:
        code = parsed.get("errcode")
        if code in (0, None):
            return parsed
        text = f"WeCom {what} failed: {self._scrub(parsed.get('errmsg'))} (errcode {code})"
        if code in TOO_LARGE:
            raise TooLarge(text, code=str(code))
        if code in BUSY:
            raise errors.UnavailableError(text, code=str(code))
        raise errors.PermanentError(text, code=str(code))

    def _scrub(self, text: Any) -> str:
        return scrub(text, self._creds.corp_secret if self._creds else None, self._token)


__all__ = ["WecomChannel", "WecomCredentials", "resolve_credentials", "parse_target", "MediaKeep"]
