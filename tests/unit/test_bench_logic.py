"""The benchmark's own logic: binding check, targets, steady schedule, request counting, plot.

Pure functions of plain objects; the benchmark end to end is tests/e2e/test_bench_smoke.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.binding import check_binding, describe
from bench.identity import flow_schemas, parse_flow_counts, summarize_requests
from bench.observe import ArmCalls, classify, pool_of
from bench.plot import panels, title, write_plot
from bench.schedule import MAX_CLAIMS, arrival_offsets, deletion_due, due_arrivals, peak_overlap
from bench.targets import evaluate, lines, overhead_limit, shared_pool_limit

PID = "azure:///subscriptions/s/resourceGroups/mc/providers/Microsoft.Compute/virtualMachineScaleSets/aks-{}-vmss/virtualMachines/{}"


def claim(name: str, pid: str = "", ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "kind": "NodeClaim",
        "metadata": meta,
        "status": {
            "providerID": pid,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def node(name: str, pid: str, owners: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [{"kind": "NodeClaim", "name": o, "uid": f"uid-{o}"} for o in owners]
            + [{"kind": "ConfigMap", "name": "not-a-claim", "uid": "x"}],
        },
        "spec": {"providerID": pid},
    }


# ------------------------------------------------------------------------------------- binding


def test_one_claim_one_node_each_is_clean() -> None:
    a, b = PID.format("a", 0), PID.format("b", 0)
    result = check_binding([claim("a", a), claim("b", b)], [node("na", a, ("a",)), node("nb", b, ("b",))])
    assert result == {"ready_claims": 2, "nodes": 2, "violations": [], "clean": True}


def test_two_claims_with_one_provider_id_are_a_violation() -> None:
    pid = PID.format("shared", 3)
    result = check_binding([claim("a", pid), claim("b", pid)], [node("n", pid, ("a",))])
    checks = {v["check"] for v in result["violations"]}
    assert "provider_id_shared" in checks
    assert not result["clean"]
    shared = next(v for v in result["violations"] if v["check"] == "provider_id_shared")
    assert shared["claims"] == ["a", "b"]


def test_a_ready_claim_needs_exactly_one_node() -> None:
    pid = PID.format("a", 0)
    none = check_binding([claim("a", pid)], [])
    assert [v["check"] for v in none["violations"]] == ["no_node"]
    two = check_binding([claim("a", pid)], [node("n1", pid), node("n2", pid)])
    assert [v["check"] for v in two["violations"]] == ["provider_id_on_several_nodes"]
    assert two["violations"][0]["nodes"] == ["n1", "n2"]
    missing = check_binding([claim("a", "")], [])
    assert [v["check"] for v in missing["violations"]] == ["no_provider_id"]


def test_a_node_owned_by_two_claims_or_by_the_wrong_one_is_a_violation() -> None:
    a, b = PID.format("a", 0), PID.format("b", 0)
    two = check_binding([claim("a", a), claim("b", b)], [node("na", a, ("a", "b")), node("nb", b, ("b",))])
    assert [v["check"] for v in two["violations"]] == ["node_owned_by_several_claims"]
    wrong = check_binding([claim("a", a), claim("b", b)], [node("na", a, ("b",)), node("nb", b, ("b",))])
    assert [v["check"] for v in wrong["violations"]] == ["owner_mismatch"]
    assert "owned by b" in describe(wrong["violations"])


def test_claims_not_ready_or_deleting_need_no_node_but_keep_their_provider_id_unique() -> None:
    a = PID.format("a", 0)
    result = check_binding([claim("a", a, ready=False), claim("b", PID.format("b", 0), deleting=True)], [])
    assert result["clean"] and result["ready_claims"] == 0
    clash = check_binding([claim("a", a, deleting=True), claim("b", a)], [node("n", a, ("b",))])
    assert [v["check"] for v in clash["violations"]] == ["provider_id_shared"]


def test_describe_caps_the_lines() -> None:
    violations = [{"check": "no_node", "claims": [f"c{i}"], "nodes": [], "detail": "x"} for i in range(12)]
    text = describe(violations, limit=3)
    assert text.count("\n") == 3 and "9 more" in text


# ------------------------------------------------------------------------------------- targets


def doc(
    scenario: str = "overhead", n: int = 10, strategy: str = "dedicated", **results: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "arm_calls": {"per_claim": {"all_arm": 7.2, "put": 1.0, "delete": 1.0}},
        "kube_writes": {"per_claim": {"claim_updates": 9.0}},
        "kube_requests": {"available": True, "per_claim": {"claim_writes": 3.5}},
        "overhead_s": {"count": n, "p99": 0.4},
        "controller_process": {"peak_rss_mib": 120.0, "cpu_ms_per_claim": 30.0},
        "binding": {"violations": []},
        "pools": 3,
    }
    base.update(results)
    return {"scenario": scenario, "parameters": {"claims": n, "pool_strategy": strategy}, "results": base}


def by_name(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in targets}


def test_targets_of_a_dedicated_run() -> None:
    t = by_name(evaluate(doc()))
    assert set(t) == {
        "arm_requests_per_claim",
        "claim_writes_per_claim",
        "overhead_p99_s",
        "pool_puts_per_claim",
        "pool_deletes_per_claim",
        "controller_peak_rss_mb",
        "controller_cpu_ms_per_claim",
        "binding_violations",
    }
    assert all(isinstance(x["met"], bool) for x in t.values())
    assert all(x["met"] for x in t.values())
    # The controller's own claim writes are preferred to the server-wide counter.
    assert t["claim_writes_per_claim"]["value"] == 3.5
    assert t["controller_peak_rss_mb"]["value"] == pytest.approx(125.8, abs=0.1)  # MiB -> MB
    assert t["overhead_p99_s"]["limit"] == 1.0


def test_targets_not_met_and_not_measured() -> None:
    t = by_name(
        evaluate(
            doc(
                arm_calls={"per_claim": {"all_arm": 12, "put": 2.0, "delete": 1.0}},
                kube_requests={"available": False},
                overhead_s={"count": 10, "p99": 1.0},
                controller_process={"available": False},
                binding={"violations": [{"check": "no_node"}]},
            )
        )
    )
    assert not t["arm_requests_per_claim"]["met"]
    assert t["claim_writes_per_claim"]["value"] == 9.0 and not t["claim_writes_per_claim"]["met"]
    assert not t["overhead_p99_s"]["met"]  # strictly below the limit
    assert not t["pool_puts_per_claim"]["met"] and t["pool_deletes_per_claim"]["met"]
    assert t["controller_peak_rss_mb"]["value"] is None and not t["controller_peak_rss_mb"]["met"]
    assert t["binding_violations"]["value"] == 1 and not t["binding_violations"]["met"]
    text = "\n".join(lines(list(t.values())))
    assert "not met arm_requests_per_claim: 12 (target <= 10" in text
    assert "not measured" in text


def test_shared_and_idle_targets() -> None:
    t = by_name(
        evaluate(
            doc(
                "idle",
                20,
                "shared",
                pools=11,
                idle={"arm_calls_at_rest_per_claim_per_hour_excluding_lists": 0.0},
            )
        )
    )
    assert "pool_puts_per_claim" not in t and "pool_deletes_per_claim" not in t
    assert t["pools"]["limit"] == 10 and not t["pools"]["met"]
    assert t["idle_arm_calls_per_claim_per_hour"]["met"]
    storm = by_name(evaluate(doc("storm", overhead_s={"count": 0})))
    assert "overhead_p99_s" not in storm


def test_limits_by_claim_count() -> None:
    assert overhead_limit(200) == 1.0 and overhead_limit(201) == 2.0 and overhead_limit(1000) == 2.0
    assert overhead_limit(1001) is None
    assert shared_pool_limit(5) == 10 and shared_pool_limit(1000) == 10 and shared_pool_limit(1501) == 16


# ------------------------------------------------------------------------------------- schedule


def test_arrivals_are_evenly_spaced_within_the_duration() -> None:
    assert arrival_offsets(1, 5) == [0, 1, 2, 3, 4]
    assert arrival_offsets(2, 2) == [0, 0.5, 1, 1.5]
    assert arrival_offsets(0.5, 5) == [0, 2, 4]
    assert len(arrival_offsets(1, 180)) == 180
    with pytest.raises(ValueError):
        arrival_offsets(0, 10)
    with pytest.raises(ValueError, match="more than"):
        arrival_offsets(MAX_CLAIMS, 2)


def test_due_arrivals_and_deletions() -> None:
    offsets = arrival_offsets(1, 5)
    assert list(due_arrivals(offsets, 0, 0.0)) == [0]
    assert list(due_arrivals(offsets, 1, 2.5)) == [1, 2]
    assert list(due_arrivals(offsets, 3, 2.9)) == []
    assert list(due_arrivals(offsets, 3, 100)) == [3, 4]
    assert not deletion_due(None, 30, 1000)
    assert not deletion_due(100.0, 30, 129.9)
    assert deletion_due(100.0, 30, 130.0)


def test_peak_overlap() -> None:
    assert peak_overlap([], 10) == 0
    assert peak_overlap([(0, 2), (1, 3), (2, 4)], 10) == 2  # a stop and a start at 2: not both
    assert peak_overlap([(0, None), (5, None), (None, 1)], 10) == 2


# ------------------------------------------------------------------------------------- counting


def test_arm_request_kinds_and_pools() -> None:
    base = (
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c/agentPools"
    )
    assert classify("POST", f"{base}/pool1/deleteMachines") == "pool_delete_machines"
    assert classify("GET", f"{base}/pool1/machines") == "machines_list"
    assert classify("GET", f"{base}/pool1/machines/m0") == "machine_get"
    assert classify("PUT", f"{base}/pool1") == "pool_put"
    assert classify("GET", base) == "pool_list"
    assert pool_of(f"{base}/pool1/deleteMachines") == "pool1"
    assert pool_of(f"{base}/pool1") == "pool1"
    assert pool_of(base) is None
    records = [
        {"method": "PUT", "path": f"{base}/p", "status": 201, "timestamp": 1.0},
        {"method": "PUT", "path": f"{base}/p", "status": 200, "timestamp": 3.0},
        {"method": "POST", "path": f"{base}/p/deleteMachines", "status": 202, "timestamp": 5.0},
        {"method": "POST", "path": "/tenant/oauth2/v2.0/token", "status": 200, "timestamp": 0.5},
    ]
    calls = ArmCalls(records)
    assert calls.by_verb() == {"POST": 1, "PUT": 2}  # the token request is not ARM
    assert calls.pools_created() == {"p"}
    assert calls.first_after(("pool_put",), "p", 2.0) == 3.0
    assert calls.first_after(("pool_delete", "pool_delete_machines"), "p", 4.0) == 5.0
    assert calls.first_after(("pool_put",), "p", 4.0) is None


METRICS = """# TYPE apiserver_flowcontrol_dispatched_requests_total counter
apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="exempt"} 500
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-list-claims",priority_level="exempt"} 4
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-watch-nodes",priority_level="exempt"} 2
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-patch-claims",priority_level="exempt"} 9
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-update-claims",priority_level="exempt"} 1
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-create-events",priority_level="exempt"} 3
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r1-nonresource",priority_level="exempt"} 5
apiserver_flowcontrol_dispatched_requests_total{flow_schema="gpb-r2-list-claims",priority_level="exempt"} 70
"""


def test_the_controllers_requests_are_read_from_its_flow_schemas() -> None:
    counts = parse_flow_counts("gpb-r1", METRICS)
    assert counts == {
        "list claims": 4,
        "watch nodes": 2,
        "patch claims": 9,
        "update claims": 1,
        "create events": 3,
        "* nonresource": 5,
    }
    s = summarize_requests(counts, 2)
    assert s["reads"] == 11 and s["writes"] == 13 and s["total"] == 24
    assert s["by_verb"]["list"] == 4 and s["by_bucket"]["claims"] == 14
    assert s["per_claim"]["claim_writes"] == 5.0 and s["per_claim"]["watch"] == 1.0


def test_flow_schemas_match_only_the_service_account_and_never_queue() -> None:
    schemas = flow_schemas("gpb-r1", "sa")
    names = [s["metadata"]["name"] for s in schemas]
    assert len(names) == len(set(names))
    assert "gpb-r1-watch-claims" in names and "gpb-r1-nonresource" in names and "gpb-r1-rest" in names
    for s in schemas:
        spec = s["spec"]
        assert spec["priorityLevelConfiguration"] == {"name": "exempt"}
        assert spec["rules"][0]["subjects"] == [
            {"kind": "ServiceAccount", "serviceAccount": {"name": "sa", "namespace": "default"}}
        ]
    precedence = {s["metadata"]["name"]: s["spec"]["matchingPrecedence"] for s in schemas}
    assert precedence["gpb-r1-get-claims"] < precedence["gpb-r1-get-other"] < precedence["gpb-r1-rest"]


# ------------------------------------------------------------------------------------- plot


def result_doc() -> dict[str, Any]:
    rows = [
        {"overhead_s": 0.1 * i, "time_to_ready_s": 1 + 0.1 * i, "delete_s": None, "created_s": float(i)}
        for i in range(1, 6)
    ]
    return {
        "scenario": "steady",
        "parameters": {"claims": 5, "pool_strategy": "shared"},
        "machine": {"git_commit": "0123456789abcdef", "git_dirty": True},
        "results": {"claims": rows, "overhead_s": {"p50": 0.3, "p99": 0.5}, "time_to_ready_s": {"p50": 1.3}},
    }


def test_plot_panels_and_title() -> None:
    d = result_doc()
    assert title(d) == "steady: N=5 claims, strategy shared, commit 0123456789 (dirty)"
    keys = [p[0] for p in panels(d)]
    assert keys == ["overhead_s", "time_to_ready_s"]  # delete_s has no values
    assert panels(d)[0][2] == [0.1, 0.2, pytest.approx(0.3), 0.4, 0.5]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_plot_is_a_png(tmp_path: Path) -> None:
    path = write_plot(result_doc(), tmp_path / "r.png")
    assert path == tmp_path / "r.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_plot_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert write_plot(result_doc(), tmp_path / "r.png") is None
    assert not (tmp_path / "r.png").exists()
