"""The provisioning benchmark runs end to end and writes a complete, plausible JSON result.

A tiny run (2 claims, short fake latencies) on the session's API server. It checks the shape and
sanity of the numbers, never how fast they are: speed is what the benchmark itself reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.e2e.harness import REPO

pytestmark = pytest.mark.e2e

CREATE_LATENCY = 0.5


def _summary_fields(s: dict[str, Any], count: int) -> None:
    assert set(s) == {"count", "min", "p50", "p90", "p95", "p99", "max", "mean"}
    assert s["count"] == count
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]


def test_overhead_benchmark_writes_a_sane_result(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.provision",
            "--claims",
            "2",
            "--create-latency",
            str(CREATE_LATENCY),
            "--delete-latency",
            "0.5",
            "--timeout",
            "60",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == doc
    assert "time to Ready" in proc.stderr  # the human summary

    assert doc["benchmark"] == "provision" and doc["scenario"] == "overhead" and doc["ok"] is True
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["python"].startswith("3.")
    params = doc["parameters"]
    assert params["claims"] == 2 and params["kinds"] == ["machine", "nodeclaim"]
    assert params["create_latency_s"] == CREATE_LATENCY

    r = doc["results"]
    for key in (
        "time_to_ready_s",
        "overhead_s",
        "launch_reaction_s",
        "ready_reaction_s",
        "node_delays_s",
        "delete_s",
        "delete_overhead_s",
    ):
        _summary_fields(r[key], 2)
    # Ready cannot come before the pool exists; the controller's share is a part of the whole.
    assert r["time_to_ready_s"]["min"] >= CREATE_LATENCY
    assert r["overhead_s"]["max"] < r["time_to_ready_s"]["max"]
    assert r["node_delays_s"]["min"] > 0

    calls = r["arm_calls"]["per_claim"]
    assert calls["put"] == 1.0 and calls["delete"] == 1.0
    assert calls["get"] >= 1 and calls["all"] >= calls["put"] + calls["delete"] + calls["get"]
    assert r["leaked_pools"] == 0

    rows = r["claims"]
    assert sorted(row["kind"] for row in rows) == ["machine", "nodeclaim"]
    for row in rows:
        assert row["arm"]["pool_put"] == 1 and row["arm"]["pool_delete"] == 1
        assert set(row["milestones_s"]) == {"Launched", "Registered", "Initialized", "Ready"}
