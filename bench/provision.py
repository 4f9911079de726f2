"""Provisioning benchmark: Kaito-shaped claims through the real controller, Azure SDK and API server.

Scenarios:
  overhead  N claims at once with a fixed fake pool-create latency: time from creation to Ready,
            the controller's own share of it, delete time, and ARM / Kubernetes calls per claim.
  burst     overhead at scale (200 claims by default).
  storm     N claims while their VM family has no quota: ARM calls during the shortage (a doomed
            create must cost no PUT), then the quota is raised: time until every claim is Ready.
  steady    claims arrive at --rate per second for --duration seconds, each deleted --lifetime
            seconds after it is Ready; then everything drains. The same spans as overhead.
  idle      K claims become Ready, then nothing changes for --duration seconds: ARM calls, API
            requests, CPU and memory of the controller at rest.

--pool-strategy dedicated|shared is handed to the controller (AZURE_POOL_STRATEGY). Every run
records the peak number of agent pools, checks that no claim is bound to two Nodes nor a Node to
two claims (a violation fails the run), and prints its targets as met / not met. A PNG of the
per-claim latency distributions is written next to the JSON (matplotlib; --no-plot skips it).

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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes

from bench import binding as bindings
from bench import claims as shapes
from bench import targets as goals
from bench.identity import ControllerIdentity, summarize_requests
from bench.observe import (
    IDENTITY_KINDS,
    POOL_LABEL,
    ArmCalls,
    ClaimTimeline,
    PoolSampler,
    Timelines,
    Watcher,
    apiserver_writes,
    conditions,
    controller_metrics,
    diff,
    sum_matching,
)
from bench.plot import write_plot
from bench.schedule import arrival_offsets, deletion_due, due_arrivals, peak_overlap
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
SCENARIOS = ("overhead", "burst", "storm", "steady", "idle")
DEFAULT_CLAIMS, DEFAULT_BURST_CLAIMS, DEFAULT_IDLE_CLAIMS = 10, 200, 20
#: --duration unless given: how long claims arrive (steady) or nothing happens (idle).
DEFAULT_DURATION = {"steady": 180.0, "idle": 120.0}
POOL_STRATEGIES = ("dedicated", "shared")
#: ARM request kinds that list the cluster's resources (not one claim's): left out of the per-claim
#: count at rest.
CLUSTER_LISTINGS = frozenset({"pool_list", "skus_list", "usages_list"})
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
    pool_strategy: str = "dedicated"
    rate: float = 1.0
    lifetime: float = 30.0
    duration: float = 0.0
    plot: bool = True

    @property
    def arrivals(self) -> list[float]:
        """steady: the seconds after the start at which each claim is created."""
        return arrival_offsets(self.rate, self.duration) if self.scenario == "steady" else []


def _positive(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
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
        help=f"claims created at once (default {DEFAULT_CLAIMS}; burst {DEFAULT_BURST_CLAIMS}; "
        f"idle {DEFAULT_IDLE_CLAIMS}); steady takes --rate and --duration instead",
    )
    p.add_argument(
        "--pool-strategy",
        choices=POOL_STRATEGIES,
        default="dedicated",
        help="the controller's AZURE_POOL_STRATEGY: one agent pool per claim, or pools per shape (default dedicated)",
    )
    p.add_argument("--rate", type=_rate, default=1.0, help="steady: claims created per second (default 1)")
    p.add_argument(
        "--lifetime",
        type=_positive,
        default=30.0,
        help="steady: seconds a claim lives after it is Ready, then it is deleted (default 30)",
    )
    p.add_argument(
        "--duration",
        type=_rate,
        help="steady: seconds claims arrive (default 180); idle: seconds nothing changes (default 120)",
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
    p.add_argument("--no-plot", action="store_true", help="write no PNG of the latency distributions")
    a = p.parse_args(argv)
    if skus.get_sku(a.instance_type) is None:
        p.error(f"--instance-type {a.instance_type} is not in the fake's SKU catalog (fakes/skus.py)")
    env = dict(STORM_CONTROLLER_ENV) if a.scenario == "storm" else {}
    env.update(dict(a.controller_env))
    if env.get("AZURE_POOL_STRATEGY", a.pool_strategy) != a.pool_strategy:
        p.error("set the pool strategy with --pool-strategy, not --controller-env AZURE_POOL_STRATEGY")
    env["AZURE_POOL_STRATEGY"] = a.pool_strategy
    if a.scenario == "steady" and a.claims is not None:
        p.error("steady creates --rate claims per second for --duration seconds; --claims does not apply")
    duration = a.duration if a.duration is not None else DEFAULT_DURATION.get(a.scenario, 0.0)
    claims = a.claims or {"burst": DEFAULT_BURST_CLAIMS, "idle": DEFAULT_IDLE_CLAIMS}.get(
        a.scenario, DEFAULT_CLAIMS
    )
    if a.scenario == "steady":
        try:
            claims = len(arrival_offsets(a.rate, duration))
        except ValueError as e:
            p.error(str(e))
    return Options(
        scenario=a.scenario,
        claims=claims,
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
        pool_strategy=a.pool_strategy,
        rate=a.rate,
        lifetime=a.lifetime,
        duration=duration,
        plot=not a.no_plot,
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
    """One measured stretch: ARM log sequence numbers, API server write counters, the controller's
    API requests and its CPU at its ends."""

    name: str
    start: float
    seq_start: int
    writes_start: dict[str, int]
    requests_start: dict[str, int] | None = None
    usage_start: ProcessUsage | None = None
    end: float = 0.0
    seq_end: int = 0
    writes: dict[str, int] = field(default_factory=dict)
    #: The controller's API requests in the phase (``"verb bucket"``); None: not counted.
    requests: dict[str, int] | None = None
    usage_end: ProcessUsage | None = None
    arm: ArmCalls = field(default_factory=lambda: ArmCalls([]))

    @property
    def cpu_s(self) -> float | None:
        """The controller's CPU seconds in the phase."""
        if self.usage_start is None or self.usage_end is None:
            return None
        return self.usage_end.cpu_s - self.usage_start.cpu_s


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
        self.identity: ControllerIdentity | None = None
        self.identity_error: str | None = None
        self.requests_mark: dict[str, int] | None = None
        self.startup_requests: dict[str, int] | None = None
        self._requests_baseline: dict[str, int] | None = None
        self.sampler: PoolSampler | None = None
        self.binding_checks: list[dict[str, Any]] = []
        self.run_start = 0.0

    @property
    def scale_latency(self) -> float:
        """How long the fake takes to bring a claim's VM up: a pool create (dedicated) or a count
        raise of a shared pool (its ``update`` latency, set to --create-latency for shared runs)."""
        return self.opts.create_latency

    @property
    def release_latency(self) -> float:
        """How long the fake takes to remove a claim's VM: a pool delete (dedicated) or a
        deleteMachines (the ``update`` latency: --create-latency under shared)."""
        return (
            self.opts.delete_latency if self.opts.pool_strategy == "dedicated" else self.opts.create_latency
        )

    # -- setup / teardown -----------------------------------------------------------------------

    def arm_config(self) -> dict[str, Any]:
        assert self.sku is not None
        o = self.opts
        family_quota = 0 if o.scenario == "storm" else self.sku.vcpus * o.claims
        limit = {}
        # Only dedicated pools need one pool per claim (and the system pool); shared pools stay
        # under AKS's limit, and the run shows it.
        if o.pool_strategy == "dedicated" and o.claims >= AKS_POOL_LIMIT:
            limit = {"max_pools_per_cluster": o.claims + 1}
            log(
                f"fake ARM: agent pool limit raised from AKS's {AKS_POOL_LIMIT} to {o.claims + 1} "
                f"(one pool per claim); a real cluster stops at {AKS_POOL_LIMIT - 1} claims"
            )
        return {
            **limit,
            "latency": {
                "create": o.create_latency,
                # A shared pool's count raise brings a VM up as a create does: the same latency,
                # so the spans mean the same under both strategies.
                "update": 1.0 if o.pool_strategy == "dedicated" else o.create_latency,
                "delete": o.delete_latency,
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
        controller = ControllerProcess(
            self.workdir, self.cluster.kubeconfig, {**self.arm.controller_env(), **o.controller_env}
        )
        controller_kubeconfig = self._start_identity(controller.run_id)
        log(f"starting gpu-provisioner controller --cloud azure (pool strategy {o.pool_strategy}) ...")
        controller.kubeconfig = controller_kubeconfig
        self.controller = controller.start()
        self._start_watchers()
        self.usage_start = self.controller.usage()
        records, self.seq_mark = self.arm.requests()
        self.startup_calls = ArmCalls(records)
        self.writes_mark = self._writes()
        self.requests_mark = self._requests()
        if self.requests_mark is not None and self._requests_baseline is not None:
            self.startup_requests = diff(Counter(self.requests_mark), Counter(self._requests_baseline))
        self.sampler = PoolSampler(self.arm.pools)
        self.sampler.start()

    def _start_identity(self, run_id: str) -> Path:
        """The controller's ServiceAccount and the FlowSchemas that count its requests; on any
        failure the controller uses the admin kubeconfig and its requests are not counted."""
        assert self.api is not None and self.cluster is not None
        identity = ControllerIdentity(self.api, self.cluster.kubeconfig, self.workdir, run_id)
        try:
            path = identity.start()
        except Exception as e:  # optional numbers: never fail the run for them
            identity.stop()
            self.identity_error = f"{type(e).__name__}: {e}"
            log(f"the controller's API requests will not be counted: {self.identity_error}")
            return self.cluster.kubeconfig
        self.identity = identity
        self._requests_baseline = self._requests()
        return path

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
        if self.sampler is not None:
            self.sampler.stop()
        for w in self.watchers:
            w.stop()
        if self.opts.kubeconfig is not None and self.api is not None:
            self._remove_leftovers()
        if self.controller is not None:
            self.controller.stop()
        if self.identity is not None:
            self.identity.stop()
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

    def _requests(self) -> dict[str, int] | None:
        """The controller's API requests so far (None: not counted)."""
        if self.identity is None:
            return None
        try:
            return self.identity.counts()
        except Exception as e:  # optional numbers: never fail the run for them
            log(f"API server metrics unavailable: {e}")
            return None

    @contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Measure a stretch; phases are contiguous, so every request and write lands in one."""
        assert self.arm is not None and self.controller is not None
        ph = Phase(
            name,
            time.time(),
            self.seq_mark,
            self.writes_mark,
            requests_start=self.requests_mark,
            usage_start=self.controller.usage(),
        )
        yield ph
        ph.end = time.time()
        ph.usage_end = self.controller.usage()
        records, ph.seq_end = self.arm.requests(since=ph.seq_start)
        ph.arm = ArmCalls(records)
        after = self._writes()
        ph.writes = diff(Counter(after), Counter(ph.writes_start)) if after and ph.writes_start else {}
        requests = self._requests()
        if requests is not None and ph.requests_start is not None:
            ph.requests = diff(Counter(requests), Counter(ph.requests_start))
        self.phases[name] = ph
        self.seq_mark, self.writes_mark, self.requests_mark = ph.seq_end, after, requests

    def alive(self) -> bool:
        return self.controller is not None and self.controller.alive()

    def new_claim(self, index: int) -> tuple[str, str, dict[str, Any]]:
        """Register claim number ``index`` (kinds alternate) and return (kind, name, body)."""
        assert self.controller is not None
        o = self.opts
        kind = o.kinds[index % len(o.kinds)]
        name = random_claim_name()
        while name in self.timelines.claims:
            name = random_claim_name()
        self.timelines.add(ClaimTimeline(name=name, kind=kind))
        return kind, name, shapes.build(kind, name, o.instance_type, {self.controller.selector: "true"})

    def send_create(self, item: tuple[str, str, dict[str, Any]]) -> None:
        assert self.api is not None
        kind_name, name, body = item
        kind = shapes.KINDS[kind_name]
        tl = self.timelines.claims[name]
        tl.create_sent = time.time()
        kubernetes.client.CustomObjectsApi(self.api).create_cluster_custom_object(
            kind.group, kind.version, kind.plural, body, _request_timeout=30
        )
        tl.created = time.time()

    def send_delete(self, tl: ClaimTimeline) -> None:
        assert self.api is not None
        kind = shapes.KINDS[tl.kind]
        tl.delete_sent = time.time()
        kubernetes.client.CustomObjectsApi(self.api).delete_cluster_custom_object(
            kind.group, kind.version, kind.plural, tl.name, _request_timeout=30
        )

    def create_claims(self) -> None:
        _all_at_once(self.send_create, [self.new_claim(i) for i in range(self.opts.claims)])

    def delete_claims(self) -> None:
        _all_at_once(self.send_delete, list(self.timelines.claims.values()))

    def check_binding(self, when: str) -> dict[str, Any]:
        """One listing of the run's claims and Nodes through :func:`bench.binding.check_binding`."""
        assert self.api is not None and self.controller is not None and self.arm is not None
        custom = kubernetes.client.CustomObjectsApi(self.api)
        claims: list[dict[str, Any]] = []
        for kind in shapes.KINDS.values():
            resp: Any = custom.list_cluster_custom_object(
                kind.group,
                kind.version,
                kind.plural,
                label_selector=f"{self.controller.selector}=true",
                _request_timeout=60,
                _preload_content=False,
            )
            claims.extend(json.loads(resp.data).get("items") or ())
        resp = kubernetes.client.CoreV1Api(self.api).list_node(_request_timeout=60, _preload_content=False)
        nodes: list[dict[str, Any]] = json.loads(resp.data).get("items") or []
        names = {(c.get("metadata") or {}).get("name") for c in claims} | set(self.timelines.claims)
        uids = {(c.get("metadata") or {}).get("uid") for c in claims}
        provider_ids = {(c.get("status") or {}).get("providerID") for c in claims} - {None, ""}
        baseline = self.sampler.baseline if self.sampler is not None else set()
        pools = {p["name"] for p in self.arm.pools()} - baseline

        def ours(node: dict[str, Any]) -> bool:
            meta = node.get("metadata") or {}
            pool = (meta.get("labels") or {}).get(POOL_LABEL)
            return (
                pool in names
                or pool in pools
                or (node.get("spec") or {}).get("providerID") in provider_ids
                or any(ref.get("uid") in uids for ref in meta.get("ownerReferences") or ())
            )

        result = bindings.check_binding(claims, [n for n in nodes if ours(n)])
        result = {"at": when, "at_s": seconds(time.time() - self.run_start), **result}
        self.binding_checks.append(result)
        if result["clean"]:
            log(
                f"binding check ({when}): {result['ready_claims']} Ready claims, {result['nodes']} Nodes, clean"
            )
        else:
            log(
                f"binding check ({when}): {len(result['violations'])} violations\n"
                + bindings.describe(result["violations"])
            )
        return result

    def sample_pools(self) -> None:
        if self.sampler is not None:
            self.sampler.sample()

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

    def leftover_pools(self) -> list[str]:
        """Dedicated: pools named like a claim of the run. Shared: pools of the run that still hold
        VMs (an empty shared pool may be kept for the next claim)."""
        assert self.arm is not None
        names = set(self.timelines.claims)
        baseline = self.sampler.baseline if self.sampler is not None else set()
        left = []
        for p in self.arm.pools():
            if self.opts.pool_strategy == "dedicated":
                if p["name"] in names:
                    left.append(p["name"])
            elif p["name"] not in baseline and int((p.get("properties") or {}).get("count") or 0) > 0:
                left.append(p["name"])
        return sorted(left)

    def wait_pools_gone(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftover_pools()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    # -- scenarios ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = _utcnow()
        self.run_start = time.time()
        self.start()
        o = self.opts
        if o.scenario == "steady":
            log(
                f"steady: {o.rate:g} claims/s for {o.duration:g}s ({o.claims} claims, {', '.join(o.kinds)}) "
                f"of {o.instance_type}, each deleted {o.lifetime:g}s after Ready; pool create "
                f"{o.create_latency:g}s, delete {o.delete_latency:g}s"
            )
        else:
            log(
                f"{o.scenario}: {o.claims} claims ({', '.join(o.kinds)}) of {o.instance_type}, "
                f"pool create {o.create_latency:g}s, delete {o.delete_latency:g}s"
            )
        scenario: Callable[[], dict[str, Any]] = {
            "storm": self.storm,
            "steady": self.steady,
            "idle": self.idle,
        }.get(o.scenario, self.overhead)
        results = scenario()
        if "controller_process" not in results:
            results["controller_process"] = self._process_numbers(o.claims)
        results["pools"] = self.sampler.peak if self.sampler is not None else None
        results["pools_created"] = len(
            set().union(*(ph.arm.pools_created() for ph in self.phases.values())) if self.phases else set()
        )
        results["binding"] = self._binding_numbers()
        assert self.sku is not None
        timing = PROFILES["fast"]
        violations = results["binding"]["violations"]
        return {
            "benchmark": "provision",
            "scenario": o.scenario,
            "name": o.name,
            "started_at": started.isoformat(timespec="seconds"),
            "ok": not violations,
            "failures": [f"binding check: {len(violations)} violations"] if violations else [],
            "machine": machine_info(self.api),
            "parameters": {
                "claims": o.claims,
                "kinds": list(o.kinds),
                "instance_type": o.instance_type,
                "vm_family": self.sku.family,
                "vcpus_per_claim": self.sku.vcpus,
                "pool_strategy": o.pool_strategy,
                "create_latency_s": o.create_latency,
                "delete_latency_s": o.delete_latency,
                "update_latency_s": 1.0 if o.pool_strategy == "dedicated" else o.create_latency,
                "node_profile": "fast",
                "node_join_delay_s": timing.join,
                "node_ready_delay_s": timing.ready,
                "node_gpu_delay_s": timing.gpu,
                "shortage_s": o.shortage if o.scenario == "storm" else None,
                "rate_per_s": o.rate if o.scenario == "steady" else None,
                "lifetime_s": o.lifetime if o.scenario == "steady" else None,
                "duration_s": o.duration if o.scenario in DEFAULT_DURATION else None,
                "timeout_s": o.timeout,
                "controller_env": o.controller_env,
                "controller_user": self.identity.user if self.identity is not None else None,
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
            self.timelines.wait(
                "node usable", lambda tl: self.timelines.node_time(tl, "usable") is not None, 5, self.alive
            )
            self.sample_pools()
        return ph

    def _delete_until_gone(self) -> tuple[Phase, list[str]]:
        o = self.opts
        with self.phase("delete") as ph:
            self.delete_claims()
            log("deleted every claim; waiting until they are gone ...")
            self.wait_claims("deletion", lambda tl: tl.gone is not None, o.delete_latency + o.timeout)
            leaked = self.wait_pools_gone(o.delete_latency + 30)
            self.timelines.wait(
                "node gone", lambda tl: self.timelines.node_time(tl, "gone") is not None, 30, self.alive
            )
        return ph, leaked

    def _leftovers_fail(self, leaked: list[str]) -> None:
        leaked_nodes = [
            tl.node_name
            for tl in self.timelines.claims.values()
            if tl.node_name and self.timelines.node_time(tl, "gone") is None
        ]
        if leaked or leaked_nodes:
            raise BenchError(f"left behind after deletion: pools {leaked}, nodes {leaked_nodes}")

    def _span_summaries(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        keys = (
            "time_to_ready_s",
            "overhead_s",
            "launch_reaction_s",
            "ready_reaction_s",
            "node_delays_s",
            "delete_s",
            "delete_overhead_s",
            "delete_reaction_s",
            "delete_tail_s",
        )
        return {k: summary(r[k] for r in rows) for k in keys}

    def overhead(self) -> dict[str, Any]:
        o = self.opts
        create = self._create_until_ready()
        self.check_binding("all Ready")
        delete, leaked = self._delete_until_gone()
        calls = ArmCalls(create.arm.records + delete.arm.records)
        rows = [self._claim_row(tl, calls) for tl in self.timelines.claims.values()]
        self._leftovers_fail(leaked)
        return {
            **self._span_summaries(rows),
            "all_ready_s": seconds(
                max(tl.milestones["Ready"] for tl in self.timelines.claims.values()) - create.start
            ),
            "arm_calls": self._arm_economy([create, delete], o.claims),
            "kube_writes": self._kube_economy([create, delete], o.claims),
            "kube_requests": self._kube_requests([create, delete], o.claims),
            "controller": self._controller_numbers(o.claims),
            "leaked_pools": len(leaked),
            "claims": rows,
        }

    def steady(self) -> dict[str, Any]:
        """Claims arrive at --rate for --duration, each deleted --lifetime after Ready; then drain."""
        o = self.opts
        offsets = o.arrivals
        ready_within = o.create_latency + o.timeout
        gone_within = self.release_latency + o.timeout
        t0 = time.time()
        # Every claim is created by t0 + duration; its last step can end no later than this.
        end_by = t0 + o.duration + ready_within + o.lifetime + gone_within + 30
        # Steps of the loop: one every 0.05 to 0.2 s (woken by watch events, never more often).
        min_step = 0.05
        max_steps = int((end_by - t0) / min_step) + 100
        created = 0
        deleting: set[str] = set()
        futures: list[Future[None]] = []
        failures: list[str] = []

        def step(until: float, stop_when_drained: bool) -> bool:
            """Send what is due, check the bounds; True when the loop may end."""
            nonlocal created
            now = time.time()
            for i in due_arrivals(offsets, created, now - t0):
                futures.append(pool.submit(self.send_create, self.new_claim(i)))
                created += 1
            for tl in list(self.timelines.claims.values()):
                if tl.name not in deleting and deletion_due(tl.milestones.get("Ready"), o.lifetime, now):
                    deleting.add(tl.name)
                    futures.append(pool.submit(self.send_delete, tl))
                elif tl.create_sent and "Ready" not in tl.milestones and now - tl.create_sent > ready_within:
                    failures.append(
                        f"{tl.kind} {tl.name} not Ready within {ready_within:.0f}s: {tl.status_text()}"
                    )
                elif tl.delete_sent and tl.gone is None and now - tl.delete_sent > gone_within:
                    failures.append(
                        f"{tl.kind} {tl.name} not gone within {gone_within:.0f}s: {tl.status_text()}"
                    )
            for f in [f for f in futures if f.done()]:
                futures.remove(f)
                if (e := f.exception()) is not None:
                    raise BenchError(f"API server refused a request: {e}")
            if failures:
                raise BenchError(f"{len(failures)} claims missed a bound:\n" + "\n".join(failures[:10]))
            if not self.alive():
                raise BenchError(f"the controller exited; log {self.controller and self.controller.log_path}")
            if stop_when_drained:
                return created == len(offsets) and all(tl.gone for tl in self.timelines.claims.values())
            return now >= until

        steps = 0

        def pause() -> None:
            nonlocal steps
            steps += 1
            if steps > max_steps:
                raise BenchError(f"the steady loop ran more than its bound of {max_steps} steps")
            began = time.monotonic()
            with self.timelines.changed:
                self.timelines.changed.wait(0.2)
            time.sleep(max(0.0, min_step - (time.monotonic() - began)))

        with ThreadPoolExecutor(max_workers=8) as pool:
            with self.phase("arrivals") as arrivals:
                log(f"claims arrive for {o.duration:g}s ...")
                while not step(t0 + o.duration, False):
                    pause()
                self.sample_pools()
            self.check_binding("end of arrivals")
            with self.phase("drain") as drain:
                log(f"arrivals over ({created} claims); draining ...")
                while not step(end_by, True):
                    if time.time() > end_by:
                        pending = [tl.name for tl in self.timelines.claims.values() if not tl.gone]
                        raise BenchError(
                            f"{len(pending)} claims not gone by the end of the drain: {pending[:10]}"
                        )
                    pause()
                leaked = self.wait_pools_gone(self.release_latency + 30)
                self.timelines.wait(
                    "node gone", lambda tl: self.timelines.node_time(tl, "gone") is not None, 30, self.alive
                )
        calls = ArmCalls(arrivals.arm.records + drain.arm.records)
        tls = list(self.timelines.claims.values())
        rows = [
            {**self._claim_row(tl, calls), "created_s": seconds((tl.create_sent or t0) - t0)} for tl in tls
        ]
        self._leftovers_fail(leaked)
        sent = sorted(tl.create_sent for tl in tls if tl.create_sent)
        end = time.time()
        return {
            **self._span_summaries(rows),
            "counts": {
                "created": len(tls),
                "ready": sum(1 for tl in tls if "Ready" in tl.milestones),
                "deleted": sum(1 for tl in tls if tl.delete_sent),
                "gone": sum(1 for tl in tls if tl.gone),
                "peak_claims": peak_overlap(((tl.create_sent, tl.gone) for tl in tls), end),
                "peak_ready": peak_overlap(((tl.milestones.get("Ready"), tl.delete_sent) for tl in tls), end),
                "arrival_rate_per_s": round((len(sent) - 1) / (sent[-1] - sent[0]), 3)
                if len(sent) > 1 and sent[-1] > sent[0]
                else None,
                "arrivals_s": seconds(arrivals.end - arrivals.start),
                "drain_s": seconds(drain.end - drain.start),
            },
            "arm_calls": self._arm_economy([arrivals, drain], o.claims),
            "kube_writes": self._kube_economy([arrivals, drain], o.claims),
            "kube_requests": self._kube_requests([arrivals, drain], o.claims),
            "controller": self._controller_numbers(o.claims),
            "leaked_pools": len(leaked),
            "claims": rows,
        }

    def idle(self) -> dict[str, Any]:
        """K claims Ready, then --duration seconds of nothing: what the controller costs at rest."""
        o = self.opts
        assert self.controller is not None
        create = self._create_until_ready()
        self.check_binding("all Ready")
        log(f"{o.claims} claims Ready; idle for {o.duration:g}s ...")
        with self.phase("idle") as idle:
            deadline = time.monotonic() + o.duration
            while (left := deadline - time.monotonic()) > 0:
                if not self.alive():
                    raise BenchError(f"the controller exited while idle; log {self.controller.log_path}")
                time.sleep(min(left, 1.0))
            rss_end = self.controller.usage()
        self.check_binding("end of idle")
        delete, leaked = self._delete_until_gone()
        calls = ArmCalls(create.arm.records + idle.arm.records + delete.arm.records)
        rows = [self._claim_row(tl, calls) for tl in self.timelines.claims.values()]
        self._leftovers_fail(leaked)
        window = idle.end - idle.start
        hours = window / 3600
        kinds = idle.arm.by_kind()
        arm = {k: v for k, v in kinds.items() if k not in IDENTITY_KINDS}
        total = sum(arm.values())
        per_claim = sum(v for k, v in arm.items() if k not in CLUSTER_LISTINGS)

        def per_hour(value: float, claims: int = 1) -> float | None:
            return round(value / hours / claims, 2) if hours > 0 and claims > 0 else None

        requests = summarize_requests(idle.requests, o.claims) if idle.requests is not None else None
        cpu = idle.cpu_s
        at_rest = {
            "duration_s": seconds(window),
            "arm_calls": kinds,
            "arm_calls_total": total,
            "arm_calls_at_rest_per_hour": per_hour(total),
            "arm_calls_at_rest_per_claim_per_hour": per_hour(total, o.claims),
            "arm_calls_at_rest_per_claim_per_hour_excluding_lists": per_hour(per_claim, o.claims),
            "by_kind_per_hour": {k: per_hour(v) for k, v in kinds.items()},
            "arm_by_verb": idle.arm.by_verb(),
            "token_requests": kinds.get("token", 0),
            "kube_requests": {"available": False, "reason": self.identity_error}
            if requests is None
            else {
                "available": True,
                **requests,
                "reads_per_hour": per_hour(requests["reads"]),
                "writes_per_hour": per_hour(requests["writes"]),
            },
            "controller_writes": requests["writes"] if requests is not None else None,
            "kube_writes": idle.writes,
            "controller_cpu_s": round(cpu, 3) if cpu is not None else None,
            "controller_cpu_s_per_hour": per_hour(cpu) if cpu is not None else None,
            "rss_mib_start": round(idle.usage_start.rss_mib, 1) if idle.usage_start else None,
            "rss_mib_end": round(rss_end.rss_mib, 1) if rss_end else None,
            "peak_rss_mib": round(rss_end.peak_rss_mib, 1) if rss_end else None,
        }
        return {
            **self._span_summaries(rows),
            "idle": at_rest,
            "arm_calls": self._arm_economy([create, idle, delete], o.claims),
            "kube_writes": self._kube_economy([create, idle, delete], o.claims),
            "kube_requests": self._kube_requests([create, idle, delete], o.claims),
            "controller": self._controller_numbers(o.claims),
            # The lifecycle's CPU: the idle window is reported apart (idle.controller_cpu_s).
            "controller_process": self._process_numbers(o.claims, exclude_cpu_s=cpu or 0.0),
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
            self.sample_pools()
        self.check_binding("all Ready")
        delete, leaked = self._delete_until_gone()
        if leaked:
            raise BenchError(f"pools left behind after deletion: {leaked}")
        window = shortage.end - shortage.start
        short = shortage.arm.by_kind()
        tls = list(self.timelines.claims.values())
        rows: list[dict[str, Any]] = [
            {
                "name": tl.name,
                "kind": tl.kind,
                "time_to_ready_s": seconds(
                    tl.milestones["Ready"] - tl.create_sent
                    if "Ready" in tl.milestones and tl.create_sent
                    else None
                ),
                "ready_after_raise_s": seconds(
                    tl.milestones["Ready"] - raised if "Ready" in tl.milestones else None
                ),
                "delete_s": seconds(tl.gone - tl.delete_sent if tl.gone and tl.delete_sent else None),
            }
            for tl in tls
        ]
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
                "ready_after_raise_s": summary(r["ready_after_raise_s"] for r in rows),
                "all_ready_after_raise_s": seconds(max(tl.milestones["Ready"] for tl in tls) - raised),
                "arm_calls": recovery.arm.by_kind(),
            },
            "ready_after_raise_s": summary(r["ready_after_raise_s"] for r in rows),
            "time_to_ready_s": summary(r["time_to_ready_s"] for r in rows),
            "delete_s": summary(r["delete_s"] for r in rows),
            "arm_calls": self._arm_economy([shortage, recovery, delete], o.claims),
            "kube_writes": self._kube_economy([shortage, recovery, delete], o.claims),
            "kube_requests": self._kube_requests([shortage, recovery, delete], o.claims),
            "controller": self._controller_numbers(o.claims),
            "leaked_pools": len(leaked),
            "claims": rows,
        }

    # -- results --------------------------------------------------------------------------------

    def _process_numbers(self, n: int, exclude_cpu_s: float = 0.0) -> dict[str, Any]:
        """CPU and memory of the controller process: at rest after start-up, and for the workload
        (less ``exclude_cpu_s``, the idle scenario's window, in ``cpu_ms_per_claim``)."""
        assert self.controller is not None
        start, end = self.usage_start, self.controller.usage()
        if start is None or end is None:
            return {"available": False}
        workload = end.cpu_s - start.cpu_s
        return {
            "available": True,
            "startup_cpu_s": round(start.cpu_s, 2),
            "workload_cpu_s": round(workload, 2),
            "cpu_ms_per_claim": round(1000 * (workload - exclude_cpu_s) / n, 1) if n else None,
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

    def _binding_numbers(self) -> dict[str, Any]:
        violations = [{"at": c["at"], **v} for c in self.binding_checks for v in c["violations"]]
        return {
            "checks": [{k: v for k, v in c.items() if k != "violations"} for c in self.binding_checks],
            "violations": violations,
            "clean": not violations,
        }

    def _claim_row(self, tl: ClaimTimeline, calls: ArmCalls) -> dict[str, Any]:
        """One claim's spans. ``calls``: the ARM requests of the phases the claim lived in.

        The claim's pool is the agent pool of its Node (dedicated: named like the claim). A shared
        pool serves many claims, so its first PUT (create or count raise) and its first
        deleteMachines after the claim's create or delete stand for the claim's own.
        """
        node = self.timelines.node(tl)
        pool = node.pool if node is not None and node.pool else tl.name
        usable = node.usable if node is not None else None
        ready = tl.milestones.get("Ready")
        ttr = ready - tl.create_sent if ready and tl.create_sent else None
        put_at = calls.first_after(("pool_put",), pool, tl.create_sent) if tl.create_sent else None
        pool_running = put_at + self.scale_latency if put_at is not None else None
        node_delays = usable - pool_running if usable and pool_running else None
        launch_reaction = put_at - tl.create_sent if put_at and tl.create_sent else None
        ready_reaction = ready - usable if ready and usable else None
        overhead = (
            ttr - self.scale_latency - node_delays if ttr is not None and node_delays is not None else None
        )
        delete_s = tl.gone - tl.delete_sent if tl.gone and tl.delete_sent else None
        delete_at = (
            calls.first_after(("pool_delete", "pool_delete_machines"), pool, tl.delete_sent)
            if tl.delete_sent
            else None
        )
        own_pool = pool == tl.name
        return {
            "name": tl.name,
            "kind": tl.kind,
            "pool": pool,
            "node": tl.node_name,
            "time_to_ready_s": seconds(ttr),
            "time_to_ready_api_s": _api_time_to_ready(tl.last),
            "launch_reaction_s": seconds(launch_reaction),
            "node_delays_s": seconds(node_delays),
            "ready_reaction_s": seconds(ready_reaction),
            "overhead_s": seconds(overhead),
            "milestones_s": {
                k: seconds(v - tl.create_sent) for k, v in tl.milestones.items() if tl.create_sent
            },
            "node_milestones_s": {
                step: seconds(at - tl.create_sent)
                for step in ("seen", "ready", "usable", "gone")
                if tl.create_sent and (at := self.timelines.node_time(tl, step)) is not None
            },
            "delete_s": seconds(delete_s),
            "delete_overhead_s": seconds(delete_s - self.release_latency if delete_s is not None else None),
            "delete_reaction_s": seconds(
                delete_at - tl.delete_sent if delete_at and tl.delete_sent else None
            ),
            "delete_tail_s": seconds(
                tl.gone - (delete_at + self.release_latency) if tl.gone and delete_at else None
            ),
            # A shared pool's requests serve every claim on it: listed and counted per pool only
            # when the pool is the claim's own.
            "arm_requests": calls.sequence(pool, tl.create_sent or 0.0) if own_pool else None,
            "arm": {
                kind: calls.per_pool(kind).get(pool, 0)
                for kind in ("pool_put", "pool_get", "pool_delete", "pool_delete_machines")
            }
            if own_pool
            else None,
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
        arm_kinds = {k: v for k, v in kinds.items() if k not in IDENTITY_KINDS}
        return {
            "startup": startup,
            "by_phase": {ph.name: ph.arm.by_kind() for ph in phases},
            "total": kinds,
            "by_verb": every.by_verb(),
            "errors_by_status": every.errors(),
            "per_claim": {
                "put": per(kinds.get("pool_put", 0), n),
                "delete": per(kinds.get("pool_delete", 0), n),
                "delete_machines": per(kinds.get("pool_delete_machines", 0), n),
                "get": per(gets, n),
                "pool_get": per(kinds.get("pool_get", 0), n),
                "all_arm": per(sum(arm_kinds.values()), n),
                "all": per(len(every.records), n),
                "by_verb": {verb: per(count, n) for verb, count in every.by_verb().items()},
                "by_kind": {kind: per(count, n) for kind, count in arm_kinds.items()},
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

    def _kube_requests(self, phases: list[Phase], n: int) -> dict[str, Any]:
        """The controller's own API requests, reads and writes (its ServiceAccount's FlowSchemas)."""
        if self.identity is None or any(ph.requests is None for ph in phases):
            return {"available": False, "reason": self.identity_error or "API server metrics unavailable"}
        total: Counter[str] = Counter()
        for ph in phases:
            total.update(ph.requests or {})
        return {
            "available": True,
            "user": self.identity.user,
            "startup": self.startup_requests,
            **summarize_requests(total, n),
            "by_phase": {ph.name: dict(sorted((ph.requests or {}).items())) for ph in phases},
            "counts": dict(sorted(total.items())),
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


def human_summary(doc: dict[str, Any], path: Path | None, plot: Path | None = None) -> str:
    p, r = doc["parameters"], doc["results"]
    head = f"{doc['scenario']}: {p['claims']} claims ({', '.join(p['kinds'])}) of {p['instance_type']}"
    if doc["scenario"] == "steady":
        head += f" ({p['rate_per_s']:g}/s for {p['duration_s']:g}s, lifetime {p['lifetime_s']:g}s)"
    lines = [
        f"{head}, pool strategy {p.get('pool_strategy', 'dedicated')}, pool create {p['create_latency_s']:g}s / "
        f"delete {p['delete_latency_s']:g}s, node profile {p['node_profile']}"
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
    if doc["scenario"] == "steady":
        c = r["counts"]
        lines.append(
            f"  claims: {c['created']} created ({c['arrival_rate_per_s']}/s), at most {c['peak_claims']} at once "
            f"({c['peak_ready']} Ready); arrivals {c['arrivals_s']}s, drain {c['drain_s']}s"
        )
    if doc["scenario"] == "idle":
        i = r["idle"]
        kr = i["kube_requests"]
        api = (
            f"{kr['reads']} API reads and {kr['writes']} writes by the controller ({kr['by_verb']})"
            if kr.get("available")
            else "API requests by the controller not counted"
        )
        lines += [
            f"  idle {i['duration_s']:.0f}s: {i['arm_calls_total']} ARM calls {i['arm_calls']} = "
            f"{i['arm_calls_at_rest_per_hour']}/h, {i['arm_calls_at_rest_per_claim_per_hour']} per claim per hour "
            f"({i['arm_calls_at_rest_per_claim_per_hour_excluding_lists']} without the listings)",
            f"  idle: {api}; controller CPU {i['controller_cpu_s']}s, RSS {i['rss_mib_start']} -> {i['rss_mib_end']} MiB",
        ]
    pc = r["arm_calls"]["per_claim"]
    lines.append(
        f"  ARM calls per claim: {pc['put']} PUT, {pc['delete']} DELETE, {pc['get']} GET/list "
        f"({pc['pool_get']} pool GET), {pc['all']} in all; by verb {pc['by_verb']}; token requests "
        f"{r['arm_calls']['token_requests']}, lists {r['arm_calls']['list_calls']}"
    )
    kw = r["kube_writes"]
    if kw.get("available"):
        k = kw["per_claim"]
        lines.append(
            f"  API writes per claim: {k['claim_updates']} claim updates, {k['event_writes']} events, "
            f"{k['node_writes']} node writes (incl. simulator)"
        )
    kr = r.get("kube_requests") or {}
    if kr.get("available"):
        k = kr["per_claim"]
        lines.append(
            f"  API requests by the controller per claim: {k['reads']} reads ({k['get']} get, {k['list']} list, "
            f"{k['watch']} watch), {k['writes']} writes ({k['claim_writes']} claim PATCH/PUT)"
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
    b = r.get("binding") or {}
    lines.append(
        f"  agent pools: at most {r.get('pools')} at once, {r.get('pools_created')} created; binding check "
        + ("clean" if b.get("clean") else f"{len(b.get('violations') or ())} violations")
        + f" ({len(b.get('checks') or ())} checks)"
    )
    if path is not None:
        lines.append(f"  result: {path}")
    if plot is not None:
        lines.append(f"  plot: {plot}")
    targets = r.get("targets")
    if targets:
        met = sum(1 for t in targets if t["met"])
        lines.append(f"targets ({met} of {len(targets)} met; not a gate):")
        lines += goals.lines(targets)
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
        if ok and doc["ok"] and not opts.keep_workdir:
            shutil.rmtree(bench.workdir, ignore_errors=True)
        else:
            log(f"logs and state kept in {bench.workdir}")
    doc["results"]["targets"] = goals.evaluate(doc)
    text = json.dumps(doc, indent=2)
    path = opts.out or RESULTS_DIR / f"{opts.name}-{_utcnow().strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(text)
    plot = None
    if opts.plot:
        try:
            plot = write_plot(doc, path.with_suffix(".png"))
        except Exception as e:  # a plot is a convenience: the JSON is the result
            log(f"plot failed: {type(e).__name__}: {e}")
        else:
            if plot is None:
                log("plot skipped: matplotlib not installed")
    log("summary\n" + human_summary(doc, path, plot))
    if not doc["ok"]:
        violations = doc["results"]["binding"]["violations"]
        log(f"FAILED: the binding check found {len(violations)} violations:\n{bindings.describe(violations)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
