"""The waiter's polling schedule (pure): first interval, growing by a factor, capped."""
from __future__ import annotations

from typing import Iterator

DEFAULT_FIRST = 8.0
DEFAULT_CAP = 30.0
GROWTH = 1.5


def delay(poll_index: int, first: float = DEFAULT_FIRST, cap: float = DEFAULT_CAP, growth: float = GROWTH) -> float:
    """Seconds to wait after poll number ``poll_index`` (0-based) before the next one."""
    if first <= 0:
        return 0.0
    cap = max(cap, first)
    # Past the cap the power only grows; stop computing it before it overflows a float.
    step = first * growth ** min(poll_index, 64)
    return min(cap, step)


def schedule(first: float = DEFAULT_FIRST, cap: float = DEFAULT_CAP, growth: float = GROWTH) -> Iterator[float]:
    """The delays between polls, forever."""
    index = 0
    while True:
        yield delay(index, first, cap, growth)
        index += 1


def polls_within(seconds: float, first: float = DEFAULT_FIRST, cap: float = DEFAULT_CAP, growth: float = GROWTH) -> int:
    """How many polls the schedule makes in ``seconds`` (the first poll is immediate)."""
    if first <= 0:
        raise ValueError("a schedule without delays polls without end")
    total, polls = 0.0, 1
    for gap in schedule(first, cap, growth):
        if total + gap > seconds:
            return polls
        total += gap
        polls += 1
    raise AssertionError("unreachable: the schedule is infinite")
