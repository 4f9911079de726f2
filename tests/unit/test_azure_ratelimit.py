"""The client-side ARM rate limit: per kind of request, waiting only briefly, never queueing a
reconcile behind a backlog."""

from __future__ import annotations

import asyncio

import pytest

from provisioner.cloud.azure.ratelimit import CLIENT_RATE_LIMITED, RateLimitPolicy, TokenBucket
from provisioner.cloud.errors import Deferred


async def test_a_token_due_within_the_longest_wait_is_waited_for() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0], max_wait=0.5)
    await bucket.acquire()
    await bucket.acquire()
    await asyncio.wait_for(bucket.acquire(), 2)  # 0.1 s behind: waited
    assert bucket.waited_seconds == pytest.approx(0.1)


async def test_a_backlog_longer_than_the_longest_wait_is_refused_at_once_with_when_to_come_back() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=1, clock=lambda: now[0], max_wait=0.15)
    await bucket.acquire()
    waiting = asyncio.ensure_future(bucket.acquire())  # due in 0.1 s: reserved
    await asyncio.sleep(0)
    with pytest.raises(Deferred) as info:
        await bucket.acquire()  # due in 0.2 s: refused, nothing taken
    assert info.value.code == CLIENT_RATE_LIMITED and info.value.retry_after == pytest.approx(0.2)
    assert bucket.refused == 1
    now[0] += 0.2
    await waiting
    await asyncio.wait_for(bucket.acquire(), 2)  # its token came due: granted


def test_reads_writes_and_deletes_have_buckets_of_their_own() -> None:
    reads, writes, deletes = TokenBucket(25, 250), TokenBucket(10, 200), TokenBucket(10, 200)
    policy = RateLimitPolicy(reads, writes, deletes)
    assert policy.bucket("GET") is reads and policy.bucket("head") is reads
    assert (
        policy.bucket("PUT") is writes
        and policy.bucket("POST") is writes
        and policy.bucket("PATCH") is writes
    )
    assert policy.bucket("DELETE") is deletes
    copy = policy.copy()
    assert copy is not policy and copy.bucket("DELETE") is deletes


async def test_at_most_a_few_writes_are_under_way_at_once_and_reads_are_not_held_by_them() -> None:
    """Writes wait for a slot before the write gate (the gate runs later in the pipeline), so a
    replica paused in a burst has only this many past its gate."""
    from provisioner.cloud.azure.ratelimit import MAX_WRITES_IN_FLIGHT

    release = asyncio.Event()
    under_way = 0
    peak = 0

    class Downstream:
        async def send(self, request: object) -> object:
            nonlocal under_way, peak
            under_way += 1
            peak = max(peak, under_way)
            await release.wait()
            under_way -= 1
            return request

    class Request:
        def __init__(self, method: str) -> None:
            self.http_request = type("HttpRequest", (), {"method": method})()

    policy = RateLimitPolicy(TokenBucket(100, 100), TokenBucket(100, 100), TokenBucket(100, 100))
    other = policy.copy()
    for p in (policy, other):
        p.next = Downstream()  # type: ignore[assignment]
    writes = [
        asyncio.ensure_future(p.send(Request(m))) for p in (policy, other) for m in ("PUT", "DELETE", "POST")
    ]
    for _ in range(20):
        await asyncio.sleep(0)
    assert peak == MAX_WRITES_IN_FLIGHT, "the two clients' policies share the slots"
    read = asyncio.ensure_future(policy.send(Request("GET")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert under_way == MAX_WRITES_IN_FLIGHT + 1, "a read does not wait for a write slot"
    release.set()
    await asyncio.gather(read, *writes)
