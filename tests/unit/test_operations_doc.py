"""docs/operations.md: its metrics table lists what /metrics exports, its alerts read only that."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.unit.exposition import exposed
from tests.unit.test_dashboard import _series_read

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
_ROW = re.compile(r"^\| `([a-z_]+)` \|", re.MULTILINE)


def _alert_rules() -> list[dict[str, Any]]:
    text = DOC.read_text()
    block = text.split("## Suggested alerts", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    rule = yaml.safe_load(block)
    assert rule["kind"] == "PrometheusRule"
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_alerts_read_only_exported_series() -> None:
    series = exposed()
    rules = _alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        read = _series_read(rule["expr"])
        assert read, f"{rule['alert']}: no series in {rule['expr']}"
        unknown = [name for name in read if name not in series]
        assert not unknown, f"{rule['alert']} reads {unknown}, which /metrics does not carry"


def test_the_metrics_table_lists_every_metric_and_only_those() -> None:
    documented = set(_ROW.findall(DOC.read_text().split("## Metrics", 1)[1].split("## ", 1)[0]))
    metrics = {
        s.family for name, s in exposed().items() if name.startswith(("karpenter_", "gpu_provisioner_"))
    }
    assert documented == metrics
