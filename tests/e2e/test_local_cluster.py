"""The local control plane as a developer uses it: make cluster-up / cluster-down, kubectl, builds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hack import cluster as local_cluster
from tests.conftest import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def _make(target: str, local_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target, f"LOCAL_DIR={local_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_api_server_is_tls_on_loopback_with_rbac(cluster: Cluster) -> None:
    config = json.loads(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    assert server.startswith("https://127.0.0.1:")

    # The admin identity may do anything; an ordinary user may not (RBAC authorizer is on).
    assert cluster.kubectl("auth", "can-i", "create", "machines.karpenter.sh").stdout.strip() == "yes"
    denied = cluster.kubectl("auth", "can-i", "list", "nodes", "--as=someone", check=False)
    assert denied.stdout.strip() == "no"


def test_kubectl_matches_the_server_minor_version(cluster: Cluster) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    client, server = versions["clientVersion"], versions["serverVersion"]
    assert server["gitVersion"].startswith("v1.")
    assert client["major"] == server["major"] == "1"
    assert abs(int(client["minor"]) - int(server["minor"])) <= 1


def test_cluster_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    local_dir = tmp_path / "local"
    up = _make("cluster-up", local_dir)
    assert up.returncode == 0, up.stderr
    kubeconfig = local_dir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout

    info = local_cluster.ClusterInfo.load(local_dir / "cluster")
    assert info is not None
    pids = [info.etcd_pid, info.apiserver_pid]
    try:
        # Usable from a plain shell with the written kubeconfig; the CRDs are installed.
        shell = subprocess.run(
            f"{info.kubectl} --kubeconfig {kubeconfig} get machines,nodeclaims",
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shell.returncode == 0, shell.stderr
        assert "No resources found" in shell.stderr

        again = _make("cluster-up", local_dir)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        same = local_cluster.ClusterInfo.load(local_dir / "cluster")
        assert same is not None and [same.etcd_pid, same.apiserver_pid] == pids
    finally:
        down = _make("cluster-down", local_dir)
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert not local_cluster.alive(pid), f"process {pid} still running after cluster-down"
    assert not (local_dir / "cluster").exists()
    assert not kubeconfig.exists()


def test_failed_build_names_the_module_and_command(tmp_path: Path) -> None:
    env = dict(os.environ, GPU_PROVISIONER_CACHE=str(tmp_path / "cache"), ETCD_VERSION="v3.6.999")
    proc = subprocess.run(
        [str(REPO / "hack" / "build-tools.sh"), "etcd"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "go.etcd.io/etcd/server/v3@v3.6.999" in proc.stderr
    assert "go get" in proc.stderr
    assert proc.stdout == ""
