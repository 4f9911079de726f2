"""The chart ships the CRDs of the top-level crds/ directory, byte for byte.

Helm installs a chart's crds/ on first install only; a copy that drifts from crds/ (which the tests
and `make cluster-up` use) would install a different API than the one everything was tested with.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = REPO / "crds"
CHART = REPO / "helm" / "gpu-provisioner" / "crds"


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_chart_crds_are_identical_to_top_level_crds() -> None:
    top, chart = _files(TOP_LEVEL), _files(CHART)
    assert top, "crds/ is empty"
    assert sorted(chart) == sorted(top), "the chart's crds/ must hold exactly the files of crds/ (copy them)"
    differing = [name for name in top if chart[name] != top[name]]
    assert not differing, f"differ from crds/: {differing} (cp crds/*.yaml helm/gpu-provisioner/crds/)"
