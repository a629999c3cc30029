"""Telegram: a bot token, then sendVideo / sendPhoto / sendMessage to a chat, a group or a forum topic."""
from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attrs

from libtv_fsm import errors
from libtv_fsm.channels.accounts import override_url, pick_account, resolve_secret
from libtv_fsm.channels.base import MB, Channel, RateLimit, TooLarge, exchange, scrub

log = logging.getLogger(__name__)

API_ROOT = "https://api.telegram.org"
# A user or group id (supergroups and channels are negative, -100...), or a public @username.
_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31})$")
_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,}$")
MAX_TEXT = 4096
MAX_CAPTION = 1024


@attrs.frozen
class TelegramCredentials:
    """The bot token and the API root it belongs to; the token never shows in a repr."""

    token: str = attrs.field(repr=False)
    api_root: str
    source: str


def resolve_credentials(env: Mapping[str, str]) -> TelegramCredentials:
    """TELEGRAM_BOT_TOKEN, else channels.telegram (botToken or tokenFile) of openclaw.json."""
    override = (env.get("LIBTV_TELEGRAM_API_ROOT") or "").strip()
    token = (env.get("TELEGRAM_BOT_TOKEN") or "").strip()
    if token:
        return TelegramCredentials(_checked(token, "TELEGRAM_BOT_TOKEN"),
                                   override_url(env, "LIBTV_TELEGRAM_API_ROOT", API_ROOT), "environment")

    def read(account: Mapping[str, Any], where: str) -> Optional[Tuple[str, str]]:
        found = resolve_secret(account.get("botToken"), env, where + " botToken")
        if not found and account.get("tokenFile"):
            found = _token_file(str(account["tokenFile"]), where)
        return (found, str(account.get("apiRoot") or "")) if found else None

    try:
        (found, root), where, _ = pick_account(env, "telegram", read)
    except errors.ConfigError as err:
        raise errors.ConfigError(
            "No Telegram bot token: set TELEGRAM_BOT_TOKEN, or channels.telegram.botToken (or tokenFile) "
            f"in openclaw.json; {err}") from None
    if not override and root:
        override_url({"apiRoot": root}, "apiRoot", API_ROOT)  # refuse a junk apiRoot, naming it
    return TelegramCredentials(_checked(found, where), override_url(env, "LIBTV_TELEGRAM_API_ROOT", root or API_ROOT), where)


def _token_file(raw: str, where: str) -> str:
    path = Path(raw).expanduser()
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise errors.ConfigError(f"{where} tokenFile {path} cannot be read: {err.strerror or type(err).__name__}") from None


def _checked(token: str, where: str) -> str:
    # A malformed token would be pasted into the URL path; refuse it before any request.
    if not _TOKEN.match(token):
        raise errors.ConfigError(f"The Telegram bot token from {where} does not look like <digits>:<secret>")
    return token


def parse_target(chat_id: str) -> Tuple[str, Optional[int]]:
    """(chat id, forum topic or None) of `telegram:<id>`, `<id>`, `<id>:topic:<n>`, `@channel`."""
    raw = (chat_id or "").strip()
    shown = raw[:60]
    if raw.lower().startswith("telegram:"):
        raw = raw[len("telegram:"):].strip()
    for prefix in ("group:", "chat:"):
        if raw.lower().startswith(prefix):
            raw = raw[len(prefix):].strip()
    chat, _, topic = raw.partition(":topic:")
    if not _CHAT.match(chat) or (topic and not topic.isdigit()) or (":topic:" in raw and not topic):
        raise errors.InputError(
            f"Invalid Telegram chat id '{shown}': expected a chat id such as 123456789 or -1001234567890 "
            "(optionally telegram:<id> or <id>:topic:<n>), or an @channel username")
    return chat, (int(topic) if topic else None)


class TelegramChannel(Channel[TelegramCredentials]):
    """Sends as a Telegram bot through the Bot API."""

    name = "telegram"
    dedupes = False  # the Bot API has no idempotency key: the waiter journals and reconciles
    max_video_bytes = 50 * MB  # the Bot API's upload limit
    max_image_bytes = 10 * MB  # sendPhoto's limit

    def load_credentials(self) -> TelegramCredentials:
        return resolve_credentials(self.env)

    def normalize_target(self, chat_id: str) -> str:
        chat, topic = parse_target(chat_id)
        return f"{chat}:topic:{topic}" if topic is not None else chat

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        self._check_size(path, self.max_video_bytes, "video")
        name = file_name or path.name
        return self._send_file("sendVideo", "video", target, path, name, "video/mp4", {"supports_streaming": "true"})

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        self._check_size(path, self.max_image_bytes, "photo")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self._send_file("sendPhoto", "photo", target, path, path.name, mime, {})

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        chat, topic = parse_target(target)

        def body(chat_id: str) -> Dict[str, Any]:
            payload: Dict[str, Any] = {"chat_id": chat_id, "text": text[:MAX_TEXT]}
            if topic is not None:
                payload["message_thread_id"] = topic
            return {"json": payload}

        return self._call("sendMessage", chat, body)

    def _check_size(self, path: Path, limit: int, kind: str) -> None:
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"The {kind} is {size} bytes; Telegram bots may upload at most {limit}")

    def _send_file(self, method: str, field: str, target: str, path: Path, name: str, mime: str,
                   extra: Dict[str, str]) -> str:
        from requests_toolbelt import MultipartEncoder

        chat, topic = parse_target(target)

        def body(chat_id: str) -> Dict[str, Any]:
            # A fresh handle per try: a 429 wait re-sends the whole file from the start.
            fields: Dict[str, Any] = {"chat_id": chat_id, **extra}
            if topic is not None:
                fields["message_thread_id"] = str(topic)
            fields[field] = (name, path.open("rb"), mime)
            encoder = MultipartEncoder(fields=fields)
            return {"data": encoder, "headers": {"Content-Type": encoder.content_type}}

        return self._call(method, chat, body)

    def _call(self, method: str, chat: str, body: Callable[[str], Dict[str, Any]]) -> str:
        """POST one Bot API method that sends a message; the message id."""
        creds = self.credentials
        url = f"{creds.api_root}/bot{creds.token}/{method}"
        limits = RateLimit("Telegram", self.pause)
        migrated = False
        while True:
            response, parsed = exchange(self.http, "Telegram", "POST", url, method, sent_message=True, **body(chat))
            status = response.status_code
            if not isinstance(parsed, dict) or not isinstance(parsed.get("ok"), bool):
                if status >= 500 or status in (408, 429) or 200 <= status < 300:
                    raise errors.UnavailableError(f"Telegram {method}: unexpected answer (HTTP {status})", status=status)
                raise errors.PermanentError(f"Telegram {method} failed (HTTP {status})", status=status)
            if parsed["ok"]:
                result = parsed.get("result")
                message_id = result.get("message_id") if isinstance(result, dict) else None
                if message_id is None:
                    raise errors.BadResponse(f"Telegram {method}: the answer has no message_id", status=status)
                log.info("telegram: %s to %s as message %s", method, chat, message_id)
                return f"{chat}/{message_id}"
            code = parsed.get("error_code")
            raw_params = parsed.get("parameters")
            params: Dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
            description = scrub(parsed.get("description"), creds.token)
            if code == 429 or status == 429:
                limits.wait(params.get("retry_after"), method)
                continue
            new_chat = params.get("migrate_to_chat_id")
            if new_chat and not migrated:
                # The group became a supergroup; its new id takes the same message, once.
                log.info("telegram: chat %s moved to %s", chat, new_chat)
                chat, migrated = str(new_chat), True
                continue
            text = f"Telegram {method} failed: {description or 'no description'} (error {code or status})"
            if status >= 500 or (isinstance(code, int) and code >= 500):
                raise errors.UnavailableError(text, status=status, code=str(code))
            if status == 413 or code == 413 or re.search(r"too (big|large)", description, re.I):
                raise TooLarge(text, status=status, code=str(code))
            if status == 401 or code == 401:
                raise errors.AuthError(f"Telegram refused the bot token from {creds.source}: {description}",
                                       status=status, code=str(code))
            raise errors.PermanentError(text, status=status, code=str(code))


__all__ = ["TelegramChannel", "TelegramCredentials", "resolve_credentials", "parse_target"]
