"""The waiter's polling schedule: CONTRACT's 8 s first interval, growing to 30 s, never past it."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from libtv_fsm.backoff import delay


def test_the_default_schedule_starts_at_8_s_and_grows_to_30_s():
    gaps = [delay(i) for i in range(8)]
    assert gaps[0] == 8.0 and gaps[1] == 12.0 and gaps[2] == 18.0
    assert gaps[-1] == 30.0 and max(gaps) == 30.0
    assert gaps == sorted(gaps)


@given(st.integers(0, 10_000), st.floats(0.01, 60), st.floats(0, 120))
def test_a_delay_is_never_below_the_first_interval_nor_above_the_cap(index, first, cap):
    gap = delay(index, first, cap)
    assert first <= gap + 1e-9 and gap <= max(first, cap) + 1e-9


def test_no_first_interval_means_no_wait():
    assert delay(0, 0) == 0.0 and delay(50, 0) == 0.0
