"""The Grafana dashboard shipped with the chart queries only metrics the controller exposes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.exposition import Series, exposed

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "helm" / "gpu-provisioner" / "dashboards" / "gpu-provisioner.json"
)

_METRIC = re.compile(r"\b(?:karpenter|gpu_provisioner)_[A-Za-z0-9_]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# What is left of a query once strings, matchers, ranges and by/without groups are gone: functions
# (a name before "("), keywords, numbers, and the names of the metrics it reads.
_STRIP = re.compile(
    r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)'
)
_NAME = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset"})


def _exposed() -> dict[str, Series]:
    """Every series name /metrics carries -> the metric it belongs to and its label names."""
    return exposed()


def _series_read(expr: str) -> list[str]:
    """Every series name a PromQL expression reads."""
    return [n for n in _NAME.findall(_STRIP.sub(" ", expr)) if n not in _KEYWORDS]


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
        labels = frozenset().union(*(exposed[m].labels for m in used))
        named = [n.strip() for group in _BY.findall(expr) for n in group.split(",") if n.strip()]
        named += [n for group in _MATCHERS.findall(expr) for n in _MATCHER_NAME.findall(group)]
        named += _LEGEND.findall(target.get("legendFormat") or "")
        assert set(named) <= labels, f"{title!r}: labels {set(named) - labels} do not exist on {used}"


def test_every_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    exposed = _exposed()
    queried = {
        exposed[m].family for _, t in _targets(dashboard) for m in _series_read(t["expr"]) if m in exposed
    }
    families = {s.family for name, s in exposed.items() if _METRIC.fullmatch(name)}
    assert families - queried == set(), "metrics without a dashboard panel"


def test_queries_read_only_exported_series(dashboard: dict[str, Any]) -> None:
    """Not only our prefixes: every series a query names (process_*, python_*, ...) is exported."""
    exposed = _exposed()
    for title, target in _targets(dashboard):
        read = _series_read(target["expr"])
        assert read, f"{title!r}: found no series in {target['expr']}"
        unknown = [m for m in read if m not in exposed]
        assert not unknown, f"{title!r} reads {unknown}, which /metrics does not carry"


def test_the_series_reader_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y"}[5m]))) / ignoring(z) b_total'
        " and on(k) process_open_fds > bool 2"
    )
    assert _series_read(expr) == ["a_bucket", "b_total", "process_open_fds"]
