"""Deterministic crash points for the fault suite: ``LIBTV_FAILPOINTS`` names where this process SIGKILLs itself.

``LIBTV_FAILPOINTS="after_append:delivery_succeeded:2,before_http:POST:/open-apis/im/v1/messages"``
kills the process at the 2nd hit of the first point or the 1st hit of the second. A name ending
in ``*`` matches every point that starts with it (``after_http:GET:/cdn/*``). The variable is read
once at import; when it is unset ``ARMED`` is empty and callers skip even building the name, so
production pays one falsy check per journal append and per HTTP call.

Points in the code: ``before_append:<event type>`` / ``after_append:<event type>`` (journal/jsonl.py,
around the write and its fsync), ``before_http:<METHOD>:<path>`` / ``after_http:<METHOD>:<path>``
(transport.py, around every request: before it is sent, after its headers came back).
"""
from __future__ import annotations

import os
import signal
from typing import Dict, Tuple

ENV_VAR = "LIBTV_FAILPOINTS"


def parse(raw: str) -> Dict[str, int]:
    """``"a:b:2,c"`` -> ``{"a:b": 2, "c": 1}``: a trailing ``:<n>`` is the hit to die at."""
    armed: Dict[str, int] = {}
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, count = item.rpartition(":")
        if sep and name and count.isdigit() and int(count) > 0:
            armed[name] = int(count)
        else:
            armed[item] = 1
    return armed


ARMED: Dict[str, int] = parse(os.environ.get(ENV_VAR, ""))
_PREFIXES: Tuple[Tuple[str, int], ...] = tuple((k[:-1], v) for k, v in ARMED.items() if k.endswith("*"))
_hits: Dict[str, int] = {}


def hit(name: str) -> None:
    """Count one pass through ``name``; SIGKILL this process when an armed count is reached."""
    if not ARMED:
        return
    keys = [name] if name in ARMED else []
    keys += [prefix + "*" for prefix, _ in _PREFIXES if name.startswith(prefix)]
    for key in keys:
        _hits[key] = _hits.get(key, 0) + 1
        if _hits[key] == ARMED[key]:
            die(name)


def die(name: str) -> None:
    """Leave a line in the log (stderr) and die the way a power cut or an OOM kill would."""
    try:
        os.write(2, f"failpoint {name}: SIGKILL\n".encode("utf-8", "replace"))
    except OSError:
        pass
    kill = getattr(signal, "SIGKILL", None)
    if kill is not None:
        os.kill(os.getpid(), kill)
    os._exit(137)  # Windows has no SIGKILL: an immediate exit without cleanup is the nearest thing
