"""Feishu / Lark: app credentials, the tenant token, file and image uploads, media/image/text messages."""
from __future__ import annotations

import json
import logging
import mimetypes
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import attrs
import requests

from libtv_fsm import errors
from libtv_fsm.channels.accounts import channel_section, default_path_hint, is_disabled, iter_accounts, resolve_secret
from libtv_fsm.channels.base import MB, Channel, PermissionDenied, TooLarge, close_fields, scrub

log = logging.getLogger(__name__)

DOMAINS = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
# Nexu keeps a disabled dummy account so the channel subtree exists before the first real connect.
PREWARM_ACCOUNT = "__nexu_internal_feishu_prewarm__"
PREWARM_APP_ID = "nexu-feishu-prewarm"

NO_SCOPE = 99991672
TOKEN_REJECTED = frozenset({99991661, 99991663, 99991668})  # missing / invalid / expired tenant token
RATE_LIMITED = frozenset({99991400})
FILE_TOO_LARGE = frozenset({234006})
# Fetch a new token this long before Feishu says the old one expires.
TOKEN_MARGIN_SECONDS = 300.0
MAX_UUID_CHARS = 50
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_URL = re.compile(r"https?://[^\s\"'<>()\[\]]+")


@attrs.frozen
class FeishuCredentials:
    """One app's credentials and the API base they belong to; the secret never shows in a repr."""

    app_id: str
    app_secret: str = attrs.field(repr=False)
    base_url: str
    source: str


def base_url_for(domain: Any, where: str) -> str:
    """`feishu`, `lark` or a full http(s) URL, as the API base."""
    value = str(domain or "feishu").strip()
    if value.lower() in DOMAINS:
        return DOMAINS[value.lower()]
    if urlsplit(value).scheme in ("http", "https") and urlsplit(value).netloc:
        return value.rstrip("/")
    raise errors.ConfigError(f"{where}: domain '{value}' is not 'feishu', 'lark' or an http(s) URL")


def resolve_credentials(env: Mapping[str, str]) -> FeishuCredentials:
    """FEISHU_APP_ID/FEISHU_APP_SECRET, else channels.feishu of openclaw.json (CONTRACT section 2)."""
    override = env.get("LIBTV_FEISHU_BASE_URL", "").strip()
    if override:
        override = base_url_for(override, "LIBTV_FEISHU_BASE_URL")
    app_id = env.get("FEISHU_APP_ID", "").strip()
    app_secret = env.get("FEISHU_APP_SECRET", "").strip()
    if app_id or app_secret:
        if not (app_id and app_secret):
            raise errors.ConfigError("FEISHU_APP_ID and FEISHU_APP_SECRET must be set together")
        return FeishuCredentials(app_id, app_secret, override or DOMAINS["feishu"], "environment")

    path, section = channel_section(env, "feishu")
    if path is None:
        raise errors.ConfigError(
            "Feishu credentials not found: set FEISHU_APP_ID and FEISHU_APP_SECRET, or configure "
            f"channels.feishu in openclaw.json (looked for: {default_path_hint(env)})")
    account_id, account, found_id, found_secret = _pick_account(section, env, str(path))
    where = f"{path} (channels.feishu, account '{account_id}')"
    base = override or base_url_for(account.get("domain") or section.get("domain"), where)
    return FeishuCredentials(found_id, found_secret, base, where)


def _pick_account(section: Mapping[str, Any], env: Mapping[str, str],
                  path: str) -> Tuple[str, Mapping[str, Any], str, str]:
    accounts: List[Tuple[str, Mapping[str, Any]]] = list(iter_accounts(section))
    if not accounts and ("appId" in section or "appSecret" in section):
        accounts = [("default", section)]  # single-account files keep the keys on the channel itself

    def creds(key: str, account: Mapping[str, Any]) -> Tuple[str, str]:
        where = f"{path}: channels.feishu account '{key}'"
        return (resolve_secret(account.get("appId"), env, where + " appId"),
                resolve_secret(account.get("appSecret"), env, where + " appSecret"))

    default = section.get("defaultAccount")
    if default:
        for key, account in accounts:
            if key == str(default):
                app_id, secret = creds(key, account)
                if is_disabled(account):
                    raise errors.ConfigError(f"Feishu defaultAccount '{key}' is disabled in {path}")
                if not (app_id and secret):
                    raise errors.ConfigError(f"Feishu defaultAccount '{key}' in {path} has no appId/appSecret")
                return key, account, app_id, secret
        raise errors.ConfigError(f"Feishu defaultAccount '{default}' is not among channels.feishu.accounts in {path}")

    for key, account in accounts:
        if is_disabled(account) or key == PREWARM_ACCOUNT:
            continue
        app_id, secret = creds(key, account)
        if app_id and secret and PREWARM_APP_ID not in (app_id, secret):
            return key, account, app_id, secret
    raise errors.ConfigError(
        f"No enabled Feishu account with appId and appSecret in {path} (channels.feishu.accounts); "
        "connect Feishu in Nexu/OpenClaw or set FEISHU_APP_ID and FEISHU_APP_SECRET")


def grant_link(body: Mapping[str, Any]) -> Optional[str]:
    """The admin's grant link of a 99991672: error.helps[].url, else the first URL in msg."""
    error = body.get("error")
    helps = error.get("helps") if isinstance(error, dict) else None
    for help_ in helps if isinstance(helps, list) else []:
        if isinstance(help_, dict) and isinstance(help_.get("url"), str) and help_["url"].startswith("http"):
            return help_["url"]
    urls = _URL.findall(str(body.get("msg") or ""))
    urls = [u.rstrip(".,;:!?，。；") for u in urls]
    return next((u for u in urls if "/app/" in u), urls[0] if urls else None)


class FeishuChannel(Channel[FeishuCredentials]):
    """Sends to a Feishu or Lark chat as the configured app (bot)."""

    name = "feishu"
    dedupes = True  # the message `uuid`: one send per uuid per hour
    max_video_bytes = 30 * MB
    max_image_bytes = 10 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(env, session, variant)
        # The token lives in this object only: a waiter is one process that sends a few messages,
        # and Feishu hands out the same token again while it is valid, so no file cache is kept.
        self._token: Optional[str] = None
        self._token_until = 0.0
        self._clock = clock

    def load_credentials(self) -> FeishuCredentials:
        return resolve_credentials(self.env)

    # ---- targets ----

    def normalize_target(self, chat_id: str) -> str:
        raw = (chat_id or "").strip()
        shown = raw[:60]
        for prefix in ("feishu:", "lark:"):  # OpenClaw may write the channel name in front
            if raw.lower().startswith(prefix):
                raw = raw[len(prefix):].strip()
        forced: Optional[str] = None
        if raw.lower().startswith("user:"):
            forced, raw = "open_id", raw[5:].strip()
        elif raw.lower().startswith("chat:"):
            forced, raw = "chat_id", raw[5:].strip()
        inferred = "open_id" if raw.startswith("ou_") else "chat_id" if raw.startswith("oc_") else None
        if not _ID.match(raw) or not (forced or inferred):
            raise errors.InputError(
                f"Invalid Feishu chat id '{shown}': expected an ou_ (user) or oc_ (group chat) id, "
                "optionally prefixed user: or chat:")
        kind = forced or inferred
        if kind == inferred:
            return raw
        return ("user:" if kind == "open_id" else "chat:") + raw

    @classmethod
    def _receiver(cls, normalized: str) -> Tuple[str, str]:
        if normalized.startswith("user:"):
            return "open_id", normalized[5:]
        if normalized.startswith("chat:"):
            return "chat_id", normalized[5:]
        return ("open_id" if normalized.startswith("ou_") else "chat_id"), normalized

    # ---- sends ----

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        receiver = self._receiver(self.normalize_target(target))
        self._check_size(path, self.max_video_bytes, "video")
        name = file_name or path.name

        def fields(fh: Any) -> Dict[str, Any]:
            return {"file_type": "mp4", "file_name": name, "file": (name, fh, "video/mp4")}

        data = self._upload("/open-apis/im/v1/files", path, fields, "file upload")
        file_key = _require(data, "file_key", "file upload")
        return self._send(receiver, "media", {"file_key": file_key}, dedupe_key)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        receiver = self._receiver(self.normalize_target(target))
        self._check_size(path, self.max_image_bytes, "image")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"

        def fields(fh: Any) -> Dict[str, Any]:
            return {"image_type": "message", "image": (path.name, fh, mime)}

        data = self._upload("/open-apis/im/v1/images", path, fields, "image upload")
        image_key = _require(data, "image_key", "image upload")
        return self._send(receiver, "image", {"image_key": image_key}, dedupe_key)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        receiver = self._receiver(self.normalize_target(target))
        return self._send(receiver, "text", {"text": text}, dedupe_key)

    def _check_size(self, path: Path, limit: int, kind: str) -> None:
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"The {kind} is {size} bytes; Feishu accepts at most {limit}")

    def _send(self, receiver: Tuple[str, str], msg_type: str, content: Dict[str, str], dedupe_key: str) -> str:
        receive_id_type, receive_id = receiver
        body = {"receive_id": receive_id, "msg_type": msg_type,
                "content": json.dumps(content, ensure_ascii=False), "uuid": feishu_uuid(dedupe_key)}
        data = self._call("POST", "/open-apis/im/v1/messages", "send message",
                          params={"receive_id_type": receive_id_type}, payload=body)
        message_id = _require(data, "message_id", "send message")
        log.info("feishu: sent %s to %s %s as %s", msg_type, receive_id_type, receive_id, message_id)
        return message_id

    def _upload(self, path: str, file: Path, fields: Callable[[Any], Dict[str, Any]], what: str) -> Dict[str, Any]:
        from requests_toolbelt import MultipartEncoder

        def body() -> Tuple[Any, Dict[str, str]]:
            # A fresh handle per attempt: a token refresh re-sends the whole stream from the start.
            encoder = MultipartEncoder(fields=fields(file.open("rb")))
            return encoder, {"Content-Type": encoder.content_type}

        return self._call("POST", path, what, body=body)

    # ---- HTTP ----

    def _call(self, method: str, path: str, what: str, *, params: Optional[Dict[str, str]] = None,
              payload: Any = None, body: Optional[Callable[[], Tuple[Any, Dict[str, str]]]] = None) -> Dict[str, Any]:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._tenant_token()}"}
            data = None
            if body is not None:
                data, extra = body()
                headers.update(extra)
            try:
                response = self._request(method, path, what, params=params, json=payload, data=data, headers=headers)
            finally:
                close_fields(data)
            parsed = self._parse(response, what)
            if parsed.get("code") in TOKEN_REJECTED and attempt == 1:
                self._token = None  # revoked or expired early: fetch a new one and try once more
                continue
            return self._check(parsed, response.status_code, what)
        raise AssertionError("unreachable")

    def _tenant_token(self) -> str:
        now = self._clock()
        if self._token and now < self._token_until:
            return self._token
        creds = self.credentials
        response = self._request("POST", "/open-apis/auth/v3/tenant_access_token/internal", "token",
                                 json={"app_id": creds.app_id, "app_secret": creds.app_secret})
        parsed = self._parse(response, "token")
        code = parsed.get("code")
        if code != 0:
            raise errors.AuthError(
                f"Feishu refused the app credentials of {creds.app_id} from {creds.source}: "
                f"{self._scrub(str(parsed.get('msg') or ''))} (code {code})", status=response.status_code, code=str(code))
        token, expire = parsed.get("tenant_access_token"), parsed.get("expire")
        if not isinstance(token, str) or not token or not isinstance(expire, (int, float)):
            raise errors.BadResponse("Feishu token: unexpected response body", status=response.status_code)
        lifetime = float(expire)
        self._token = token
        self._token_until = now + (lifetime - TOKEN_MARGIN_SECONDS if lifetime > 2 * TOKEN_MARGIN_SECONDS else lifetime / 2)
        return token

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        from libtv_fsm.transport import join_url, request

        url = join_url(self.credentials.base_url, path)
        try:
            return request(self.http, method, url, stream=True, **kwargs)
        except requests.Timeout:
            raise errors.NetworkError(f"Feishu {what}: timed out talking to {urlsplit(url).netloc}") from None
        except requests.RequestException as err:
            raise errors.NetworkError(
                f"Feishu {what}: cannot reach {urlsplit(url).netloc} ({type(err).__name__})") from None

    def _parse(self, response: requests.Response, what: str) -> Dict[str, Any]:
        """The JSON body; transient errors for 5xx/408/429 and bodies that are not JSON."""
        from libtv_fsm.transport import read_json

        status = response.status_code
        try:
            body = read_json(response)
        except (ValueError, requests.RequestException):
            body = None
        finally:
            response.close()
        code = body.get("code") if isinstance(body, dict) else None
        if code == NO_SCOPE and isinstance(body, dict):
            link = grant_link(body)
            raise PermissionDenied(
                f"The Feishu app lacks a permission for {what}"
                + (f"; an admin can grant it at {link}" if link else f": {self._scrub(str(body.get('msg') or ''))}"),
                grant_link=link, status=status, code=str(code))
        if status >= 500 or status in (408, 429) or code in RATE_LIMITED:
            raise errors.UnavailableError(f"Feishu {what}: temporarily unavailable (HTTP {status})",
                                          status=status, code=None if code is None else str(code))
        if status == 413:
            raise TooLarge(f"Feishu {what}: the file is too large (HTTP 413)", status=status)
        if not isinstance(body, dict) or not isinstance(code, int):
            if 200 <= status < 300:
                raise errors.BadResponse(f"Feishu {what}: unexpected response body", status=status)
            raise errors.PermanentError(f"Feishu {what} failed (HTTP {status})", status=status)
        return body

    def _check(self, body: Dict[str, Any], status: int, what: str) -> Dict[str, Any]:
        code = body.get("code")
        if code != 0 or status >= 300:
            message = f"Feishu {what} failed: {self._scrub(str(body.get('msg') or ''))} (code {code})"
            if code in FILE_TOO_LARGE:
                raise TooLarge(message, status=status, code=str(code))
            raise errors.PermanentError(message, status=status, code=str(code))
        data = body.get("data")
        return data if isinstance(data, dict) else {}

    def _scrub(self, text: str) -> str:
        # Platform messages could echo what we sent; neither the secret nor the token may leak.
        return scrub(text, self._creds.app_secret if self._creds else None, self._token)


def feishu_uuid(dedupe_key: str) -> str:
    """The message `uuid`: the key itself when it fits Feishu's 50 characters, else a stable digest."""
    if 0 < len(dedupe_key) <= MAX_UUID_CHARS:
        return dedupe_key
    return uuid.uuid5(uuid.NAMESPACE_URL, dedupe_key).hex


def _require(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise errors.BadResponse(f"Feishu {what}: response has no {key}")
    return value


__all__ = ["FeishuChannel", "FeishuCredentials", "resolve_credentials", "base_url_for", "grant_link", "feishu_uuid"]
