"""CLI commands that edit or check the local configuration: setup, check, update-key, update-ratio, remove-key."""
from __future__ import annotations

import argparse

from libtv_fsm.cli import not_implemented


def register(sub: argparse._SubParsersAction) -> None:
    for name in ("setup", "check", "update-key", "update-ratio", "remove-key"):
        p = sub.add_parser(name)
        p.set_defaults(func=not_implemented)
