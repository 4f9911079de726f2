"""The parts a benchmark runs: local control plane, fake ARM server, controller — all on 127.0.0.1.

Each part is a child process that the benchmark stops itself (SIGTERM, then SIGKILL), and that the
kernel stops too if the benchmark dies without cleaning up (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fakes.arm import clientenv
from fakes.arm.config import DEFAULT_LOCATION
from hack import cluster as local_cluster
from hack.cluster import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[1]

LOCATION = DEFAULT_LOCATION


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what did not happen and where the logs are."""


def spawn(
    cmd: list[str], log_path: Path, env: Mapping[str, str], *, stdout_pipe: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session; stderr (and stdout unless piped) go to ``log_path``."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    finally:
        log.close()


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM ``proc``, SIGKILL it if it is still there after ``timeout``; always reaps it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------------------- cluster


@dataclass
class Cluster:
    """A kube-apiserver: one started here (``owned``) or an existing one reached by kubeconfig."""

    kubeconfig: Path
    kubectl: str
    state_dir: Path | None = None
    owned: bool = False

    @classmethod
    def start(cls, workdir: Path) -> Cluster:
        state_dir = workdir / "cluster"
        try:
            info = local_cluster.start(state_dir, workdir / "kubeconfig", detach=False)
        except local_cluster.ClusterError as e:
            raise BenchError(f"local control plane did not start: {e}") from e
        return cls(Path(info.kubeconfig), info.kubectl, state_dir, owned=True)

    @classmethod
    def existing(cls, kubeconfig: Path) -> Cluster:
        """Use a running API server (e.g. ``make cluster-up``'s); the CRDs are applied (idempotent)."""
        try:
            kube_bin = local_cluster.build_tools("kubernetes")["kubernetes"]
            kubectl = str(kube_bin / "kubectl")
            local_cluster.install_crds(kubectl, str(kubeconfig))
        except local_cluster.ClusterError as e:
            raise BenchError(f"cannot use the cluster of {kubeconfig}: {e}") from e
        return cls(kubeconfig, kubectl)

    def stop(self) -> None:
        if self.owned and self.state_dir is not None:
            local_cluster.stop(self.state_dir)


# ------------------------------------------------------------------------------------- fake ARM


@dataclass
class FakeArmProcess:
    """``python -m fakes.arm`` with its node simulator joining Nodes to ``kubeconfig``."""

    workdir: Path
    kubeconfig: Path
    config: dict[str, Any]
    node_profile: str = "fast"
    proc: subprocess.Popen[bytes] | None = None
    endpoint: str = ""
    ca_bundle: str = ""
    authority: str = ""
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @property
    def log_path(self) -> Path:
        return self.workdir / "fake-arm.log"

    def start(self, timeout: float = 60.0) -> FakeArmProcess:
        config_path = self.workdir / "fake-arm-config.json"
        config_path.write_text(json.dumps(self.config, indent=2))
        cmd = [
            sys.executable,
            "-m",
            "fakes.arm",
            "--port",
            "0",
            "--state-dir",
            str(self.workdir / "fake-arm-state"),
            "--config",
            str(config_path),
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        env = {**os.environ, "FAKE_NODE_PROFILE": self.node_profile}
        self.proc = spawn(cmd, self.log_path, env, stdout_pipe=True)
        assert self.proc.stdout is not None
        threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True).start()
        values: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"fake ARM not READY after {timeout:.0f}s; log {self.log_path}")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"fake ARM exited before READY:\n{tail(self.log_path)}")
            if line == "READY":
                break
            key, _, value = line.partition("=")
            values[key] = value
        try:
            self.endpoint = values["ARM_ENDPOINT"]
            self.ca_bundle = values["ARM_CA_BUNDLE"]
            self.authority = values["AZURE_AUTHORITY_HOST"]
        except KeyError as e:
            raise BenchError(f"fake ARM did not print {e.args[0]} before READY") from None
        return self

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._lines.put(raw.decode(errors="replace").strip())
        self._lines.put(None)

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def controller_env(self) -> dict[str, str]:
        """What ``--cloud azure`` needs to reach this server (workload identity with a token file)."""
        return clientenv.controller_env(self.endpoint, self.ca_bundle, self.authority, self.workdir)

    # -- admin API (/_fake/, never in the request log) ----------------------------------------

    def admin(self, method: str, path: str, body: Any = None, timeout: float = 15.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.endpoint}/_fake/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise BenchError(f"fake ARM admin {method} {path} failed: {e}") from e
        return json.loads(text) if text else None

    def requests(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Request log records after sequence number ``since``, and the last sequence number."""
        data = self.admin("GET", f"requests?{urllib.parse.urlencode({'since': since})}")
        return list(data["requests"]), int(data["last_seq"])

    def pools(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "pools")["pools"])

    def set_quota(self, limits: Mapping[str, int]) -> None:
        self.admin("POST", "quota", {"location": LOCATION, "limits": dict(limits)})


# ------------------------------------------------------------------------------------- controller


@dataclass
class ControllerProcess:
    """``gpu-provisioner controller --cloud azure`` managing only claims with ``selector`` label."""

    workdir: Path
    kubeconfig: Path
    env: dict[str, str]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    health_port: int = 0

    @property
    def selector(self) -> str:
        return f"bench.gpu-provisioner.sh/run-{self.run_id}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "controller.log"

    def start(self, timeout: float = 60.0) -> ControllerProcess:
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {
            **os.environ,
            **self.env,
            # Only this run's claims, whatever else the cluster holds.
            "CLAIM_SELECTOR_LABELS": self.selector,
            "CONTROLLER_NAME": f"bench-{self.run_id}",
            "CLAIM_NODE_CLASS_KINDS": "",
            "LEADER_ELECTION_NAMESPACE": "default",
            "LEADER_ELECTION_NAME": f"gpu-provisioner-bench-{self.run_id}",
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": str(self.metrics_port),
            "HEALTH_PORT": str(self.health_port),
        }
        cmd = [
            sys.executable,
            "-m",
            "provisioner.cli",
            "controller",
            "--cloud",
            "azure",
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        self.proc = spawn(cmd, self.log_path, env)
        deadline = time.monotonic() + timeout
        while "controller started" not in self.log():
            if self.proc.poll() is not None:
                raise BenchError(
                    f"controller exited with code {self.proc.returncode}:\n{tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"controller not started after {timeout:.0f}s; log {self.log_path}")
            time.sleep(0.1)
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        """Until ``/readyz`` answers 200 (credential works, agent pools can be listed)."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)
        raise BenchError(f"controller /readyz not OK in time (last: {last}); log {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def usage(self) -> ProcessUsage | None:
        """CPU time so far and peak RSS of the controller process (None once it is gone)."""
        return process_usage(self.proc.pid) if self.proc is not None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc, 20)


@dataclass(frozen=True)
class ProcessUsage:
    cpu_s: float  # user + system
    rss_mib: float
    peak_rss_mib: float


def process_usage(pid: int) -> ProcessUsage | None:
    """From /proc: user+system CPU seconds, current and peak resident set size."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    kib = {
        k: int(v.split()[0])
        for k, v in (ln.split(":", 1) for ln in status.splitlines() if ln.startswith("Vm"))
    }
    # Fields 14 and 15 of /proc/<pid>/stat (utime, stime); indices 11 and 12 after the ")".
    return ProcessUsage(
        cpu_s=(int(stat[11]) + int(stat[12])) / ticks,
        rss_mib=kib.get("VmRSS", 0) / 1024,
        peak_rss_mib=kib.get("VmHWM", 0) / 1024,
    )
