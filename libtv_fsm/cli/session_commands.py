"""CLI commands about sessions and their journals: create-session, wait-and-deliver, recover, history."""
from __future__ import annotations

import argparse

from libtv_fsm.cli import not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    for name in ("create-session", "wait-and-deliver", "recover", "history"):
        p = sub.add_parser(name)
        p.set_defaults(func=not_implemented)
