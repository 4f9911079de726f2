"""What a run should reach: each target a value of the result against a limit, met or not.

Printed at the end of a run and stored in ``results.targets``. They are goals, not a gate: the
exit code does not depend on them (a binding violation fails the run on its own).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

#: MiB -> MB (the RSS limit is in MB, /proc reports KiB).
MIB_TO_MB = 1024 * 1024 / 1_000_000
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


def target(name: str, value: float | int | None, op: str, limit: float, what: str) -> dict[str, Any]:
    """``{name, value, limit, op, met, what}``; a value that was not measured is not met."""
    met = value is not None and OPS[op](float(value), float(limit))
    return {"name": name, "value": value, "limit": limit, "op": op, "met": bool(met), "what": what}


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def overhead_limit(n: int) -> float | None:
    """Overhead p99 limit for ``n`` claims: 1 s up to 200, 2 s up to 1000, none above."""
    if n <= 200:
        return 1.0
    if n <= 1000:
        return 2.0
    return None


def shared_pool_limit(n: int) -> int:
    """Pools a shared run of ``n`` same-shape claims may hold: 10 up to 1000 claims, then one per
    100 claims."""
    return 10 if n <= 1000 else math.ceil(n / 100)


def evaluate(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The targets of one result document (``scenario``, ``parameters``, ``results``)."""
    scenario = doc.get("scenario")
    params = doc.get("parameters") or {}
    r = doc.get("results") or {}
    n = int(params.get("claims") or 0)
    strategy = params.get("pool_strategy", "dedicated")
    out = [
        target(
            "arm_requests_per_claim",
            _get(r, "arm_calls", "per_claim", "all_arm"),
            "<=",
            10,
            "ARM requests per claim (token requests left out)",
        )
    ]
    claim_writes = _get(r, "kube_requests", "per_claim", "claim_writes")
    if claim_writes is None:
        claim_writes = _get(r, "kube_writes", "per_claim", "claim_updates")
    out.append(
        target(
            "claim_writes_per_claim", claim_writes, "<=", 4, "PATCH/PUT of a claim and its status, per claim"
        )
    )
    if _get(r, "overhead_s", "count"):
        limit = overhead_limit(n)
        if limit is not None:
            out.append(
                target(
                    "overhead_p99_s",
                    _get(r, "overhead_s", "p99"),
                    "<",
                    limit,
                    f"controller overhead p99 with {n} claims",
                )
            )
    if strategy == "dedicated":
        out.append(
            target(
                "pool_puts_per_claim",
                _get(r, "arm_calls", "per_claim", "put"),
                "==",
                1,
                "dedicated: one PUT per claim",
            )
        )
        out.append(
            target(
                "pool_deletes_per_claim",
                _get(r, "arm_calls", "per_claim", "delete"),
                "==",
                1,
                "dedicated: one DELETE per claim",
            )
        )
    else:
        out.append(
            target(
                "pools",
                r.get("pools"),
                "<=",
                shared_pool_limit(n),
                f"shared: agent pools held at once for {n} same-shape claims",
            )
        )
    rss = _get(r, "controller_process", "peak_rss_mib")
    out.append(
        target(
            "controller_peak_rss_mb",
            round(rss * MIB_TO_MB, 1) if rss is not None else None,
            "<",
            250,
            "controller peak resident memory (MB)",
        )
    )
    out.append(
        target(
            "controller_cpu_ms_per_claim",
            _get(r, "controller_process", "cpu_ms_per_claim"),
            "<",
            50,
            "controller CPU per claim lifecycle (ms)",
        )
    )
    violations = _get(r, "binding", "violations")
    out.append(
        target(
            "binding_violations",
            len(violations) if isinstance(violations, list) else None,
            "==",
            0,
            "claims bound to two Nodes or Nodes to two claims",
        )
    )
    if scenario == "idle":
        out.append(
            target(
                "idle_arm_calls_per_claim_per_hour",
                _get(r, "idle", "arm_calls_at_rest_per_claim_per_hour_excluding_lists"),
                "==",
                0,
                "ARM calls at rest per claim per hour, listings left out",
            )
        )
    return out


def lines(targets: list[dict[str, Any]]) -> list[str]:
    """One ``met`` / ``not met`` line per target."""
    out = []
    for t in targets:
        value = "not measured" if t["value"] is None else f"{t['value']:g}"
        verdict = "met    " if t["met"] else "not met"
        out.append(f"  {verdict} {t['name']}: {value} (target {t['op']} {t['limit']:g}; {t['what']})")
    return out
