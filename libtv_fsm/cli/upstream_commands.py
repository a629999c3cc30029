"""CLI commands that talk to LibTV directly: upload, query-session, download-results, tasks, change-project."""
from __future__ import annotations

import argparse

from libtv_fsm.cli import not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    for name in ("upload", "query-session", "download-results", "tasks", "change-project"):
        p = sub.add_parser(name)
        p.set_defaults(func=not_implemented)
