"""Fencing: a replica that may have lost its Lease writes nothing.

Leader election alone does not stop a deposed leader from writing: a process paused by the kernel,
a stall or a live migration resumes with its reconciles half done and sends their writes before its
renew loop notices the Lease is gone. Every write to the API server and to the cloud therefore
passes :meth:`WriteGate.check` immediately before it is sent. The gate is open only while the Lease
was renewed, by this replica's monotonic clock, less than ``renew_deadline`` ago — and a standby
takes over only ``lease_duration`` after it last saw a renewal, which is later still.

When the gate finds the deadline passed, it closes for good and calls ``on_closed`` (the operator
then stops the workers and exits non-zero, to be restarted as a standby). A stall longer than the
retry period, seen by :func:`watch_for_stalls`, suspends the gate until the Lease has been read
again: writes are refused meanwhile, without giving up.

The guarantee has a limit: a write that passed the gate and is paused before its first byte leaves
the process still goes out when the process resumes. The gate is checked as late as the clients
allow (after credentials are resolved and rate limits waited for) to keep that window to the time
between the check and the socket write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from provisioner.kube import ApiError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class WriteRefused(ApiError):
    """A write was not sent: this replica cannot be sure it still holds the Lease."""

    def __init__(self, target: str, why: str) -> None:
        super().__init__(0, "WriteRefused", f"{target} write refused: {why}")
        self.target = target
        self.why = why


class WriteGate:
    """Open while the Lease is known to be ours; ``check`` raises :class:`WriteRefused` otherwise.

    Without leader election (``renew_deadline`` None) the gate is always open.
    """

    def __init__(
        self,
        renew_deadline: float | None,
        *,
        clock: Clock = time.monotonic,
        on_closed: Callable[[str], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.renew_deadline = renew_deadline
        self._clock = clock
        self._on_closed = on_closed
        self._on_refused = on_refused
        self._renewed_at: float | None = None
        self._suspended: str | None = None
        self.closed: str | None = None

    @property
    def fenced(self) -> bool:
        return self.renew_deadline is not None

    def renewed(self, started_at: float) -> None:
        """The Lease was written as ours by a request sent at ``started_at`` (monotonic)."""
        if self.closed is None:
            self._renewed_at = max(started_at, self._renewed_at or started_at)
            self._suspended = None

    def suspend(self, why: str) -> None:
        """Refuse writes until the next renewal (a stall: the Lease must be read again first)."""
        if self.fenced and self.closed is None:
            self._suspended = why

    def close(self, why: str) -> None:
        """Refuse every write from now on and tell the owner (once)."""
        if self.closed is None:
            self.closed = why
            logger.error("write gate closed: %s; this replica stops acting", why)
            if self._on_closed is not None:
                self._on_closed(why)

    def check(self, target: str) -> None:
        """Raise :class:`WriteRefused` unless a write to ``target`` (``kube``, ``cloud``) may go out now."""
        if self.renew_deadline is None:
            return
        why = self.closed or self._suspended
        if why is None:
            if self._renewed_at is None:
                why = "the Lease has not been acquired"
            else:
                age = self._clock() - self._renewed_at
                if age >= self.renew_deadline:
                    self.close(
                        f"the Lease was last renewed {age:.1f}s ago (deadline {self.renew_deadline:g}s)"
                    )
                    why = self.closed
        if why is not None:
            if self._on_refused is not None:
                self._on_refused(target)
            raise WriteRefused(target, why)


async def watch_for_stalls(
    gate: WriteGate,
    reread: Callable[[], Awaitable[None]],
    *,
    threshold: float,
    tick: float,
    clock: Clock = time.monotonic,
    on_stall: Callable[[float], None] | None = None,
) -> None:
    """Tick every ``tick`` seconds; when a tick comes more than ``threshold`` late (the process or
    its loop stalled), suspend the gate and have the Lease read again before any write goes out."""
    last = clock()
    while True:
        await asyncio.sleep(tick)
        now = clock()
        late = now - last - tick
        last = now
        if late > threshold:
            logger.warning("the process stalled for %.1fs; reading the Lease again before any write", late)
            if on_stall is not None:
                on_stall(late)
            gate.suspend(f"stalled for {late:.1f}s; the Lease is being read again")
            await reread()
            last = clock()
