"""Validation of ids that come from the network or the command line before they touch a path or URL."""
from __future__ import annotations

import re

from libtv_fsm.errors import InputError, InvalidSessionId

# Upstream ids are short tokens; anything else could climb out of a folder or into a URL.
_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def is_valid_id(value: object) -> bool:
    """True for a plain id token: `[A-Za-z0-9._-]{1,128}`, not `.` or `..`."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None and value not in (".", "..")


def _shown(value: object) -> str:
    # Enough to recognise the id in the message, never a wall of hostile text.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_session_id(value: object) -> str:
    """Return ``value`` if it is a safe session id, else raise InvalidSessionId."""
    if not is_valid_id(value):
        raise InvalidSessionId(f"Invalid session id: {_shown(value)} (expected letters, digits, '.', '_' or '-', at most 128)")
    return value  # type: ignore[return-value]


def validate_project_id(value: object) -> str:
    """Return ``value`` if it is a safe project uuid (same alphabet as session ids), else raise InputError."""
    if not is_valid_id(value):
        raise InputError(f"Invalid project id: {_shown(value)}")
    return value  # type: ignore[return-value]
