"""Shared fixtures: a real kube-apiserver + etcd on loopback for the whole test session.

The control plane is started once per session (``hack/cluster.py``; binaries built from pinned Go
modules and cached in ``~/.cache/gpu-provisioner``). Tests isolate themselves by unique object
names. Set ``GPU_PROVISIONER_TEST_KUBECONFIG`` to reuse an already running cluster (for example
the one from ``make cluster-up``) instead of starting a new one, and ``GPU_PROVISIONER_TEST_AUDIT_LOG``
to its audit log (``.local/cluster/logs/audit.log``) for the tests that count API writes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest

from hack import cluster as local_cluster


@dataclass
class Cluster:
    """A running API server as tests see it."""

    kubeconfig: Path
    kubectl_path: str
    #: The API server's audit log of writes (None for a reused cluster without one).
    audit_log: Path | None = None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; raises with stderr when ``check`` fails."""
        proc = subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def api_client(self) -> kubernetes.client.ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reuse = os.environ.get("GPU_PROVISIONER_TEST_KUBECONFIG")
    if reuse:
        kube_bin = local_cluster.build_tools("kubernetes")["kubernetes"]
        audit = os.environ.get("GPU_PROVISIONER_TEST_AUDIT_LOG")
        c = Cluster(
            kubeconfig=Path(reuse),
            kubectl_path=str(kube_bin / "kubectl"),
            audit_log=Path(audit) if audit else None,
        )
        local_cluster.install_crds(c.kubectl_path, reuse)
        yield c
        return
    with tempfile.TemporaryDirectory(prefix="gpu-provisioner-test-") as tmp:
        state_dir = Path(tmp) / "cluster"
        info = local_cluster.start(state_dir, Path(tmp) / "kubeconfig", detach=False)
        try:
            yield Cluster(
                kubeconfig=Path(info.kubeconfig), kubectl_path=info.kubectl, audit_log=Path(info.audit_log)
            )
        finally:
            local_cluster.stop(state_dir)
