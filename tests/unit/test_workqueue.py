"""The keyed work queue: dedup, per-key serialization, delayed requeue, dirty re-run, failure backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from provisioner.workqueue import Backoff, Outcome, TokenBucket, WorkQueue

Handler = Callable[[str], Awaitable[Outcome]]


@dataclass
class Recorder:
    """A handler that records each run, can be held inside a run, and returns a chosen delay."""

    calls: list[str] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    concurrency: int = 0
    max_concurrency: int = 0
    again: dict[str, list[float | None]] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    fail: set[str] = field(default_factory=set)

    #: key -> outcomes to return (failures among them), in order.
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    async def __call__(self, key: str) -> Outcome:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.concurrency += 1
        self.max_concurrency = max(self.max_concurrency, self.concurrency)
        self.calls.append(key)
        self.started.setdefault(key, time.monotonic())
        self.entered.set()
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(0)
            if key in self.fail:
                raise RuntimeError(f"boom {key}")
            scripted = self.outcomes.get(key)
            if scripted:
                return scripted.pop(0)
            queue = self.again.get(key)
            return Outcome(requeue_after=queue.pop(0) if queue else None)
        finally:
            self.running.discard(key)
            self.concurrency -= 1

    def count(self, key: str) -> int:
        return self.calls.count(key)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def make_queue() -> AsyncIterator[Callable[..., WorkQueue[str]]]:
    queues: list[WorkQueue[str]] = []

    def make(handler: Handler, workers: int = 4) -> WorkQueue[str]:
        q: WorkQueue[str] = WorkQueue(handler, workers=workers)
        queues.append(q)
        return q

    yield make
    for q in queues:
        await q.stop()


async def eventually(predicate: Callable[[], bool], seconds: float = 2.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``seconds``."""
    for _ in range(int(seconds / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def settle(q: WorkQueue[str]) -> None:
    """Wait until nothing is queued or running."""
    await eventually(lambda: len(q) == 0)
    await asyncio.sleep(0.01)
    assert len(q) == 0


async def test_adds_of_a_waiting_key_collapse(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    q = make_queue(recorder)
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    q.start()
    await settle(q)
    assert sorted(recorder.calls) == ["a", "b"]


async def test_a_key_is_never_processed_twice_at_once(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    gate = asyncio.Event()
    recorder.gates["a"] = gate
    q = make_queue(recorder, workers=4)
    q.start()
    q.add("a")
    await asyncio.wait_for(recorder.entered.wait(), 1)
    for _ in range(3):
        q.add("a")  # while it runs: marks it dirty
    await asyncio.sleep(0.05)
    assert recorder.count("a") == 1
    assert recorder.overlaps == []
    del recorder.gates["a"]
    gate.set()
    await settle(q)
    # Exactly one more run picks up the changes made while it was running.
    assert recorder.count("a") == 2
    assert recorder.overlaps == []


async def test_different_keys_run_concurrently(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    gate = asyncio.Event()
    for k in ("a", "b", "c"):
        recorder.gates[k] = gate
    q = make_queue(recorder, workers=3)
    q.start()
    for k in ("a", "b", "c"):
        q.add(k)
    await eventually(lambda: recorder.concurrency == 3)
    assert recorder.max_concurrency == 3
    gate.set()
    await settle(q)


async def test_worker_count_bounds_concurrency(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    gate = asyncio.Event()
    for k in "abcdef":
        recorder.gates[k] = gate
    q = make_queue(recorder, workers=2)
    q.start()
    for k in "abcdef":
        q.add(k)
    await asyncio.sleep(0.05)
    assert recorder.max_concurrency == 2
    gate.set()
    await settle(q)
    assert sorted(recorder.calls) == list("abcdef")


async def test_handler_delay_requeues_the_key(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    recorder.again["a"] = [0.2, None]
    q = make_queue(recorder)
    q.start()
    q.add("a")
    await eventually(lambda: len(q.scheduled()) == 1)
    assert recorder.count("a") == 1
    await eventually(lambda: recorder.count("a") == 2)
    await settle(q)
    assert len(q.scheduled()) == 0


async def test_add_after_earliest_schedule_wins(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    q = make_queue(recorder)
    q.start()
    t0 = time.monotonic()
    q.add_after("a", 0.5)
    q.add_after("a", 0.05)
    q.add_after("a", 2.0)  # later than what is scheduled: ignored
    assert len(q.scheduled()) == 1
    await asyncio.sleep(0.15)
    assert recorder.count("a") == 1
    assert 0.04 <= recorder.started["a"] - t0 < 0.4
    await asyncio.sleep(0.5)
    assert recorder.count("a") == 1  # the replaced 0.5s timer did not fire as well


async def test_add_after_zero_is_an_add(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    q = make_queue(recorder)
    q.add_after("a", 0)
    q.add_after("b", -3)
    assert len(q) == 2 and len(q.scheduled()) == 0
    q.start()
    await settle(q)
    assert sorted(recorder.calls) == ["a", "b"]


async def test_add_replaces_a_pending_schedule(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    q = make_queue(recorder)
    q.start()
    q.add_after("a", 0.1)
    q.add("a")
    assert len(q.scheduled()) == 0
    await asyncio.sleep(0.25)
    assert recorder.count("a") == 1


async def test_forget_drops_a_scheduled_run(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    q = make_queue(recorder)
    q.start()
    q.add_after("a", 0.05)
    q.add_after("b", 0.05)
    q.forget("a")
    q.forget("never-added")
    assert len(q.scheduled()) == 1
    await asyncio.sleep(0.15)
    assert recorder.calls == ["b"]


async def test_failing_handler_is_retried_later(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    recorder.fail.add("a")
    q = make_queue(recorder)
    q.start()
    q.add("a")
    q.add("b")
    await settle(q)
    assert recorder.count("a") == 1
    assert recorder.count("b") == 1  # one failing key does not stop the workers
    assert len(q.scheduled()) == 1  # a's retry, after the first step of its backoff
    assert q.backoff.failures("a") == 1
    assert 0 < (q.due_in("a") or 0) <= 0.5


async def test_dirty_rerun_wins_over_handler_delay(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    gate = asyncio.Event()
    recorder.gates["a"] = gate
    recorder.again["a"] = [30.0, None]
    q = make_queue(recorder)
    q.start()
    q.add("a")
    await asyncio.wait_for(recorder.entered.wait(), 1)
    q.add("a")
    del recorder.gates["a"]
    gate.set()
    await settle(q)
    assert recorder.count("a") == 2
    assert len(q.scheduled()) == 0


async def test_add_after_while_running_runs_once_afterwards(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    gate = asyncio.Event()
    recorder.gates["a"] = gate
    q = make_queue(recorder)
    q.start()
    q.add("a")
    await asyncio.wait_for(recorder.entered.wait(), 1)
    q.add_after("a", 0.02)
    await asyncio.sleep(0.08)  # timer fires while "a" still runs
    assert recorder.count("a") == 1
    del recorder.gates["a"]
    gate.set()
    await settle(q)
    assert recorder.count("a") == 2
    assert recorder.overlaps == []


async def test_stop_cancels_timers_and_workers(recorder: Recorder) -> None:
    gate = asyncio.Event()
    recorder.gates["a"] = gate
    q: WorkQueue[str] = WorkQueue(recorder, workers=2)
    q.start()
    q.add("a")
    q.add_after("b", 0.05)
    await asyncio.wait_for(recorder.entered.wait(), 1)
    await asyncio.wait_for(q.stop(), 1)
    assert len(q.scheduled()) == 0
    await asyncio.sleep(0.1)
    assert recorder.calls == ["a"]


# -------------------------------------------------------------------------------- failure backoff


def test_backoff_doubles_from_half_a_second_to_its_cap_and_resets() -> None:
    b: Backoff[str] = Backoff(cap=300.0)
    delays = [b.next("a") for _ in range(12)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 300.0 and max(delays) == 300.0
    assert b.next("other") == 0.5  # per key
    b.reset("a")
    assert b.next("a") == 0.5


def test_backoff_never_retries_before_the_retry_after() -> None:
    b: Backoff[str] = Backoff(cap=300.0)
    assert b.next("a", floor=30.0) == 30.0
    assert b.next("a", floor=30.0) == 30.0
    for _ in range(5):
        b.next("a", floor=30.0)
    assert b.next("a", floor=30.0) == 64.0  # the backoff outgrew the hint
    assert Backoff[str](cap=10.0).next("a", floor=600.0) == 10.0  # the cap bounds any hint


def test_token_bucket_caps_the_retry_rate_over_all_keys() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10.0, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] = 10.0
    assert bucket.reserve() == 0.0


async def test_a_failing_key_backs_off_exponentially_and_success_resets_it(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    recorder.outcomes["a"] = [Outcome(failed=True), Outcome(failed=True), Outcome(failed=True), Outcome()]
    q = make_queue(recorder)
    q.start()
    q.add("a")
    delays = []
    for _ in range(3):
        await eventually(lambda: len(q.scheduled()) == 1 and len(q) == 0)
        delays.append(q.due_in("a"))
        q.run_now("a")
    await settle(q)
    assert recorder.count("a") == 4
    for seen, expected in zip(delays, [0.5, 1.0, 2.0], strict=True):
        assert expected - 0.25 < (seen or 0) <= expected, delays  # read a moment after scheduling
    assert q.backoff.failures("a") == 0


async def test_adds_during_a_backoff_do_not_cut_it_short(
    recorder: Recorder, make_queue: Callable[..., WorkQueue[str]]
) -> None:
    recorder.outcomes["a"] = [Outcome(failed=True, retry_after=30.0)]
    q = make_queue(recorder)
    q.start()
    q.add("a")
    await eventually(lambda: len(q.scheduled()) == 1 and len(q) == 0)
    for _ in range(5):
        q.add("a")  # watch events for the key keep coming
    await asyncio.sleep(0.05)
    assert recorder.count("a") == 1
    assert 29.0 < (q.due_in("a") or 0) <= 30.0
