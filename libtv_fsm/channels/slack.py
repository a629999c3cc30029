"""Slack: a bot token, the external file upload flow, chat.postMessage, and the channel's history to reconcile a send."""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import requests

from libtv_fsm import errors
from libtv_fsm.channels.accounts import BotToken, bot_token, override_url
from libtv_fsm.channels.base import MB, RateLimit, TooLarge, UploadChannel, exchange, request_error, scrub

log = logging.getLogger(__name__)

API_URL = "https://slack.com/api"
_CONVERSATION = re.compile(r"^[CGD][A-Z0-9]{2,40}$")
_USER = re.compile(r"^[UW][A-Z0-9]{2,40}$")
MAX_TEXT = 40000
# How far back find_sent looks: the waiter reconciles a send it started minutes (at most hours) ago.
HISTORY_PAGE = 100
HISTORY_PAGES = 3
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"})
BUSY_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"})
METADATA_EVENT = "libtv_delivery"


class SlackCredentials(BotToken):
    """The bot token and the Web API base; the token never shows in a repr."""


def resolve_credentials(env: Mapping[str, str]) -> SlackCredentials:
    """SLACK_BOT_TOKEN, else channels.slack.botToken of openclaw.json."""
    api_url = override_url(env, "LIBTV_SLACK_API_URL", API_URL)
    token, where = bot_token(env, "SLACK_BOT_TOKEN", "slack", "botToken", "No Slack bot token: set SLACK_BOT_TOKEN, "
                             "or channels.slack.botToken (xoxb-...) in openclaw.json")
    return SlackCredentials(_checked(token, "SLACK_BOT_TOKEN" if where == "environment" else where), api_url, where)


def _checked(token: str, where: str) -> str:
    # An app-level (xapp-) or user (xoxp-) token cannot post as the bot; say so instead of a vague invalid_auth.
    if not token.startswith(("xoxb-", "xoxe.xoxb-")):
        raise errors.ConfigError(f"The Slack token from {where} is not a bot token (it starts '{token[:5]}'; "
                                 "a bot token starts 'xoxb-')")
    return token


def marker(dedupe_key: str) -> str:
    """The tag a delivered file's title (or a text's metadata) carries, so history can show it was sent."""
    return "libtv-" + hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]


def parse_target(chat_id: str) -> str:
    """`C…`/`G…`/`D…` for a conversation, `user:U…` for a person (a DM is opened first)."""
    raw = (chat_id or "").strip()
    shown = raw[:60]
    if raw.lower().startswith("slack:"):
        raw = raw[len("slack:"):].strip()
    kind = ""
    for prefix in ("channel:", "user:"):
        if raw.lower().startswith(prefix):
            kind, raw = prefix[:-1], raw[len(prefix):].strip()
    if raw.startswith("<@") and raw.endswith(">"):  # a mention, as Slack writes it in text
        kind, raw = "user", raw[2:-1].split("|")[0]
    if _USER.match(raw) and kind != "channel":
        return "user:" + raw
    if _CONVERSATION.match(raw) and kind != "user":
        return raw
    raise errors.InputError(f"Invalid Slack target '{shown}': expected channel:<C… id>, user:<U… id>, or a bare "
                            "conversation id (channel names are not accepted)")


class SlackChannel(UploadChannel[SlackCredentials]):
    """Posts as a Slack app's bot user."""

    name = "slack"
    dedupes = False  # no idempotency key; find_sent reads the conversation's recent files instead
    max_video_bytes = 1024 * MB  # Slack's per-file limit
    max_image_bytes = 1024 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None, sleep: Optional[Callable[[float], None]] = None) -> None:
        super().__init__(env, session, variant, sleep)
        self._dms: Dict[str, str] = {}

    def load_credentials(self) -> SlackCredentials:
        return resolve_credentials(self.env)

    def normalize_target(self, chat_id: str) -> str:
        return parse_target(chat_id)

    # ---- sends ----

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        channel = self._conversation(target)
        # Invisible to the reader, returned by conversations.history: how find_sent recognises it.
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"ref": marker(dedupe_key)}}
        data = self._api("chat.postMessage", json={"channel": channel, "text": text[:MAX_TEXT], "metadata": metadata,
                                                   "unfurl_links": False}, sent_message=True)
        return str(data.get("ts") or "")

    def _send_file(self, target: str, path: Path, name: str, dedupe_key: str) -> str:
        channel = self._conversation(target)
        size = path.stat().st_size
        if size > self.max_video_bytes:
            raise TooLarge(f"The file is {size} bytes; Slack accepts at most {self.max_video_bytes}")
        ticket = self._api("files.getUploadURLExternal", form={"filename": name, "length": str(size)})
        upload_url, file_id = ticket.get("upload_url"), ticket.get("file_id")
        if not isinstance(upload_url, str) or not upload_url.startswith(("https://", "http://")) or not file_id:
            raise errors.BadResponse("Slack files.getUploadURLExternal: no upload_url / file_id in the answer")
        self._put_bytes(upload_url, path)
        title = f"{name} ({marker(dedupe_key)})"
        done = self._api("files.completeUploadExternal", sent_message=True,
                         json={"files": [{"id": file_id, "title": title}], "channel_id": channel})
        log.info("slack: shared %s in %s as file %s", name, channel, file_id)
        files = done.get("files")
        first = files[0] if isinstance(files, list) and files and isinstance(files[0], dict) else {}
        return str(first.get("id") or file_id)

    def _put_bytes(self, upload_url: str, path: Path) -> None:
        """POST the file to Slack's pre-signed upload URL (it takes no token: none is sent there)."""
        from libtv_fsm.transport import request

        with path.open("rb") as fh:
            try:
                response = request(self.http, "POST", upload_url, data=fh,
                                   headers={"Content-Type": "application/octet-stream"})
            except requests.RequestException as err:
                raise request_error(err, "Slack", "file upload", upload_url, sent_message=False) from None
        status = response.status_code
        response.close()
        if status == 413:
            raise TooLarge("Slack file upload: the file is too large (HTTP 413)", status=status)
        if status >= 500 or status in (408, 429):
            raise errors.UnavailableError(f"Slack file upload: temporarily unavailable (HTTP {status})", status=status)
        if not 200 <= status < 300:
            raise errors.PermanentError(f"Slack file upload failed (HTTP {status})", status=status)

    def _conversation(self, target: str) -> str:
        """The conversation id to post in: the target itself, or the bot's DM with a user."""
        normalized = parse_target(target)
        if not normalized.startswith("user:"):
            return normalized
        user = normalized[5:]
        if user not in self._dms:
            data = self._api("conversations.open", form={"users": user})
            channel = data.get("channel")
            dm = channel.get("id") if isinstance(channel, dict) else None
            if not isinstance(dm, str) or not dm:
                raise errors.BadResponse("Slack conversations.open: no channel id in the answer")
            self._dms[user] = dm
        return self._dms[user]

    # ---- reconciling ----

    def find_sent(self, target: str, dedupe_key: str) -> Optional[str]:
        """The file id (or message ts) of an earlier delivery with this key among the recent messages."""
        channel = self._conversation(target)
        ref = marker(dedupe_key)
        cursor = ""
        for _ in range(HISTORY_PAGES):
            params = {"channel": channel, "limit": str(HISTORY_PAGE), "include_all_metadata": "true"}
            if cursor:
                params["cursor"] = cursor
            try:
                data = self._api("conversations.history", params=params, http_method="GET")
            except errors.PermanentError as err:
                # e.g. missing_scope (channels:history) or not_in_channel: the platform cannot tell us.
                log.warning("slack: cannot read the history of %s to reconcile a send: %s", channel, err)
                return None
            for message in data.get("messages") or []:
                found = _carrying(message, ref)
                if found:
                    return found
            meta = data.get("response_metadata")
            cursor = str(meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
            if not cursor or not data.get("has_more"):
                break
        return None

    # ---- HTTP ----

    def _api(self, method: str, *, json: Any = None, form: Optional[Dict[str, str]] = None,
             params: Optional[Dict[str, str]] = None, http_method: str = "POST",
             sent_message: bool = False) -> Dict[str, Any]:
        creds = self.credentials
        url = f"{creds.api_url}/{method}"
        headers = {"Authorization": f"Bearer {creds.token}"}
        limits = RateLimit("Slack", self.pause)
        while True:
            response, parsed = exchange(self.http, "Slack", http_method, url, method, sent_message=sent_message,
                                        headers=headers, json=json, data=form, params=params)
            status, retry_after = response.status_code, response.headers.get("Retry-After")
            error = parsed.get("error") if isinstance(parsed, dict) else None
            if status == 429 or error == "ratelimited":
                limits.wait(retry_after, method)
                continue
            if status >= 500 or status == 408:
                raise errors.UnavailableError(f"Slack {method}: temporarily unavailable (HTTP {status})", status=status)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("ok"), bool):
                if 200 <= status < 300:
                    raise errors.BadResponse(f"Slack {method}: unexpected answer", status=status)
                raise errors.PermanentError(f"Slack {method} failed (HTTP {status})", status=status)
            if parsed["ok"]:
                return parsed
            error = scrub(error or "unknown_error", creds.token)
            text = f"Slack {method} failed: {error}"
            if error == "missing_scope" and parsed.get("needed"):
                text += f" (the app needs the scope {scrub(parsed['needed'], creds.token)})"
            if error in AUTH_ERRORS:
                raise errors.AuthError(f"Slack refused the bot token from {creds.source}: {error}", code=error)
            if error in BUSY_ERRORS:
                raise errors.UnavailableError(text, status=status, code=error)
            if "too_large" in error or error.endswith("size_exceeded"):
                raise TooLarge(text, status=status, code=error)
            raise errors.PermanentError(text, status=status, code=error)


def _carrying(message: Any, ref: str) -> Optional[str]:
    if not isinstance(message, dict):
        return None
    for f in message.get("files") or []:
        if isinstance(f, dict) and (ref in str(f.get("title") or "") or ref in str(f.get("name") or "")):
            return str(f.get("id") or message.get("ts") or ref)
    meta = message.get("metadata")
    payload = meta.get("event_payload") if isinstance(meta, dict) else None
    if isinstance(payload, dict) and payload.get("ref") == ref:
        return str(message.get("ts") or ref)
    return None


__all__ = ["SlackChannel", "SlackCredentials", "resolve_credentials", "parse_target", "marker"]
