"""libtv-fsm: LibTV / Seedance 2.0 generation for AI agents on an event-sourced session machine.

The public names are loaded on first use, so `python -m libtv_fsm` for a local command
does not pay for importing the HTTP stack.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SessionStore": "libtv_fsm.store",
    "Session": "libtv_fsm.replay",
    "Delivery": "libtv_fsm.events",
    "LibtvError": "libtv_fsm.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'libtv_fsm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
