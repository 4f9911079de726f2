"""The chart ships the CRDs of the top-level crds/ directory, byte for byte.

Helm installs a chart's crds/ on first install only; a copy that drifts from crds/ (which the tests
and `make cluster-up` use) would install a different API than the one everything was tested with.
The NodePool CRD is the exception to where it lives: the cluster may already have one (Karpenter, AKS
node auto-provisioning), so the chart keeps it in files/ and renders it from a template only when
it is missing; it must be identical all the same.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = REPO / "crds"
CHART = REPO / "helm" / "gpu-provisioner"
CHART_CRDS = CHART / "crds"
# CRDs the chart renders from files/ (conditionally) instead of installing from crds/.
CONDITIONAL = ("karpenter.sh_nodepools.yaml",)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_chart_crds_are_identical_to_top_level_crds() -> None:
    top = _files(TOP_LEVEL)
    assert top, "crds/ is empty"
    assert set(CONDITIONAL) <= set(top), f"crds/ lacks {CONDITIONAL}"
    shipped = _files(CHART_CRDS)
    assert not set(shipped) & set(CONDITIONAL), f"{CONDITIONAL} belong in files/, not in the chart's crds/"
    for name in CONDITIONAL:
        path = CHART / "files" / name
        assert path.is_file(), f"the chart lacks files/{name} (cp crds/{name} helm/gpu-provisioner/files/)"
        shipped[name] = path.read_bytes()
    assert sorted(shipped) == sorted(top), (
        "the chart's crds/ and files/ must hold exactly the files of crds/ (copy them)"
    )
    differing = [name for name in top if shipped[name] != top[name]]
    assert not differing, (
        f"differ from crds/: {differing} (cp crds/*.yaml into helm/gpu-provisioner/crds/, the NodePool "
        "CRD into helm/gpu-provisioner/files/)"
    )


def test_nodepool_crd_template_reads_the_file() -> None:
    template = (CHART / "templates" / "nodepool-crd.yaml").read_text()
    for name in CONDITIONAL:
        assert f'.Files.Get "files/{name}"' in template, f"templates/nodepool-crd.yaml does not render {name}"
