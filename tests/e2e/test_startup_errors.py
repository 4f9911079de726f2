"""Start-up failures a user can act on: the real CLI in a subprocess, exit status 2, a line per
problem naming the setting and the fix, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
AZURE = ("ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "LOCATION")


def _start(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in AZURE and not k.startswith(("AZURE_", "ARM_"))}
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "controller", *args],
        cwd=REPO,
        env={**clean, "LEADER_ELECT": "false", "METRICS_PORT": "0", "HEALTH_PORT": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _refused(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines of a start that was refused as it should be."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gpu-provisioner: ")]
    assert lines, proc.stderr
    return lines


def test_a_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    (line,) = _refused(_start("--cloud", "fake", "--kubeconfig", str(missing)))
    assert str(missing) in line and "--kubeconfig" in line


def test_an_unreachable_api_server_fails_the_start_after_a_bounded_wait(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    started = time.monotonic()
    proc = _start("--cloud", "fake", "--kubeconfig", str(kubeconfig), env={"API_SERVER_WAIT_SECONDS": "2"})
    assert time.monotonic() - started < 30
    (line,) = _refused(proc)
    assert f"https://127.0.0.1:{port}" in line and "API_SERVER_WAIT_SECONDS" in line


def test_a_busy_port_names_the_setting(cluster: Cluster) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _start(
            "--cloud",
            "fake",
            "--kubeconfig",
            str(cluster.kubeconfig),
            env={"METRICS_PORT": str(port), "BIND_ADDRESS": "127.0.0.1"},
        )
    (line,) = _refused(proc)
    assert f"127.0.0.1:{port}" in line and "METRICS_PORT" in line


def test_every_missing_azure_setting_is_named_at_once(cluster: Cluster) -> None:
    lines = _refused(_start("--cloud", "azure", "--kubeconfig", str(cluster.kubeconfig)))
    for setting in AZURE:
        assert sum(setting in line for line in lines) == 1, (setting, lines)
