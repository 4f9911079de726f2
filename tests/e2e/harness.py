"""Run the controller as a separate process against the test API server, and observe the results.

Each controller started here only manages claims carrying its own selector label (a unique key
per controller), so tests and leftovers from other tests never interfere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hack.cluster import die_with_parent, free_port
from tests.conftest import Cluster

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]

#: Settings that make a controller fast enough for tests (seconds instead of minutes).
FAST_SETTINGS = {
    "LAUNCH_POLL_SECONDS": "0.5",
    "CAPACITY_RETRY_BASE_SECONDS": "1",
    "CAPACITY_RETRY_MAX_SECONDS": "4",
    "DRAIN_RETRY_SECONDS": "0.5",
    "MIN_DRAIN_SECONDS": "0.5",
    "DELETE_POLL_SECONDS": "0.5",
    "GC_INTERVAL_SECONDS": "1",
    "GC_ORPHAN_GRACE_SECONDS": "2",
    "LOG_LEVEL": "debug",
    "LEADER_ELECTION_LEASE_SECONDS": "4",
    "LEADER_ELECTION_RENEW_SECONDS": "3",
    "LEADER_ELECTION_RETRY_SECONDS": "0.5",
    "FAKE_CLOUD_CREATE_LATENCY_SECONDS": "0.5",
    "FAKE_CLOUD_DELETE_LATENCY_SECONDS": "0.5",
    "FAKE_NODE_PROFILE": "fast",
}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.3) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Controller:
    """``gpu-provisioner controller`` in a subprocess."""

    def __init__(
        self,
        cluster: Cluster,
        workdir: Path,
        *,
        cloud: str = "fake",
        env: Mapping[str, str] | None = None,
        run_id: str | None = None,
        kubeconfig: Path | None = None,
    ) -> None:
        """``run_id`` names the claim selector and Lease; pass another controller's to replace it."""
        self.cluster = cluster
        self.cloud = cloud
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        self.run_id = run_id = run_id or uuid.uuid4().hex[:8]
        self.selector = f"e2e.gpu-provisioner.sh/run-{run_id}"
        self.metrics_port, self.health_port = free_port(), free_port()
        self.log_path = workdir / f"controller-{run_id}-{uuid.uuid4().hex[:4]}.log"
        self.env = {
            **os.environ,
            **FAST_SETTINGS,
            "CLAIM_NODE_CLASS_KINDS": "",
            "LEADER_ELECTION_NAMESPACE": "default",
            "BIND_ADDRESS": "127.0.0.1",
            **(env or {}),
            # Always this controller's own, even when ``env`` is another controller's.
            "CLAIM_SELECTOR_LABELS": self.selector,
            "CONTROLLER_NAME": f"e2e-{run_id}",
            "LEADER_ELECTION_NAME": f"gpu-provisioner-{run_id}",
            "METRICS_PORT": str(self.metrics_port),
            "HEALTH_PORT": str(self.health_port),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, leader: bool = True) -> Controller:
        """Start; wait until it acts (``leader``) or until it waits as a standby."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "provisioner.cli",
                "controller",
                "--cloud",
                self.cloud,
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # never outlives the test run, whatever a teardown does
        )
        log.close()
        marker = "controller started" if leader else "waiting to become leader"
        wait_for("controller startup", lambda: marker in self.log() or self._exited(), 60)
        assert self.proc.poll() is None, f"controller exited early:\n{self.log()[-4000:]}"
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def get(self, path: str) -> tuple[int, str]:
        """GET an endpoint of the controller (``/metrics`` on its metrics port, else the health port)."""
        port = self.metrics_port if path.startswith("/metrics") else self.health_port
        return http_get(f"http://127.0.0.1:{port}{path}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def label(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Mark ``obj`` (a claim body) as managed by this controller."""
        obj.setdefault("metadata", {}).setdefault("labels", {})[self.selector] = "true"
        return obj


# -- reading the cluster ---------------------------------------------------------------------------


def get_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", *args, "-o", "json", check=False)
    if res.returncode != 0:
        if "NotFound" in res.stderr or "not found" in res.stderr:
            return None
        raise AssertionError(f"kubectl get {' '.join(args)} failed: {res.stderr}")
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def create(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj))


def conditions(obj: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not obj:
        return {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}


def condition_status(obj: Mapping[str, Any] | None, ctype: str) -> str | None:
    c = conditions(obj).get(ctype)
    return c["status"] if c else None


def ready(cluster: Cluster, kind: str, name: str) -> dict[str, Any] | None:
    """The claim when its Ready condition is True, else None (for ``wait_for``)."""
    obj = get_json(cluster, kind, name)
    return obj if condition_status(obj, "Ready") == "True" else None


def events_for(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    data = get_json(cluster, "events", "-n", "default", "--field-selector", f"involvedObject.name={name}")
    return list((data or {}).get("items") or [])


def event_reasons(cluster: Cluster, name: str) -> list[str]:
    return [e["reason"] for e in events_for(cluster, name)]


def nodes_of_pool(cluster: Cluster, pool: str) -> list[dict[str, Any]]:
    data = get_json(cluster, "nodes", "-l", f"kubernetes.azure.com/agentpool={pool}")
    return list((data or {}).get("items") or [])


def delete_and_wait(cluster: Cluster, kind: str, name: str, timeout: float = 60) -> None:
    cluster.kubectl("delete", kind, name, "--wait=false", "--ignore-not-found")
    wait_for(f"{kind} {name} to be gone", lambda: get_json(cluster, kind, name) is None, timeout)
