"""The provisioning benchmark runs end to end and writes a complete, plausible JSON result.

Tiny runs (5 claims, short fake latencies; then 3 claims idle for 10 s) on the session's API
server. They check the shape and sanity of the numbers, never how fast they are: speed is what the
benchmark itself reports.
"""

from __future__ import annotations

import importlib.util
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
CLAIMS = 5
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _summary_fields(s: dict[str, Any], count: int) -> None:
    assert set(s) == {"count", "min", "p50", "p90", "p95", "p99", "max", "mean"}
    assert s["count"] == count
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]


def _run(cluster: Cluster, out: Path, *args: str) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.provision",
            *args,
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
    return doc, proc.stderr


def _common_checks(doc: dict[str, Any], stderr: str, out: Path, claims: int, plot: bool = True) -> None:
    """What every run's result has: pools, the binding check, targets, the plot (unless --no-plot)."""
    r = doc["results"]
    assert doc["ok"] is True and doc["failures"] == []
    assert doc["parameters"]["pool_strategy"] == "dedicated"
    assert doc["parameters"]["controller_env"]["AZURE_POOL_STRATEGY"] == "dedicated"
    assert r["pools"] > 0 and r["pools"] <= claims  # one pool per claim, sampled
    assert r["pools_created"] == claims
    assert r["binding"]["clean"] is True and r["binding"]["violations"] == []
    assert r["binding"]["checks"] and all(c["clean"] for c in r["binding"]["checks"])
    assert r["binding"]["checks"][0]["ready_claims"] == claims

    targets = r["targets"]
    names = {t["name"] for t in targets}
    assert {
        "arm_requests_per_claim",
        "claim_writes_per_claim",
        "pool_puts_per_claim",
        "binding_violations",
    } <= names
    for t in targets:
        assert set(t) >= {"name", "value", "limit", "met"}
        assert isinstance(t["met"], bool)
    assert next(t for t in targets if t["name"] == "binding_violations")["met"] is True
    assert "targets (" in stderr and ("met " in stderr or "not met " in stderr)

    per_claim = r["arm_calls"]["per_claim"]
    assert per_claim["by_verb"]["PUT"] == 1.0 and per_claim["by_verb"]["DELETE"] == 1.0
    assert per_claim["by_kind"]["pool_put"] == 1.0

    # The controller runs as a ServiceAccount of its own, so its reads are counted too.
    kr = r["kube_requests"]
    assert kr["available"] is True, kr
    assert kr["user"].startswith("system:serviceaccount:default:gpu-provisioner-bench-")
    assert kr["reads"] > 0 and kr["writes"] > 0
    assert kr["by_verb"].get("patch", 0) > 0 and kr["per_claim"]["claim_writes"] > 0

    png = out.with_suffix(".png")
    if not plot:
        assert not png.exists() and "plot: " not in stderr and "plot skipped" not in stderr
    elif HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"plot: {png}" in stderr
    else:
        assert "plot skipped: matplotlib not installed" in stderr


def test_overhead_benchmark_writes_a_sane_result(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    doc, stderr = _run(cluster, out, "--claims", str(CLAIMS))
    assert "time to Ready" in stderr  # the human summary

    assert doc["benchmark"] == "provision" and doc["scenario"] == "overhead"
    machine = doc["machine"]
    assert machine["cpus"] >= 1 and machine["python"].startswith("3.")
    params = doc["parameters"]
    assert params["claims"] == CLAIMS and params["kinds"] == ["machine", "nodeclaim"]
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
        _summary_fields(r[key], CLAIMS)
    # Ready cannot come before the pool exists; the controller's share is a part of the whole.
    assert r["time_to_ready_s"]["min"] >= CREATE_LATENCY
    assert r["overhead_s"]["max"] < r["time_to_ready_s"]["max"]
    assert r["node_delays_s"]["min"] > 0

    calls = r["arm_calls"]["per_claim"]
    assert calls["put"] == 1.0 and calls["delete"] == 1.0
    assert calls["get"] >= 1 and calls["all"] >= calls["put"] + calls["delete"] + calls["get"]
    assert r["leaked_pools"] == 0
    assert r["pools"] == CLAIMS  # all pools exist once every claim is Ready
    assert {t["name"] for t in r["targets"]} >= {"overhead_p99_s", "pool_deletes_per_claim"}

    rows = r["claims"]
    assert sorted(row["kind"] for row in rows) == ["machine"] * 3 + ["nodeclaim"] * 2
    for row in rows:
        assert row["arm"]["pool_put"] == 1 and row["arm"]["pool_delete"] == 1
        assert row["pool"] == row["name"] and row["node"]
        assert set(row["milestones_s"]) == {"Launched", "Registered", "Initialized", "Ready"}
    _common_checks(doc, stderr, out, CLAIMS)


def test_idle_benchmark_reports_the_controller_at_rest(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    doc, stderr = _run(cluster, out, "--scenario", "idle", "--claims", "3", "--duration", "10", "--no-plot")
    assert doc["scenario"] == "idle" and doc["parameters"]["duration_s"] == 10
    r = doc["results"]
    idle = r["idle"]
    assert idle["duration_s"] >= 10
    for key in (
        "arm_calls",
        "arm_calls_total",
        "arm_calls_at_rest_per_hour",
        "arm_calls_at_rest_per_claim_per_hour",
        "arm_calls_at_rest_per_claim_per_hour_excluding_lists",
        "controller_writes",
        "controller_cpu_s",
        "rss_mib_end",
    ):
        assert idle[key] is not None, key
    identity = ("token", "identity_discovery")
    assert idle["arm_calls_total"] == sum(v for k, v in idle["arm_calls"].items() if k not in identity)
    assert idle["kube_requests"]["available"] is True
    assert idle["controller_cpu_s"] >= 0 and idle["rss_mib_end"] > 0
    assert [c["at"] for c in r["binding"]["checks"]] == ["all Ready", "end of idle"]
    assert "idle_arm_calls_per_claim_per_hour" in {t["name"] for t in r["targets"]}
    _summary_fields(r["time_to_ready_s"], 3)
    _common_checks(doc, stderr, out, 3, plot=False)
