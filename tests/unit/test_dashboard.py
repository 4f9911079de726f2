"""The Grafana dashboard shipped with the chart queries only metrics the controller exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from provisioner.metrics import Metrics

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "helm" / "gpu-provisioner" / "dashboards" / "gpu-provisioner.json"
)

_METRIC = re.compile(r"\b(?:karpenter|gpu_provisioner)_[A-Za-z0-9_]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _collectors(metrics: Metrics) -> Iterator[MetricWrapperBase]:
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            yield value
        elif isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, MetricWrapperBase))


def _exposed() -> dict[str, tuple[str, frozenset[str]]]:
    """Every series name /metrics can carry -> (metric family, its label names)."""
    metrics = Metrics()
    labels = {c._name: frozenset(c._labelnames) for c in _collectors(metrics)}
    exposed: dict[str, tuple[str, frozenset[str]]] = {}
    for family in metrics.registry.collect():
        names = labels[family.name]
        if family.type == "counter":
            exposed[f"{family.name}_total"] = (family.name, names)
        elif family.type == "histogram":
            exposed[f"{family.name}_bucket"] = (family.name, names | {"le"})
            exposed[f"{family.name}_sum"] = (family.name, names)
            exposed[f"{family.name}_count"] = (family.name, names)
        else:
            exposed[family.name] = (family.name, names)
    return exposed


def _panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from _panels(panel.get("panels") or [])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], target)
        for panel in _panels(dashboard["panels"])
        if panel.get("type") != "row"
        for target in panel.get("targets") or ()
    ]


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"].strip("${}") in variables
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]


def test_every_queried_metric_is_exposed_by_the_controller(dashboard: dict[str, Any]) -> None:
    exposed = _exposed()
    for title, target in _targets(dashboard):
        expr = target["expr"]
        used = _METRIC.findall(expr)
        assert used, f"{title!r}: {expr} queries none of our metrics"
        unknown = [m for m in used if m not in exposed]
        assert not unknown, (
            f"{title!r} queries {unknown}, which /metrics does not expose "
            "(counters carry a _total suffix, histograms _bucket/_sum/_count)"
        )
        labels = frozenset().union(*(exposed[m][1] for m in used))
        named = [n.strip() for group in _BY.findall(expr) for n in group.split(",") if n.strip()]
        named += [n for group in _MATCHERS.findall(expr) for n in _MATCHER_NAME.findall(group)]
        named += _LEGEND.findall(target.get("legendFormat") or "")
        assert set(named) <= labels, f"{title!r}: labels {set(named) - labels} do not exist on {used}"


def test_every_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    exposed = _exposed()
    queried = {
        exposed[m][0] for _, t in _targets(dashboard) for m in _METRIC.findall(t["expr"]) if m in exposed
    }
    families = {name for name, _ in exposed.values()}
    assert families - queried == set(), "metrics without a dashboard panel"
