"""The steady scenario's schedule: when claims arrive and when they are deleted.

Arrivals are evenly spaced (``i / rate`` seconds after the start, for ``duration`` seconds), not
random: two runs with the same options send the same load. A claim is deleted ``lifetime`` seconds
after it was seen Ready.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: The most claims one steady run creates (``rate * duration``): keeps every loop bounded.
MAX_CLAIMS = 20_000


def arrival_offsets(rate: float, duration: float) -> list[float]:
    """Seconds after the start at which claims are created: ``0, 1/rate, 2/rate, ...`` before
    ``duration``."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    count = math.ceil(rate * duration - 1e-9)
    if count > MAX_CLAIMS:
        raise ValueError(f"{rate:g}/s for {duration:g}s is {count} claims, more than {MAX_CLAIMS}")
    return [i / rate for i in range(count)]


def due_arrivals(offsets: list[float], created: int, elapsed: float) -> range:
    """Indices of the arrivals due at ``elapsed`` seconds that are not created yet (``created`` of
    them are)."""
    end = created
    while end < len(offsets) and offsets[end] <= elapsed:
        end += 1
    return range(created, end)


def deletion_due(ready_at: float | None, lifetime: float, now: float) -> bool:
    """True once a claim seen Ready at ``ready_at`` has lived ``lifetime`` seconds."""
    return ready_at is not None and now >= ready_at + lifetime


def peak_overlap(intervals: Iterable[tuple[float | None, float | None]], end: float) -> int:
    """The most intervals ``[start, stop)`` open at once; an open one (``stop`` None) lasts until
    ``end``; one that never started (``start`` None) is left out."""
    events: list[tuple[float, int]] = []
    for start, stop in intervals:
        if start is None:
            continue
        events.append((start, 1))
        events.append((stop if stop is not None else end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # a stop before a start at the same instant
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak
