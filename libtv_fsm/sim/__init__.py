"""A loopback simulator of every upstream (gateway, direct API, Feishu, result CDN) for tests and demos."""
from __future__ import annotations

from libtv_fsm.sim.scenarios import Scenario
from libtv_fsm.sim.server import Recorded
from libtv_fsm.sim.simulator import KeyState, Simulator

__all__ = ["Simulator", "Scenario", "Recorded", "KeyState"]
