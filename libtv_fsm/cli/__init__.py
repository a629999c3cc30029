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
_GROUPS = ("libtv_fsm.cli.config_commands", "libtv_fsm.cli.upstream_commands", "libtv_fsm.cli.session_commands")


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


def fail(message: str) -> None:
    """Print the one `❌` line a failure shows."""
    print(f"❌ {message}", flush=True)


def not_implemented(args: argparse.Namespace) -> int:
    fail(f"`{args.command}` is not implemented yet")
    return 1


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog=PROG, description="Generate images and videos with LibTV (Seedance 2.0) and deliver them to the chat.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _GROUPS:
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
    args = build_parser().parse_args(list(argv) if argv is not None else None)
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
