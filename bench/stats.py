"""Small summaries of samples: percentiles with linear interpolation, rounded for JSON."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: Decimal places kept for seconds in results (milliseconds; the clocks are no better than that).
PRECISION = 3
#: The percentiles of a summary.
QUANTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, interpolating between ranks.

    Same definition as numpy's default ("linear"): p50 of [1, 2, 3, 4] is 2.5.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    rank = (len(sorted_values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return float(sorted_values[low])
    fraction = rank - low
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction)


def summary(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``count``, ``min``, ``p50``, ``p90``, ``p95``, ``p99``, ``max``, ``mean`` of the values that
    are not None."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return {"count": 0, "min": None, **{f"p{q}": None for q in QUANTILES}, "max": None, "mean": None}
    return {
        "count": len(present),
        "min": round(present[0], PRECISION),
        **{f"p{q}": round(percentile(present, q), PRECISION) for q in QUANTILES},
        "max": round(present[-1], PRECISION),
        "mean": round(sum(present) / len(present), PRECISION),
    }


def seconds(value: float | None) -> float | None:
    """A duration rounded for the results, None kept."""
    return None if value is None else round(value, PRECISION)


def per(total: int, count: int) -> float | None:
    """``total / count`` rounded to two places (None when there is nothing to divide by)."""
    return None if count <= 0 else round(total / count, 2)
