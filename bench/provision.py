"""Provisioning benchmark: Kaito-shaped claims through the real controller, Azure SDK and API server.

Scenarios:
  overhead  N claims at once with a fixed fake pool-create latency: time from creation to Ready,
            the controller's own share of it, delete time, and ARM / Kubernetes calls per claim.
  storm     N claims while their VM family has no quota: ARM calls during the shortage (a doomed
            create must cost no PUT), then the quota is raised: time until every claim is Ready.

Parts: a local kube-apiserver + etcd (``hack/cluster.py``), the fake ARM server
(``python -m fakes.arm``, node simulator profile ``fast``) and ``gpu-provisioner controller --cloud
azure``, each a child process, all on 127.0.0.1. One JSON document goes to stdout and to
``bench/results/<name>-<timestamp>.json`` (or ``--out``); a summary goes to stderr. Every wait is
bounded; the exit code is non-zero when a claim does not get where it should.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes

from bench import claims as shapes
from bench.observe import (
    ArmCalls,
    ClaimTimeline,
    Timelines,
    Watcher,
    apiserver_writes,
    conditions,
    controller_metrics,
    diff,
    sum_matching,
)
from bench.stack import (
    LOCATION,
    REPO,
    BenchError,
    Cluster,
    ControllerProcess,
    FakeArmProcess,
    ProcessUsage,
)
from bench.stats import per, seconds, summary
from fakes import skus
from fakes.kaito import random_claim_name
from fakes.simulator import PROFILES

RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
#: Controller settings of the storm scenario unless overridden: capacity retries within seconds.
STORM_CONTROLLER_ENV = {"CAPACITY_RETRY_BASE_SECONDS": "5", "CAPACITY_RETRY_MAX_SECONDS": "20"}
MERGE_PATCH = "application/merge-patch+json"
SCENARIOS = ("overhead", "burst", "storm")
DEFAULT_CLAIMS, DEFAULT_BURST_CLAIMS = 10, 200
#: AKS's limit of agent pools per cluster (one is the system pool): the fake's default.
AKS_POOL_LIMIT = 100
CLAIM_RESOURCES = ("machines", "nodeclaims", "machines/status", "nodeclaims/status")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- options


@dataclass
class Options:
    scenario: str
    claims: int
    kinds: tuple[str, ...]
    instance_type: str
    create_latency: float
    delete_latency: float
    shortage: float
    timeout: float
    controller_env: dict[str, str]
    name: str
    out: Path | None
    kubeconfig: Path | None
    keep_workdir: bool


def _positive(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in shapes.KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"expected machine and/or nodeclaim, got {text!r}")
    return kinds


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bench.provision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Fields of the JSON result: bench/README.md.",
    )
    p.add_argument("--scenario", choices=SCENARIOS, default="overhead")
    p.add_argument(
        "--claims",
        type=_count,
        help=f"claims created at once (default {DEFAULT_CLAIMS}; burst {DEFAULT_BURST_CLAIMS})",
    )
    p.add_argument(
        "--kinds",
        type=_kinds,
        default=("machine", "nodeclaim"),
        help="claim kinds, alternated: machine,nodeclaim (default both)",
    )
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE, help="VM size every claim asks for")
    p.add_argument(
        "--create-latency",
        type=_positive,
        default=3.0,
        help="seconds the fake ARM takes to create a pool (default 3)",
    )
    p.add_argument(
        "--delete-latency",
        type=_positive,
        default=3.0,
        help="seconds the fake ARM takes to delete a pool (default 3)",
    )
    p.add_argument(
        "--shortage",
        type=_positive,
        default=30.0,
        help="storm: seconds the VM family has no quota, from the creates (default 30)",
    )
    p.add_argument(
        "--timeout",
        type=_positive,
        default=120.0,
        help="longest wait of each phase beyond the fake latencies (default 120)",
    )
    p.add_argument(
        "--controller-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra controller setting (repeatable); storm defaults: "
        + " ".join(f"{k}={v}" for k, v in STORM_CONTROLLER_ENV.items()),
    )
    p.add_argument("--name", help="result name (default: the scenario)")
    p.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/<name>-<time>.json")
    p.add_argument(
        "--kubeconfig",
        type=Path,
        help="use this running API server instead of starting one (claims are labelled per run)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and state even on success")
    a = p.parse_args(argv)
    if skus.get_sku(a.instance_type) is None:
        p.error(f"--instance-type {a.instance_type} is not in the fake's SKU catalog (fakes/skus.py)")
    env = dict(STORM_CONTROLLER_ENV) if a.scenario == "storm" else {}
    env.update(dict(a.controller_env))
    return Options(
        scenario=a.scenario,
        claims=a.claims or (DEFAULT_BURST_CLAIMS if a.scenario == "burst" else DEFAULT_CLAIMS),
        kinds=a.kinds,
        instance_type=a.instance_type,
        create_latency=a.create_latency,
        delete_latency=a.delete_latency,
        shortage=a.shortage,
        timeout=a.timeout,
        controller_env=env,
        name=a.name or a.scenario,
        out=a.out,
        kubeconfig=a.kubeconfig,
        keep_workdir=a.keep_workdir,
    )


# ------------------------------------------------------------------------------------- machine


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info(api_client: kubernetes.client.ApiClient | None) -> dict[str, Any]:
    kube_version = None
    if api_client is not None:
        try:
            kube_version = kubernetes.client.VersionApi(api_client).get_code(_request_timeout=10).git_version
        except Exception:
            kube_version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kube_apiserver": kube_version,
        # Other work on the machine skews every number; this is the 1/5/15-minute load at the end.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


# ------------------------------------------------------------------------------------- the run


@dataclass
class Phase:
    """One measured stretch: ARM log sequence numbers and API server write counters at its ends."""

    name: str
    start: float
    seq_start: int
    writes_start: dict[str, int]
    end: float = 0.0
    seq_end: int = 0
    writes: dict[str, int] = field(default_factory=dict)
    arm: ArmCalls = field(default_factory=lambda: ArmCalls([]))


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.sku = skus.get_sku(opts.instance_type)
        assert self.sku is not None
        self.workdir = Path(tempfile.mkdtemp(prefix="gpu-provisioner-bench-"))
        self.cluster: Cluster | None = None
        self.arm: FakeArmProcess | None = None
        self.controller: ControllerProcess | None = None
        self.api: kubernetes.client.ApiClient | None = None
        self.watchers: list[Watcher] = []
        self.timelines = Timelines(needs_gpu=self.sku.gpus > 0)
        self.phases: dict[str, Phase] = {}
        self.startup_calls = ArmCalls([])
        self.seq_mark = 0
        self.writes_mark: dict[str, int] = {}
        self.usage_start: ProcessUsage | None = None

    # -- setup / teardown -----------------------------------------------------------------------

    def arm_config(self) -> dict[str, Any]:
        assert self.sku is not None
        family_quota = 0 if self.opts.scenario == "storm" else self.sku.vcpus * self.opts.claims
        limit = {}
        if self.opts.claims >= AKS_POOL_LIMIT:  # one pool per claim, and the system pool
            limit = {"max_pools_per_cluster": self.opts.claims + 1}
            log(
                f"fake ARM: agent pool limit raised from AKS's {AKS_POOL_LIMIT} to {self.opts.claims + 1} "
                f"(one pool per claim); a real cluster stops at {AKS_POOL_LIMIT - 1} claims"
            )
        return {
            **limit,
            "latency": {
                "create": self.opts.create_latency,
                "update": 1.0,
                "delete": self.opts.delete_latency,
            },
            "quota": {
                LOCATION: {
                    self.sku.family: family_quota,
                    "cores": max(2000, self.sku.vcpus * self.opts.claims * 2),
                }
            },
        }

    def start(self) -> None:
        o = self.opts
        if o.kubeconfig is not None:
            log(f"using the API server of {o.kubeconfig}")
            self.cluster = Cluster.existing(o.kubeconfig)
        else:
            log("starting etcd and kube-apiserver on 127.0.0.1 ...")
            self.cluster = Cluster.start(self.workdir)
        self.api = _api_client(self.cluster.kubeconfig)
        log("starting the fake ARM server (node simulator profile fast) ...")
        self.arm = FakeArmProcess(self.workdir, self.cluster.kubeconfig, self.arm_config()).start()
        log("starting gpu-provisioner controller --cloud azure ...")
        self.controller = ControllerProcess(
            self.workdir, self.cluster.kubeconfig, {**self.arm.controller_env(), **o.controller_env}
        ).start()
        self._start_watchers()
        self.usage_start = self.controller.usage()
        records, self.seq_mark = self.arm.requests()
        self.startup_calls = ArmCalls(records)
        self.writes_mark = self._writes()

    def _start_watchers(self) -> None:
        assert self.cluster is not None and self.controller is not None
        selector = self.controller.selector
        for kind in shapes.KINDS.values():
            client = _api_client(self.cluster.kubeconfig)
            custom = kubernetes.client.CustomObjectsApi(client)
            self.watchers.append(
                Watcher(
                    kind.plural,
                    client,
                    custom.list_cluster_custom_object,
                    (kind.group, kind.version, kind.plural),
                    self.timelines.on_claim,
                    label_selector=f"{selector}=true",
                )
            )
        client = _api_client(self.cluster.kubeconfig)
        self.watchers.append(
            Watcher(
                "nodes", client, kubernetes.client.CoreV1Api(client).list_node, (), self.timelines.on_node
            )
        )
        for w in self.watchers:
            w.start()
        deadline = time.monotonic() + 30
        for w in self.watchers:
            if not w.connected.wait(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"{w.name} could not list (last error: {w.error})")
        time.sleep(0.5)  # let each watch stream open after its list

    def stop(self) -> None:
        for w in self.watchers:
            w.stop()
        if self.opts.kubeconfig is not None and self.api is not None:
            self._remove_leftovers()
        if self.controller is not None:
            self.controller.stop()
        if self.arm is not None:
            self.arm.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def _remove_leftovers(self) -> None:
        """On a shared API server: no claim or Node of this run may stay behind (finalizers too)."""
        assert self.api is not None
        custom = kubernetes.client.CustomObjectsApi(self.api)
        core = kubernetes.client.CoreV1Api(self.api)
        for tl in list(self.timelines.claims.values()):
            kind = shapes.KINDS[tl.kind]
            try:
                custom.patch_cluster_custom_object(
                    kind.group,
                    kind.version,
                    kind.plural,
                    tl.name,
                    {"metadata": {"finalizers": None}},
                    _content_type=MERGE_PATCH,
                )
                custom.delete_cluster_custom_object(kind.group, kind.version, kind.plural, tl.name)
            except kubernetes.client.ApiException:
                pass
            if tl.node_name:
                try:
                    core.patch_node(
                        tl.node_name, {"metadata": {"finalizers": None}}, _content_type=MERGE_PATCH
                    )
                    core.delete_node(tl.node_name)
                except kubernetes.client.ApiException:
                    pass

    # -- measuring ------------------------------------------------------------------------------

    def _writes(self) -> dict[str, int]:
        assert self.api is not None
        try:
            return dict(apiserver_writes(self.api))
        except Exception as e:  # optional numbers: never fail the run for them
            log(f"API server metrics unavailable: {e}")
            return {}

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Measure a stretch; phases are contiguous, so every request and write lands in one."""
        assert self.arm is not None
        ph = Phase(name, time.time(), self.seq_mark, self.writes_mark)
        yield ph
        ph.end = time.time()
        records, ph.seq_end = self.arm.requests(since=ph.seq_start)
        ph.arm = ArmCalls(records)
        after = self._writes()
        ph.writes = diff(Counter(after), Counter(ph.writes_start)) if after and ph.writes_start else {}
        self.phases[name] = ph
        self.seq_mark, self.writes_mark = ph.seq_end, after

    def alive(self) -> bool:
        return self.controller is not None and self.controller.alive()

    def create_claims(self) -> None:
        assert self.api is not None and self.controller is not None
        o = self.opts
        extra = {self.controller.selector: "true"}
        bodies = []
        for i in range(o.claims):
            kind = o.kinds[i % len(o.kinds)]
            name = random_claim_name()
            self.timelines.add(ClaimTimeline(name=name, kind=kind))
            bodies.append((kind, name, shapes.build(kind, name, o.instance_type, extra)))
        custom = kubernetes.client.CustomObjectsApi(self.api)

        def create(item: tuple[str, str, dict[str, Any]]) -> None:
            kind_name, name, body = item
            kind = shapes.KINDS[kind_name]
            tl = self.timelines.claims[name]
            tl.create_sent = time.time()
            custom.create_cluster_custom_object(
                kind.group, kind.version, kind.plural, body, _request_timeout=30
            )
            tl.created = time.time()

        _all_at_once(create, bodies)

    def delete_claims(self) -> None:
        assert self.api is not None
        custom = kubernetes.client.CustomObjectsApi(self.api)

        def delete(tl: ClaimTimeline) -> None:
            kind = shapes.KINDS[tl.kind]
            tl.delete_sent = time.time()
            custom.delete_cluster_custom_object(
                kind.group, kind.version, kind.plural, tl.name, _request_timeout=30
            )

        _all_at_once(delete, list(self.timelines.claims.values()))

    def wait_claims(self, what: str, done: Callable[[ClaimTimeline], bool], timeout: float) -> None:
        pending = self.timelines.wait(what, done, timeout, self.alive)
        if not self.alive():
            assert self.controller is not None
            raise BenchError(
                f"the controller exited (code {self.controller.proc and self.controller.proc.returncode}) "
                f"while waiting for {what}; log {self.controller.log_path}"
            )
        if pending:
            lines = "\n".join(f"  {tl.kind} {tl.name}: {tl.status_text()}" for tl in pending[:10])
            raise BenchError(
                f"{len(pending)} of {len(self.timelines.claims)} claims did not reach {what} "
                f"within {timeout:.0f}s:\n{lines}"
            )

    def wait_pools_gone(self, timeout: float) -> list[str]:
        assert self.arm is not None
        names = set(self.timelines.claims)
        deadline = time.monotonic() + timeout
        while True:
            left = sorted(p["name"] for p in self.arm.pools() if p["name"] in names)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    # -- scenarios ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = _utcnow()
        self.start()
        o = self.opts
        log(
            f"{o.scenario}: {o.claims} claims ({', '.join(o.kinds)}) of {o.instance_type}, "
            f"pool create {o.create_latency:g}s, delete {o.delete_latency:g}s"
        )
        results = self.storm() if o.scenario == "storm" else self.overhead()
        results["controller_process"] = self._process_numbers(o.claims)
        assert self.sku is not None
        timing = PROFILES["fast"]
        return {
            "benchmark": "provision",
            "scenario": o.scenario,
            "name": o.name,
            "started_at": started.isoformat(timespec="seconds"),
            "ok": True,
            "machine": machine_info(self.api),
            "parameters": {
                "claims": o.claims,
                "kinds": list(o.kinds),
                "instance_type": o.instance_type,
                "vm_family": self.sku.family,
                "vcpus_per_claim": self.sku.vcpus,
                "create_latency_s": o.create_latency,
                "delete_latency_s": o.delete_latency,
                "node_profile": "fast",
                "node_join_delay_s": timing.join,
                "node_ready_delay_s": timing.ready,
                "node_gpu_delay_s": timing.gpu,
                "shortage_s": o.shortage if o.scenario == "storm" else None,
                "timeout_s": o.timeout,
                "controller_env": o.controller_env,
                "external_cluster": o.kubeconfig is not None,
            },
            "results": results,
        }

    def _create_until_ready(self) -> Phase:
        o = self.opts
        with self.phase("create") as ph:
            self.create_claims()
            log(f"created {o.claims} claims; waiting for Ready ...")
            self.wait_claims("Ready", lambda tl: "Ready" in tl.milestones, o.create_latency + o.timeout)
            # The node of each claim is usable by now; its watch event may trail by milliseconds.
            self.timelines.wait("node usable", lambda tl: tl.node_usable is not None, 5, self.alive)
        return ph

    def _delete_until_gone(self) -> tuple[Phase, list[str]]:
        o = self.opts
        with self.phase("delete") as ph:
            self.delete_claims()
            log("deleted every claim; waiting until they are gone ...")
            self.wait_claims("deletion", lambda tl: tl.gone is not None, o.delete_latency + o.timeout)
            leaked = self.wait_pools_gone(o.delete_latency + 30)
            self.timelines.wait("node gone", lambda tl: tl.node_gone is not None, 30, self.alive)
        return ph, leaked

    def overhead(self) -> dict[str, Any]:
        o = self.opts
        create = self._create_until_ready()
        delete, leaked = self._delete_until_gone()
        rows = [self._claim_row(tl, create.arm, delete.arm) for tl in self.timelines.claims.values()]
        leaked_nodes = [tl.node_name for tl in self.timelines.claims.values() if tl.node_gone is None]
        if leaked or leaked_nodes:
            raise BenchError(f"left behind after deletion: pools {leaked}, nodes {leaked_nodes}")
        return {
            "time_to_ready_s": summary(r["time_to_ready_s"] for r in rows),
            "overhead_s": summary(r["overhead_s"] for r in rows),
            "launch_reaction_s": summary(r["launch_reaction_s"] for r in rows),
            "ready_reaction_s": summary(r["ready_reaction_s"] for r in rows),
            "node_delays_s": summary(r["node_delays_s"] for r in rows),
            "all_ready_s": seconds(
                max(tl.milestones["Ready"] for tl in self.timelines.claims.values()) - create.start
            ),
            "delete_s": summary(r["delete_s"] for r in rows),
            "delete_overhead_s": summary(r["delete_overhead_s"] for r in rows),
            "delete_reaction_s": summary(r["delete_reaction_s"] for r in rows),
            "delete_tail_s": summary(r["delete_tail_s"] for r in rows),
            "arm_calls": self._arm_economy([create, delete], o.claims),
            "kube_writes": self._kube_economy([create, delete], o.claims),
            "controller": self._controller_numbers(o.claims),
            "leaked_pools": len(leaked),
            "claims": rows,
        }

    def storm(self) -> dict[str, Any]:
        o = self.opts
        assert self.arm is not None and self.sku is not None
        with self.phase("shortage") as shortage:
            self.create_claims()
            log(
                f"created {o.claims} claims with {self.sku.family} quota 0; waiting for the shortage report ..."
            )
            self.wait_claims(
                "Launched=False (InsufficientCapacity)",
                lambda tl: (
                    "InsufficientCapacity" in str(conditions(tl.last).get("Launched", {}).get("reason", ""))
                ),
                o.timeout,
            )
            all_reported = time.time()
            remaining = shortage.start + o.shortage - time.time()
            if remaining > 0:
                log(f"every claim reports the shortage; holding the quota at 0 for {remaining:.0f}s more")
                time.sleep(remaining)
        raised = time.time()
        self.arm.set_quota({self.sku.family: self.sku.vcpus * o.claims})
        log(f"quota raised to {self.sku.vcpus * o.claims} vCPUs; waiting for Ready ...")
        with self.phase("recovery") as recovery:
            self.wait_claims("Ready", lambda tl: "Ready" in tl.milestones, o.create_latency + o.timeout)
        delete, leaked = self._delete_until_gone()
        if leaked:
            raise BenchError(f"pools left behind after deletion: {leaked}")
        window = shortage.end - shortage.start
        short = shortage.arm.by_kind()
        tls = list(self.timelines.claims.values())
        return {
            "shortage": {
                "duration_s": seconds(window),
                "all_reported_s": seconds(all_reported - shortage.start),
                "arm_calls": short,
                "pool_puts": short.get("pool_put", 0),
                "arm_calls_total": len(shortage.arm.records),
                "arm_calls_per_claim_per_minute": round(
                    len(shortage.arm.records) * 60 / (window * o.claims), 2
                )
                if window > 0
                else None,
            },
            "recovery": {
                "ready_after_raise_s": summary(
                    (tl.milestones["Ready"] - raised) if "Ready" in tl.milestones else None for tl in tls
                ),
                "all_ready_after_raise_s": seconds(max(tl.milestones["Ready"] for tl in tls) - raised),
                "arm_calls": recovery.arm.by_kind(),
            },
            "delete_s": summary(
                (tl.gone - tl.delete_sent) if tl.gone and tl.delete_sent else None for tl in tls
            ),
            "arm_calls": self._arm_economy([shortage, recovery, delete], o.claims),
            "kube_writes": self._kube_economy([shortage, recovery, delete], o.claims),
            "controller": self._controller_numbers(o.claims),
            "leaked_pools": len(leaked),
        }

    # -- results --------------------------------------------------------------------------------

    def _process_numbers(self, n: int) -> dict[str, Any]:
        """CPU and memory of the controller process: at rest after start-up, and for the workload."""
        assert self.controller is not None
        start, end = self.usage_start, self.controller.usage()
        if start is None or end is None:
            return {"available": False}
        workload = end.cpu_s - start.cpu_s
        return {
            "available": True,
            "startup_cpu_s": round(start.cpu_s, 2),
            "workload_cpu_s": round(workload, 2),
            "cpu_ms_per_claim": round(1000 * workload / n, 1) if n else None,
            "idle_rss_mib": round(start.rss_mib, 1),
            "peak_rss_mib": round(end.peak_rss_mib, 1),
            "end_rss_mib": round(end.rss_mib, 1),
        }

    def _controller_numbers(self, n: int) -> dict[str, Any]:
        """The controller's own counters over the whole run (startup included)."""
        assert self.controller is not None
        try:
            m = controller_metrics(f"http://127.0.0.1:{self.controller.metrics_port}/metrics")
        except (OSError, ValueError) as e:
            log(f"controller metrics unavailable: {e}")
            return {"available": False}
        total = sum(m["reconciles"].values())
        return {"available": True, "reconciles_per_claim": per(total, n), **m}

    def _claim_row(self, tl: ClaimTimeline, create: ArmCalls, delete: ArmCalls) -> dict[str, Any]:
        o = self.opts
        ready = tl.milestones.get("Ready")
        ttr = ready - tl.create_sent if ready and tl.create_sent else None
        put_at = create.first("pool_put", tl.name)
        pool_running = put_at + o.create_latency if put_at is not None else None
        node_delays = tl.node_usable - pool_running if tl.node_usable and pool_running else None
        launch_reaction = put_at - tl.create_sent if put_at and tl.create_sent else None
        ready_reaction = ready - tl.node_usable if ready and tl.node_usable else None
        overhead = (
            ttr - o.create_latency - node_delays if ttr is not None and node_delays is not None else None
        )
        delete_s = tl.gone - tl.delete_sent if tl.gone and tl.delete_sent else None
        delete_at = delete.first("pool_delete", tl.name)
        return {
            "name": tl.name,
            "kind": tl.kind,
            "time_to_ready_s": seconds(ttr),
            "time_to_ready_api_s": _api_time_to_ready(tl.last),
            "launch_reaction_s": seconds(launch_reaction),
            "node_delays_s": seconds(node_delays),
            "ready_reaction_s": seconds(ready_reaction),
            "overhead_s": seconds(overhead),
            "milestones_s": {
                k: seconds(v - tl.create_sent) for k, v in tl.milestones.items() if tl.create_sent
            },
            "delete_s": seconds(delete_s),
            "delete_overhead_s": seconds(delete_s - o.delete_latency if delete_s is not None else None),
            "delete_reaction_s": seconds(
                delete_at - tl.delete_sent if delete_at and tl.delete_sent else None
            ),
            "delete_tail_s": seconds(
                tl.gone - (delete_at + o.delete_latency) if tl.gone and delete_at else None
            ),
            "arm_requests": create.sequence(tl.name, tl.create_sent or 0.0)
            + delete.sequence(tl.name, tl.create_sent or 0.0),
            "arm": {
                "pool_put": create.per_pool("pool_put").get(tl.name, 0)
                + delete.per_pool("pool_put").get(tl.name, 0),
                "pool_get": create.per_pool("pool_get").get(tl.name, 0)
                + delete.per_pool("pool_get").get(tl.name, 0),
                "pool_delete": delete.per_pool("pool_delete").get(tl.name, 0)
                + create.per_pool("pool_delete").get(tl.name, 0),
            },
        }

    def _arm_economy(self, phases: list[Phase], n: int) -> dict[str, Any]:
        every = ArmCalls([r for ph in phases for r in ph.arm.records])
        kinds = every.by_kind()
        gets = sum(
            v
            for k, v in kinds.items()
            if k.endswith("_get") or k.endswith("_list") or k == "operation_status"
        )
        startup = self.startup_calls.by_kind()
        return {
            "startup": startup,
            "by_phase": {ph.name: ph.arm.by_kind() for ph in phases},
            "total": kinds,
            "errors_by_status": every.errors(),
            "per_claim": {
                "put": per(kinds.get("pool_put", 0), n),
                "delete": per(kinds.get("pool_delete", 0), n),
                "get": per(gets, n),
                "pool_get": per(kinds.get("pool_get", 0), n),
                "all_arm": per(
                    sum(v for k, v in kinds.items() if k not in ("token", "identity_discovery")), n
                ),
                "all": per(len(every.records), n),
            },
            "token_requests": startup.get("token", 0) + kinds.get("token", 0),
            "list_calls": {k: v for k, v in kinds.items() if k.endswith("_list")},
        }

    def _kube_economy(self, phases: list[Phase], n: int) -> dict[str, Any]:
        if not all(ph.writes or ph.writes_start for ph in phases):
            return {"available": False}
        total: dict[str, int] = {}
        for ph in phases:
            for k, v in ph.writes.items():
                total[k] = total.get(k, 0) + v
        claim_patches = sum_matching(total, ("PATCH", "PUT", "APPLY"), CLAIM_RESOURCES)
        events = sum_matching(total, ("POST", "PATCH", "PUT"), ("events",))
        return {
            "available": True,
            "note": "API server counters for the whole server: node writes include the node simulator's, "
            "and a shared --kubeconfig server counts other clients too",
            "by_phase": {ph.name: ph.writes for ph in phases},
            "per_claim": {
                "claim_updates": per(claim_patches, n),
                "event_writes": per(events, n),
                "node_writes": per(
                    sum_matching(total, ("PATCH", "PUT", "POST", "DELETE"), ("nodes", "nodes/status")), n
                ),
            },
            "lease_writes": sum_matching(total, ("PUT", "PATCH", "POST"), ("leases",)),
        }


# ------------------------------------------------------------------------------------- helpers


def _api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(cfg)


def _all_at_once(fn: Callable[[Any], None], items: Sequence[Any]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, min(len(items), 16))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            try:
                future.result(timeout=60)
            except kubernetes.client.ApiException as e:
                raise BenchError(f"API server refused a request: {e.status} {e.reason}: {e.body}") from e


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _api_time_to_ready(obj: dict[str, Any]) -> float | None:
    """Ready's lastTransitionTime minus creationTimestamp (whole seconds: the API's resolution)."""
    created = _parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    ready = conditions(obj).get("Ready", {})
    at = _parse_time(ready.get("lastTransitionTime")) if ready.get("status") == "True" else None
    return (at - created).total_seconds() if created and at else None


def human_summary(doc: dict[str, Any], path: Path | None) -> str:
    p, r = doc["parameters"], doc["results"]
    lines = [
        f"{doc['scenario']}: {p['claims']} claims ({', '.join(p['kinds'])}) of {p['instance_type']}, "
        f"pool create {p['create_latency_s']:g}s / delete {p['delete_latency_s']:g}s, node profile {p['node_profile']}"
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        if not s or not s.get("count"):
            return f"  {label:<22} n/a"
        return f"  {label:<22} p50 {s['p50']:.3f}s  p95 {s['p95']:.3f}s  p99 {s['p99']:.3f}s  max {s['max']:.3f}s"

    if doc["scenario"] != "storm":
        lines += [
            row("time to Ready", r["time_to_ready_s"]),
            row("overhead", r["overhead_s"]),
            row("  launch reaction", r["launch_reaction_s"]),
            row("  ready reaction", r["ready_reaction_s"]),
            row("node join..usable", r["node_delays_s"]),
            row("delete", r["delete_s"]),
            row("delete overhead", r["delete_overhead_s"]),
        ]
    else:
        s = r["shortage"]
        lines += [
            f"  shortage {s['duration_s']:.0f}s: {s['arm_calls_total']} ARM calls "
            f"({s['pool_puts']} PUTs; {s['arm_calls_per_claim_per_minute']} per claim per minute): {s['arm_calls']}",
            row("Ready after raise", r["recovery"]["ready_after_raise_s"]),
            row("delete", r["delete_s"]),
        ]
    pc = r["arm_calls"]["per_claim"]
    lines.append(
        f"  ARM calls per claim: {pc['put']} PUT, {pc['delete']} DELETE, {pc['get']} GET/list "
        f"({pc['pool_get']} pool GET), {pc['all']} in all; token requests {r['arm_calls']['token_requests']}, "
        f"lists {r['arm_calls']['list_calls']}"
    )
    kw = r["kube_writes"]
    if kw.get("available"):
        k = kw["per_claim"]
        lines.append(
            f"  API writes per claim: {k['claim_updates']} claim updates, {k['event_writes']} events, "
            f"{k['node_writes']} node writes (incl. simulator)"
        )
    ctl = r.get("controller") or {}
    if ctl.get("available"):
        means = ", ".join(f"{op} {c['mean_s']}s" for op, c in ctl["cloud_calls"].items())
        lines.append(
            f"  controller: {ctl['reconciles_per_claim']} reconciles per claim; mean cloud call {means}"
        )
    cp = r.get("controller_process") or {}
    if cp.get("available"):
        lines.append(
            f"  controller process: {cp['workload_cpu_s']}s CPU ({cp['cpu_ms_per_claim']} ms per claim), "
            f"RSS {cp['idle_rss_mib']} MiB at rest, peak {cp['peak_rss_mib']} MiB"
        )
    if path is not None:
        lines.append(f"  result: {path}")
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(opts)
    ok = False
    try:
        doc = bench.run()
        ok = True
    except BenchError as e:
        log(f"FAILED: {e}")
        if bench.controller is not None:
            log(f"controller log: {bench.controller.log_path}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.stop()
        if ok and not opts.keep_workdir:
            shutil.rmtree(bench.workdir, ignore_errors=True)
        else:
            log(f"logs and state kept in {bench.workdir}")
    text = json.dumps(doc, indent=2)
    path = opts.out or RESULTS_DIR / f"{opts.name}-{_utcnow().strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
    log("summary\n" + human_summary(doc, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
