"""The write gate and the stall watcher, on a clock the test moves."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.fencing import WriteGate, WriteRefused, watch_for_stalls


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_leader_election_every_write_goes_out() -> None:
    gate = WriteGate(None)
    gate.check("kube")
    gate.check("cloud")


def test_nothing_is_written_before_the_lease_is_acquired() -> None:
    refused: list[str] = []
    gate = WriteGate(3.0, clock=ManualClock(), on_refused=refused.append)
    with pytest.raises(WriteRefused, match="not been acquired"):
        gate.check("kube")
    assert refused == ["kube"]
    assert gate.closed is None  # a standby is not fenced for good


def test_writes_go_out_only_within_the_renew_deadline_of_the_last_renewal() -> None:
    clock = ManualClock()
    closed: list[str] = []
    gate = WriteGate(3.0, clock=clock, on_closed=closed.append)
    gate.renewed(clock.now)
    clock.now += 2.9
    gate.check("cloud")
    gate.renewed(clock.now - 0.5)  # the renewal request was sent half a second ago
    clock.now += 2.4
    gate.check("cloud")
    clock.now += 0.2  # 3.1s after the last renewal was sent: the deadline passed
    with pytest.raises(WriteRefused, match=r"last renewed 3\.1s ago"):
        gate.check("kube")
    assert len(closed) == 1
    # Closed for good: a later renewal (a late answer) does not reopen it; on_closed fires once.
    gate.renewed(clock.now)
    with pytest.raises(WriteRefused):
        gate.check("cloud")
    assert len(closed) == 1


def test_an_older_renewal_never_moves_the_deadline_back() -> None:
    clock = ManualClock()
    gate = WriteGate(3.0, clock=clock)
    gate.renewed(clock.now)
    gate.renewed(clock.now - 10)  # a slow attempt that started long ago answered last
    clock.now += 2.5
    gate.check("kube")


def test_a_suspended_gate_refuses_until_the_lease_is_renewed_again() -> None:
    clock = ManualClock()
    closed: list[str] = []
    gate = WriteGate(3.0, clock=clock, on_closed=closed.append)
    gate.renewed(clock.now)
    gate.suspend("stalled")
    with pytest.raises(WriteRefused, match="stalled"):
        gate.check("kube")
    assert not closed
    gate.renewed(clock.now)
    gate.check("kube")


def test_a_closed_gate_names_why() -> None:
    gate = WriteGate(3.0, clock=ManualClock())
    gate.renewed(0)
    gate.close("lost the lease default/x")
    with pytest.raises(WriteRefused) as e:
        gate.check("cloud")
    assert e.value.target == "cloud"
    assert "lost the lease default/x" in str(e.value)


async def test_a_stall_suspends_the_gate_and_rereads_the_lease_before_writes_resume() -> None:
    clock = ManualClock()
    gate = WriteGate(10.0, clock=clock)
    gate.renewed(clock.now)
    stalls: list[float] = []
    reread = asyncio.Event()
    seen_suspended: list[bool] = []

    async def reread_lease() -> None:
        try:
            gate.check("kube")
            seen_suspended.append(False)
        except WriteRefused:
            seen_suspended.append(True)
        gate.renewed(clock.now)
        reread.set()

    watcher = asyncio.create_task(
        watch_for_stalls(gate, reread_lease, threshold=2.0, tick=0.01, clock=clock, on_stall=stalls.append)
    )
    try:
        await asyncio.sleep(0.05)
        assert not stalls  # ticks on time (the manual clock stands still): no stall
        clock.now += 5.0  # the process was stopped for five seconds
        await asyncio.wait_for(reread.wait(), 5)
        assert seen_suspended == [True], "writes must wait for the lease to be read again"
        assert stalls and stalls[0] == pytest.approx(5.0, abs=0.1)
        gate.check("kube")  # renewed by the re-read
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
