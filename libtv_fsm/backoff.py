"""The waiter's polling schedule (pure): first interval, growing by a factor, capped."""
from __future__ import annotations

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

