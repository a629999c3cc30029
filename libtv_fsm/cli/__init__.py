"""The one argparse program behind `libtv-video`, `python -m libtv_fsm` and scripts/libtv_video.py.

Start-up stays light: this module imports only the standard library; each command
imports what it needs when it runs, so a local command never pays for `requests`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, List, NoReturn, Optional, Sequence

PROG = "libtv-video"

# (module, names) of the command groups; each module defines register(subparsers).
_GROUPS = ("libtv_fsm.cli.config_commands", "libtv_fsm.cli.upstream_commands", "libtv_fsm.cli.session_commands",
           "libtv_fsm.cli.journal_commands", "libtv_fsm.cli.worker_commands")
# The module that registers each command: a command named first builds only its own module's parsers
# (every command starts faster; `--help`, `--version` and an unknown command build them all).
_COMMANDS = {
    **dict.fromkeys(("setup", "check", "update-key", "update-ratio", "remove-key"), "libtv_fsm.cli.config_commands"),
    **dict.fromkeys(("upload", "query-session", "download-results", "tasks", "change-project"),
                    "libtv_fsm.cli.upstream_commands"),
    **dict.fromkeys(("create-session", "wait-and-deliver", "recover", "history"), "libtv_fsm.cli.session_commands"),
    **dict.fromkeys(("db", "journal"), "libtv_fsm.cli.journal_commands"),
    "worker": "libtv_fsm.cli.worker_commands",
}


EXAMPLES = """examples:
  libtv-video setup --api-key mgk_...                 save a key (mgk_ gateway or sk-libtv- direct)
  libtv-video check                                   validate it; shows remaining uses
  libtv-video create-session "a cat surfing at sunset" --channel feishu --chat-id oc_xxx
                                                      submit; the result is sent to that chat
  libtv-video upload --file cat.png                   then put the printed URL in a message
  libtv-video history SESSION_ID                      what happened to one request
  libtv-video recover                                 every request; restart any lost delivery

Every command prints `❌ ...` on stdout and exits non-zero when it fails.
`libtv-video COMMAND --help` shows one command's options."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `❌` line on stdout, not a usage dump on stderr."""

    def error(self, message: str) -> NoReturn:
        fail(f"{mask_keys(message)} (see `{self.prog} --help`)")
        raise SystemExit(2)


_KEY_WORD = None


def mask_keys(text: str) -> str:
    """Mask anything shaped like an API key (a key pasted in the wrong place must not be echoed)."""
    import re

    global _KEY_WORD
    if _KEY_WORD is None:
        _KEY_WORD = re.compile(r"(mgk_|sk-libtv-)[^\s'\",)]{4,}")
    return _KEY_WORD.sub(lambda m: m.group(1) + "****" + m.group(0)[-4:] if len(m.group(0)) > 12 else m.group(1) + "****", text)


def say(line: str = "") -> None:
    """Print one human line on stdout."""
    print(line, flush=True)


def emit_json(payload: Any) -> None:
    """Print one line of JSON on stdout (non-ASCII kept readable)."""
    print(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), flush=True)


def failure_line(message: str) -> str:
    """The one `❌` line a failure shows (control characters from echoed input are escaped, so it stays one line)."""
    clean = "".join(c if c >= " " and c != "\x7f" else repr(c)[1:-1] for c in message)
    return f"❌ {clean}"


def fail(message: str) -> None:
    """Print the one `❌` line a failure shows."""
    print(failure_line(message), flush=True)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``command`` (the first argument), only that command's module is registered."""
    import importlib

    from libtv_fsm import __version__

    parser = _Parser(prog=PROG, description="Generate images and videos with LibTV (Seedance 2.0) and deliver them to the chat.",
                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    owner = _COMMANDS.get(command or "")
    for name in [owner] if owner else _GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def _utf8_stdio() -> None:
    # A Windows console or a C locale must not turn the `❌` into a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        reconfigure: Optional[Callable[..., None]] = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(encoding="utf-8", errors="replace")
            except (ValueError, OSError):
                pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    from libtv_fsm.errors import LibtvError

    _utf8_stdio()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LibtvError as err:
        fail(mask_keys(str(err)))
        return err.exit_code
    except KeyboardInterrupt:
        fail("Interrupted")
        return 130
    except Exception as err:  # the last line of defence: no traceback reaches the user
        if os.environ.get("LIBTV_DEBUG"):
            raise
        fail(f"Unexpected error ({type(err).__name__}); set LIBTV_DEBUG=1 for details")
        return 1


__all__: List[str] = ["main", "build_parser", "say", "emit_json", "fail"]
