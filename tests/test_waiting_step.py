"""The waiter step on its own: one unit of work per call, waits as due times, a fake clock, the simulator upstream."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

from libtv_fsm import SessionStore, backoff
from libtv_fsm.backends import open_backend
from libtv_fsm.sim import Scenario
from libtv_fsm.submit import Target, resolve_target, submit
from libtv_fsm.waiter import EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, Waiter, WaitSettings
from libtv_fsm.waiting.context import Due, Finished, RunContext
from libtv_fsm.waiting.step import Edges, step

GROUP = "oc_group_steps"
MESSAGES = "/open-apis/im/v1/messages"
# The production schedule: the step never sleeps, so a test need not shorten it.
PRODUCTION = WaitSettings(first_interval=8.0, max_interval=30.0, timeout_seconds=3600.0)


class FakeClock:
    """Wall-clock epoch seconds that move only when the test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def no_long_sleep(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """Any time.sleep of a second or more fails the test: a step's waits are due times, not sleeps."""
    slept: List[float] = []
    real = time.sleep

    def guarded(seconds: float) -> None:
        slept.append(seconds)
        assert seconds < 1.0, f"something slept {seconds} s inside a step"
        real(seconds)

    monkeypatch.setattr(time, "sleep", guarded)
    return slept


class World:
    """The simulator upstream and a store, driven in-process: submit, then step by hand."""

    def __init__(self, home: Path, sim: Any) -> None:
        self.home = home
        self.sim = sim
        self.env = dict(sim.env(), LIBTV_DOWNLOAD_DIR=str(home / "downloads"))
        self.store = SessionStore(home)
        self.backend = open_backend(sim.GATEWAY_KEY, self.env)
        self.clock = FakeClock()
        self.log: List[str] = []

    def submit(self, text: str, chat: bool = True) -> str:
        target = resolve_target("feishu", GROUP, self.env, http=self.backend.session) if chat else Target()
        session, _ = submit(self.store, self.backend, text, text, session_id=None, target=target)
        return session.session_id

    def edges(self, sid: str, settings: WaitSettings = PRODUCTION) -> Edges:
        return Edges(self.store, sid, api_key=self.sim.GATEWAY_KEY, env=self.env, settings=settings,
                     log=self.log.append)

    def step(self, edges: Edges, context: RunContext) -> Any:
        return step(edges, self.store.load(edges.sid), context, self.clock)

    def polls(self, sid: str) -> int:
        return len(self.sim.requests_to(f"/libtv/v1/session/{sid}", "GET"))

    def chat(self) -> List[dict]:
        return [m for m in self.sim.feishu.messages if m["receive_id"] == GROUP]

    def events(self, sid: str, kind: str) -> List[Any]:
        return [e.event for e in self.store.load(sid).events if e.type == kind]

    def run_until(self, edges: Edges, context: RunContext, done: Callable[[Any], bool], limit: int = 30) -> Any:
        """Step (moving the clock to each due time) until ``done(result)``; that result."""
        for _ in range(limit):
            result = self.step(edges, context)
            if done(result):
                return result
            assert isinstance(result, Due), result
            self.clock.advance(result.seconds)
            context = result.context
        raise AssertionError(f"not done after {limit} steps: {self.log}")


@pytest.fixture
def world(home: Path, sim: Any) -> World:
    return World(home, sim)


def test_each_step_polls_once_and_the_next_poll_is_due_per_the_backoff_schedule(world, sim, no_long_sleep):
    sim.default_scenario = Scenario(polls_before_result=4)
    sid = world.submit("a cat")
    edges, context, start = world.edges(sid), RunContext(), world.clock.now
    dues = []
    for n in range(1, 5):
        result = world.step(edges, context)
        assert isinstance(result, Due), result
        assert world.polls(sid) == n, "one poll per step"
        assert result.context.polls == n
        assert result.context.wait_started == start
        dues.append(result.seconds)
        world.clock.advance(result.seconds)
        context = result.context
    assert dues == [backoff.delay(i, 8.0, 30.0) for i in range(4)] == [8.0, 12.0, 18.0, 27.0]
    # the results appear at the next poll; the step that sees them concludes, and only then delivers
    result = world.step(edges, context)
    assert isinstance(result, Due) and result.seconds == 0 and world.polls(sid) == 5
    assert world.store.load(sid).state == "completed" and world.chat() == []
    polls = world.polls(sid)
    final = world.run_until(edges, result.context, lambda r: isinstance(r, Finished))
    assert final == Finished(EXIT_OK) and world.polls(sid) == polls  # delivering polls no more
    assert world.store.load(sid).state == "delivered" and len(world.chat()) == 1


def test_the_wait_times_out_from_the_context_start_on_the_given_clock(world, sim, no_long_sleep):
    sid = world.submit("an epic [sim:never]")
    settings = WaitSettings(first_interval=8.0, max_interval=30.0, timeout_seconds=60.0)
    first = world.step(world.edges(sid, settings), RunContext())
    assert isinstance(first, Due) and first.seconds == 8.0
    assert first.context.wait_started == world.clock.now
    # another process (a task-queue worker) carries the context as JSON and runs the next steps
    carried = RunContext.from_dict(json.loads(json.dumps(first.context.to_dict())))
    assert carried == first.context
    edges = world.edges(sid, settings)
    world.clock.advance(50.0)
    second = world.step(edges, carried)
    assert isinstance(second, Due) and second.seconds == 10.0  # 12 s by the schedule, but only 10 s are left
    assert world.store.load(sid).state == "polling"
    world.clock.advance(second.seconds)
    third = world.step(edges, second.context)
    assert isinstance(third, Due) and third.seconds == 0 and world.polls(sid) == 3
    timed_out = world.store.load(sid)
    assert timed_out.state == "timeout"
    assert [(e.polls, e.waited_seconds) for e in world.events(sid, "timed_out")] == [(3, 60.0)]
    # the next unit is the notice, then the run is over
    assert world.step(edges, third.context) == Finished(EXIT_TIMEOUT)
    assert [m["msg_type"] for m in world.chat()] == ["text"] and world.polls(sid) == 3


def test_a_transient_delivery_error_makes_the_retry_due_after_its_backoff_instead_of_sleeping(world, sim, no_long_sleep):
    sid = world.submit("a cat")
    edges = world.edges(sid)
    completed = world.run_until(edges, RunContext(), lambda r: world.store.load(sid).state == "completed")
    (url,) = world.store.load(sid).result_urls
    sim.inject(MESSAGES, "500")
    started = time.monotonic()
    result = world.step(edges, completed.context)
    assert time.monotonic() - started < 5.0
    assert isinstance(result, Due) and result.seconds == backoff.delay(0, 8.0, 30.0) == 8.0
    assert result.context.tries_of(url) == 1
    assert [e.transient for e in world.events(sid, "delivery_failed")] == [True]
    assert world.chat() == [] and world.store.load(sid).state == "completed"
    world.clock.advance(result.seconds)
    delivered = world.step(edges, result.context)
    assert isinstance(delivered, Due) and delivered.seconds == 0 and delivered.context.copies_due
    assert world.store.load(sid).state == "delivered" and len(world.chat()) == 1
    assert world.step(edges, delivered.context) == Finished(EXIT_OK)
    assert set(world.store.load(sid).downloads) == {url}  # the local copy came last


def test_a_result_that_keeps_failing_is_given_up_after_its_tries_in_this_run(world, sim, no_long_sleep):
    sid = world.submit("a cat")
    edges = world.edges(sid)
    completed = world.run_until(edges, RunContext(), lambda r: world.store.load(sid).state == "completed")
    sim.inject(MESSAGES, "500", "500", "500", "500")
    context, dues = completed.context, []
    for _ in range(PRODUCTION.delivery_tries):
        result = world.step(edges, context)
        assert isinstance(result, Due), result
        dues.append(result.seconds)
        context = result.context
    assert dues == [8.0, 12.0, 18.0, 27.0]
    assert world.step(edges, context) == Finished(EXIT_ERROR)
    assert len(world.events(sid, "delivery_attempted")) == 4 and world.chat() == []
    # a new run (recover's waiter) gives the result its tries again
    assert world.run_until(edges, RunContext(), lambda r: isinstance(r, Finished)) == Finished(EXIT_OK)
    assert len(world.chat()) == 1


def test_a_step_run_again_after_the_session_is_finished_sends_nothing_twice(world, sim, no_long_sleep):
    sid = world.submit("a cat")
    edges = world.edges(sid)
    completed = world.run_until(edges, RunContext(), lambda r: world.store.load(sid).state == "completed")
    delivered = world.step(edges, completed.context)
    assert world.store.load(sid).state == "delivered"
    # the delivery step again, as a task-queue job retried with the arguments it was enqueued with
    for context in (completed.context, RunContext(), delivered.context, delivered.context):
        assert world.step(edges, context) == Finished(EXIT_OK)
    version = world.store.load(sid).version
    for context in (completed.context, RunContext(), delivered.context):
        assert world.step(edges, context) == Finished(EXIT_OK)
    assert len(world.chat()) == 1 and world.store.load(sid).version == version

    failed = world.submit("forbidden [sim:fail]")
    edges = world.edges(failed)
    assert world.run_until(edges, RunContext(), lambda r: isinstance(r, Finished)) == Finished(EXIT_FAILED)
    for _ in range(2):
        assert world.step(edges, RunContext()) == Finished(EXIT_FAILED)
    assert [m["msg_type"] for m in world.chat()[1:]] == ["text"]  # the failure told once
    assert len(world.events(failed, "notice_sent")) == 1


def test_wait_and_deliver_runs_the_steps_and_sleeps_until_each_is_due(world, sim):
    sim.default_scenario = Scenario(polls_before_result=3)
    sid = world.submit("a cat")
    slept: List[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        world.clock.advance(seconds)

    waiter = Waiter(world.store, sid, api_key=sim.GATEWAY_KEY, env=world.env, settings=PRODUCTION,
                    log=world.log.append, clock=world.clock, sleep=sleep)
    assert waiter.run() == EXIT_OK
    # three quiet polls, then the results: slept the schedule between polls, not after the last one
    assert slept == [8.0, 12.0, 18.0] and world.polls(sid) == 4
    assert len(world.chat()) == 1 and len(world.events(sid, "waiter_started")) == 1
