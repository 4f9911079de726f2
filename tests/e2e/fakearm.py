"""The fake ARM server as a separate process (``python -m fakes.arm``), driven over its admin API.

The controller under test talks to it with ``--cloud azure`` through the real Azure SDK; its node
simulator registers Nodes in the test API server, as AKS would.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from fakes.arm import clientenv
from fakes.arm.config import DEFAULT_CLUSTER, DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from tests.e2e.harness import REPO, wait_for

SUBSCRIPTION = DEFAULT_SUBSCRIPTION
RESOURCE_GROUP = DEFAULT_RESOURCE_GROUP
CLUSTER = DEFAULT_CLUSTER
LOCATION = DEFAULT_LOCATION


class FakeArm:
    def __init__(self, workdir: Path, kubeconfig: Path, config: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.config = {"latency": {"create": 1.0, "update": 0.5, "delete": 1.0}, **(config or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.ca_bundle = ""
        self.authority = ""

    def start(self) -> FakeArm:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "arm-config.json"
        config_path.write_text(json.dumps(self.config))
        log = (self.workdir / "fake-arm.log").open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fakes.arm",
                "--port",
                "0",
                "--state-dir",
                str(self.workdir / "arm-state"),
                "--config",
                str(config_path),
                "--kubeconfig",
                str(self.kubeconfig),
            ],
            cwd=REPO,
            env={**os.environ, "FAKE_NODE_PROFILE": "fast"},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.proc.stdout is not None
        values: dict[str, str] = {}
        for line in self.proc.stdout:
            line = line.strip()
            if line == "READY":
                break
            key, _, value = line.partition("=")
            values[key] = value
        else:
            raise AssertionError(
                f"fake ARM exited before READY:\n{(self.workdir / 'fake-arm.log').read_text()}"
            )
        self.endpoint = values["ARM_ENDPOINT"]
        self.ca_bundle = values["ARM_CA_BUNDLE"]
        self.authority = values["AZURE_AUTHORITY_HOST"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def controller_env(self) -> dict[str, str]:
        """What ``--cloud azure`` needs to use this server (workload identity with a token file)."""
        return {
            **clientenv.controller_env(self.endpoint, self.ca_bundle, self.authority, self.workdir),
            # Short caches so tests see changes within seconds.
            "AZURE_LIST_CACHE_SECONDS": "0.5",
            "AZURE_USAGE_CACHE_SECONDS": "0.5",
            "AZURE_QUOTA_RECHECK_SECONDS": "0.5",
            "AZURE_UNAVAILABLE_SKU_SECONDS": "1",
        }

    # -- admin API -----------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
                text = resp.read().decode()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, json.loads(text) if text else None

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.call(method, f"/_fake/{path}", body)
        assert status < 300, (status, data)
        return data

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        query = "&".join(
            f"{k}={urllib.request.quote(v)}" for k, v in (("method", method), ("path", path)) if v
        )
        return list(self.admin("GET", f"requests?{query}")["requests"])

    def count(self, method: str, pool: str) -> int:
        """Requests of ``method`` on the agent pool itself (not its operation status)."""
        return len(self.requests(method, f"/agentPools/{pool}$"))

    def pools(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.admin("GET", "pools")["pools"]}

    def set_quota(self, family: str, limit: int) -> None:
        self.admin("POST", "quota", {"location": LOCATION, "limits": {family: limit}})

    def add_fault(self, spec: dict[str, Any]) -> str:
        """Add a fault rule; returns its id (for ``remove_fault``)."""
        return str(self.admin("POST", "faults", spec)["faults"][0]["id"])

    def fault(self, fault_id: str) -> dict[str, Any]:
        """A rule as the server reports it: its spec and ``matched``/``applied`` counts (and, for a
        ``corrupt`` rule, ``kinds_applied``)."""
        rules = {f["id"]: f for f in self.admin("GET", "faults")["faults"]}
        return dict(rules[fault_id])

    def remove_fault(self, fault_id: str, *, missing_ok: bool = False) -> None:
        status, data = self.call("DELETE", f"/_fake/faults/{fault_id}")
        assert status < 300 or (missing_ok and status == 404), (status, data)

    def set_latency(self, **latency: float) -> None:
        self.admin("POST", "settings", {"latency": latency})

    def pool_path(self, name: str) -> str:
        return (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
            f"Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools/{name}?api-version=2026-08-01"
        )

    def token(self) -> str:
        return str(self.admin("POST", "tokens", {})["access_token"])

    def put_pool(
        self,
        name: str,
        vm_size: str,
        tags: dict[str, str],
        *,
        node_labels: dict[str, str] | None = None,
        node_taints: list[str] | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "vmSize": vm_size,
            "count": 1,
            "mode": "User",
            "osType": "Linux",
            "tags": tags,
        }
        if node_labels:
            props["nodeLabels"] = node_labels
        if node_taints:
            props["nodeTaints"] = node_taints
        body = {"properties": props}
        status, data = self.call("PUT", self.pool_path(name), body, token=self.token())
        assert status in (200, 201), (status, data)

    def delete_pool(self, name: str) -> None:
        status, data = self.call("DELETE", self.pool_path(name), token=self.token())
        assert status in (200, 202, 204), (status, data)

    def wait_pool_gone(self, name: str, timeout: float = 60) -> None:
        wait_for(f"pool {name} gone", lambda: name not in self.pools(), timeout)


def our_tags(claim_name: str, claim_uid: str | None = None) -> dict[str, str]:
    return {
        "gpu-provisioner.sh_managed-by": "gpu-provisioner",
        "gpu-provisioner.sh_claim-name": claim_name,
        "gpu-provisioner.sh_claim-uid": claim_uid or str(uuid.uuid4()),
    }
