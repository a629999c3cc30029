"""The session state machine, declared as data: CONTRACT section 5 in one table.

``created -> submitted -> polling -> completed -> delivered``; ``timeout`` or ``failed``
from any non-final state. ``delivered`` and ``failed`` are final for their turn: only a new
turn (``submit``, from ``create-session --session-id``) leaves them. Rows with ``dest=None``
are internal: the event is valid there but changes no state (a poll while polling, a
delivery record while completed).

One ``Machine`` is built per process; models are attached for a replay and detached after
(building a Machine per session costs far more than attaching a model to this one).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

from transitions import Machine

CREATED, SUBMITTED, POLLING, COMPLETED, DELIVERED, TIMEOUT, FAILED = (
    "created", "submitted", "polling", "completed", "delivered", "timeout", "failed",
)
STATES = [CREATED, SUBMITTED, POLLING, COMPLETED, DELIVERED, TIMEOUT, FAILED]
FINAL_STATES = frozenset({DELIVERED, FAILED})
# States a waiter still has work in (waiting upstream, or delivering).
UNFINISHED_STATES = frozenset({SUBMITTED, POLLING, COMPLETED, TIMEOUT})
NON_FINAL = [CREATED, SUBMITTED, POLLING, COMPLETED, TIMEOUT]
TURN_OVER = [COMPLETED, DELIVERED, FAILED, TIMEOUT]

TRANSITIONS: List[Dict[str, Any]] = [
    # trigger                   source                       dest
    {"trigger": "submit", "source": [CREATED, *TURN_OVER], "dest": SUBMITTED},
    {"trigger": "poll", "source": [SUBMITTED, POLLING], "dest": POLLING},
    {"trigger": "poll", "source": [COMPLETED, DELIVERED, TIMEOUT, FAILED], "dest": None},
    {"trigger": "complete", "source": [SUBMITTED, POLLING], "dest": COMPLETED, "conditions": "has_results"},
    {"trigger": "fail", "source": [SUBMITTED, POLLING, COMPLETED, TIMEOUT], "dest": FAILED},
    {"trigger": "time_out", "source": [SUBMITTED, POLLING], "dest": TIMEOUT},
    {"trigger": "resume", "source": TIMEOUT, "dest": POLLING},
    {"trigger": "attempt", "source": COMPLETED, "dest": None},
    {"trigger": "record_delivery", "source": COMPLETED, "dest": None},
    {"trigger": "record_delivery_failure", "source": COMPLETED, "dest": None},
    {"trigger": "deliver", "source": COMPLETED, "dest": DELIVERED, "conditions": "all_delivered"},
    {"trigger": "notify", "source": [FAILED, TIMEOUT], "dest": None},
    {"trigger": "note_download", "source": [COMPLETED, DELIVERED], "dest": None},
    {"trigger": "note_waiter", "source": NON_FINAL + [DELIVERED, FAILED], "dest": None},
]
# Every row folds the event into the model before the state changes (after its conditions pass).
for _row in TRANSITIONS:
    _row["before"] = "fold"

TRIGGERS = sorted({row["trigger"] for row in TRANSITIONS})

MACHINE = Machine(
    model=None,
    states=STATES,
    transitions=TRANSITIONS,
    initial=CREATED,
    auto_transitions=False,
    ignore_invalid_triggers=False,
)
_attach_lock = threading.Lock()


@contextmanager
def attached(model: Any) -> Iterator[Any]:
    """Give ``model`` the machine's triggers for the duration of the block.

    remove_model leaves the methods add_model bound on the instance (about 35 per session), and
    the next add_model to the same session then logs a "Skip binding" warning for each: so they
    are taken off again here.
    """
    with _attach_lock:
        before = set(vars(model))
        MACHINE.add_model(model, initial=model.state)
        added = [name for name in vars(model) if name not in before]
    try:
        yield model
    finally:
        with _attach_lock:
            MACHINE.remove_model(model)
            for name in added:
                vars(model).pop(name, None)
