"""``make demo``: gpu-provisioner end to end on this machine, with no cloud account.

It starts (or reuses) the local control plane, the fake Azure Resource Manager server (whose node
simulator plays AKS and the kubelet) and the controller with ``--cloud azure`` pointed at it, so the
real Azure SDK code path runs. Then it plays Kaito: a workspace asks for GPU nodes through a Machine
(Kaito v0.1-v0.4) and a NodeClaim (Kaito v0.7+), the demo shows them becoming Ready, shows what
``kubectl`` and "Azure" see, deletes them and shows the agent pools and nodes gone.

Scenarios (``--scenario``):
  happy     both claims become Ready, then are deleted (default)
  capacity  the A100 quota family is at 0 vCPUs: the NodeClaim waits with Kaito's "all requested
            instance types were unavailable during launch" until the quota is raised
  crash     the controller is SIGKILLed while the pools are being created; a new controller adopts
            them (still exactly one PUT per pool)
  nodepool  Kaito's karpenter mode: Kaito's node classes, a workspace NodePool of 2 replicas raised
            to 3, a node class change that drifts every NodeClaim (replaced one at a time within
            the NodePool's budget), then the NodePool deleted with everything it made

With a terminal the demo offers to keep everything running for exploration; without one (CI, pipes)
it runs through, stops every process it started and exits 0, or non-zero on any failure or timeout.
``--keep`` leaves everything running (in the background without a terminal; ``--down`` stops it).

Node timing can be changed through the simulator's environment (``FAKE_NODE_JOIN_DELAY_SECONDS``,
``FAKE_NODE_READY_DELAY_SECONDS``, ``FAKE_NODE_GPU_DELAY_SECONDS``, ``FAKE_NODE_PROFILE``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from fakes.arm import clientenv
from fakes.arm.config import DEFAULT_CLUSTER, DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from fakes.kaito import (
    KAITO_CHART_NODE_CLASSES,
    LABEL_NODEPOOL,
    kaito_machine,
    kaito_node_class,
    kaito_nodeclaim,
    kaito_nodepool,
    random_claim_name,
)
from hack import cluster
from hack.cluster import alive, die_with_parent, free_port, stop_pid

REPO = cluster.REPO_ROOT

# The fake subscription and cluster (the fake ARM server's defaults).
SUBSCRIPTION, RESOURCE_GROUP, AKS_CLUSTER, LOCATION = (
    DEFAULT_SUBSCRIPTION,
    DEFAULT_RESOURCE_GROUP,
    DEFAULT_CLUSTER,
    DEFAULT_LOCATION,
)

GPU = "nvidia.com/gpu"
POOL_LABEL = "kubernetes.azure.com/agentpool"
A100 = "Standard_NC24ads_A100_v4"
A100_FAMILY = "standardNCADSA100v4Family"
V100 = "Standard_NC12s_v3"
A100_QUOTA_RAISED = 96
KAITO_CAPACITY_TEXT = "all requested instance types were unavailable during launch"
LEASE_SECONDS = 4

POLL = 0.5
READY_TIMEOUT = 120.0
GONE_TIMEOUT = 90.0
START_TIMEOUT = 60.0
DRIFT_TIMEOUT = 300.0  # three replacements, one after the other

SCENARIOS = ("happy", "capacity", "crash", "nodepool")
PHASES = {"happy": 7, "capacity": 8, "crash": 8, "nodepool": 10}

# The nodepool scenario: Kaito v0.12's karpenter mode.
NODEPOOL_WORKSPACE = "phi-4"
NODEPOOL_REPLICAS, NODEPOOL_RAISED = 2, 3
DRIFT_NODE_CLASS, DRIFT_FAMILY = "image-family-ubuntu", "AzureLinux"
#: Room for 3 A100 nodes (24 vCPUs each), a replacement, and an old pool still deleting.
NODEPOOL_A100_QUOTA = 5 * 24
ANNOTATION_REPLACES = "gpu-provisioner.sh/replaces"
TAG_CLAIM = "gpu-provisioner.sh_claim-name"
NODE_CLASS_API = ("kaito.sh", "v1alpha1", "kaitonodeclasses")
NODEPOOL_API = ("karpenter.sh", "v1", "nodepools")


class DemoError(RuntimeError):
    """Something did not happen as the demo expects; the message says what."""


# --------------------------------------------------------------------------------------------- output


class Out:
    """Terminal output: colours and in-place redraws only when stdout is a terminal."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.color = self.tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"

    def style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def header(self, text: str) -> None:
        self.line()
        self.line(self.style(text, "1;36"))

    def info(self, text: str) -> None:
        self.line(f"    {text}")

    def ok(self, text: str) -> None:
        self.line(f"    {self.style('ok', '32')}  {text}")

    def warn(self, text: str) -> None:
        self.line(f"    {self.style('!!', '33')}  {text}")

    def dim(self, text: str) -> None:
        self.line(self.style(text, "2"))

    def bold(self, text: str) -> str:
        return self.style(text, "1")

    def cmd(self, text: str) -> None:
        self.line(f"    {self.style('$', '2')} {self.style(text, '1')}")

    def block(self, text: str, indent: int = 6) -> None:
        for ln in text.rstrip("\n").splitlines() or ["(no output)"]:
            self.line(" " * indent + ln)

    def width(self) -> int:
        return shutil.get_terminal_size((140, 40)).columns


def rel(path: str | Path) -> str:
    """``path`` relative to the working directory when it is inside it (shorter to read and paste)."""
    p = Path(path)
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(Path.cwd()))
    return str(p)


#: Condition type per column, per kind (Machines use Karpenter v1alpha5's names).
CONDITIONS = {
    "machine": ("MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"),
    "nodeclaim": ("Launched", "Registered", "Initialized", "Ready"),
}
API = {"machine": ("karpenter.sh", "v1alpha5", "machines"), "nodeclaim": ("karpenter.sh", "v1", "nodeclaims")}


@dataclass
class Claim:
    kind: str  # "machine" | "nodeclaim"
    name: str
    workspace: str
    instance_type: str
    origin: str  # which Kaito release creates this shape
    manifest: Path | None = None
    created_at: float = 0.0
    time_to_ready: float | None = None
    pool_seen: bool = False
    node_seen: bool = False
    #: Replaced by the NodePool (drift): no longer shown in the live table.
    retired: bool = False
    #: The agent pool's name when it is not the claim's (a NodePool's NodeClaims: a hash of theirs).
    pool_name: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def pool(self) -> str:
        return self.pool_name or self.name

    def body(self) -> dict[str, Any]:
        build = kaito_machine if self.kind == "machine" else kaito_nodeclaim
        return build(self.name, workspace=self.workspace, instance_type=self.instance_type)


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not obj:
        return {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or ()}


def node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or ()
    )


def node_gpus(node: dict[str, Any]) -> str:
    return str(((node.get("status") or {}).get("capacity") or {}).get(GPU, ""))


# --------------------------------------------------------------------------------------------- fake ARM


class FakeArmClient:
    """The fake ARM server's admin API (``/_fake/``), as far as the demo needs it."""

    def __init__(self, endpoint: str, ca_bundle: str) -> None:
        self.endpoint = endpoint
        self.ca_bundle = ca_bundle
        self._ctx = ssl.create_default_context(cafile=ca_bundle)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.endpoint}/_fake/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=10) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise DemoError(f"fake ARM admin call {method} /_fake/{path} failed: {e}") from e
        return json.loads(text) if text else None

    def pools(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.admin("GET", "pools")["pools"]}

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in (("method", method), ("path", path)) if v})
        return list(self.admin("GET", f"requests?{query}")["requests"])

    def count(self, method: str, pool: str) -> int:
        """Requests of ``method`` on the agent pool itself (not on its operations)."""
        return len(self.requests(method, f"/agentPools/{pool}$"))

    def set_quota(self, family: str, vcpus: int) -> None:
        self.admin("POST", "quota", {"location": LOCATION, "limits": {family: vcpus}})


def summarize_requests(records: list[dict[str, Any]]) -> str:
    """One line such as ``2 PUT, 2 DELETE, 31 GET (12 operation polls, ...), 1 token request``."""
    plural = {
        "operation poll": "operation polls",
        "pool read": "pool reads",
        "pool list": "pool lists",
        "quota read": "quota reads",
        "SKU listing": "SKU listings",
        "cluster read": "cluster reads",
        "other": "other",
    }
    methods: Counter[str] = Counter()
    gets: Counter[str] = Counter()
    tokens = 0
    for r in records:
        path = r["path"]
        if "/oauth2/" in path:
            tokens += 1
            continue
        methods[r["method"]] += 1
        if r["method"] != "GET":
            continue
        if "/operations/" in path or "/operationresults/" in path:
            gets["operation poll"] += 1
        elif re.search(r"/agentPools/[^/]+$", path):
            gets["pool read"] += 1
        elif path.endswith("/agentPools"):
            gets["pool list"] += 1
        elif path.endswith("/usages"):
            gets["quota read"] += 1
        elif path.endswith("/skus"):
            gets["SKU listing"] += 1
        elif "/managedClusters/" in path:
            gets["cluster read"] += 1
        else:
            gets["other"] += 1
    parts = [f"{methods.pop(m, 0)} {m}" for m in ("PUT", "DELETE")]
    n_get = methods.pop("GET", 0)
    detail = ", ".join(f"{n} {what if n == 1 else plural[what]}" for what, n in gets.most_common())
    parts.append(f"{n_get} GET" + (f" ({detail})" if detail else ""))
    parts += [f"{n} {m}" for m, n in sorted(methods.items())]
    if tokens:
        parts.append(f"{tokens} token request{'s' if tokens != 1 else ''}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------- live table


COLUMNS = (
    ("CLAIM", 40),
    ("ELAPSED", 8),
    ("POOL (ARM)", 11),
    ("LAUNCHED", 9),
    ("REGISTERED", 11),
    ("INITIALIZED", 12),
    ("READY", 8),
    ("NODE", 9),
    ("GPU", 3),
)


def format_row(cells: Sequence[str]) -> str:
    parts = [cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True)]
    return "  ".join(parts).rstrip()


class LiveTable:
    """Claims and their conditions, like ``kubectl get -w``.

    On a terminal the table is redrawn in place with a status line under it. Otherwise each row is
    printed again only when it changed (elapsed time aside), so logs of CI runs stay short.
    """

    def __init__(self, out: Out) -> None:
        self.out = out
        self.drawn = 0
        self.last: dict[str, tuple[str, ...]] = {}
        self.header_done = False

    def update(self, rows: list[tuple[str, ...]], status: str) -> None:
        if self.out.tty:
            self._redraw(rows, status)
            return
        if not self.header_done:
            self.out.line("    " + format_row([c for c, _ in COLUMNS]))
            self.header_done = True
        for row in rows:
            key = (row[0], *row[2:])
            if self.last.get(row[0]) != key:
                self.last[row[0]] = key
                self.out.line("    " + format_row(row))

    def _redraw(self, rows: list[tuple[str, ...]], status: str | None) -> None:
        width = self.out.width() - 1
        lines = ["    " + format_row([c for c, _ in COLUMNS])] + ["    " + format_row(r) for r in rows]
        lines = [ln[:width] for ln in lines]
        if status is not None:
            lines.append(self.out.style(f"    {status}"[:width], "2"))
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.drawn = len(lines)

    def note(self, text: str) -> None:
        """A line above the table (on a terminal the table is drawn again under it)."""
        if self.out.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        self.out.info(text)

    def finish(self, rows: list[tuple[str, ...]]) -> None:
        """The final state, without the status line."""
        if self.out.tty:
            self._redraw(rows, None)
        else:
            self.update(rows, "")


# --------------------------------------------------------------------------------------------- demo


@dataclass
class World:
    """One observation of the claims, the agent pools at "Azure" and the nodes of those pools."""

    claims: dict[str, dict[str, Any] | None]
    pools: dict[str, dict[str, Any]]
    nodes: dict[str, dict[str, Any]]  # pool name -> Node

    def claim(self, c: Claim) -> dict[str, Any] | None:
        return self.claims.get(c.name)

    def status(self, c: Claim, column: int) -> str | None:
        cond = conditions(self.claim(c)).get(CONDITIONS[c.kind][column])
        return cond["status"] if cond else None

    def ready(self, c: Claim) -> bool:
        return self.status(c, 3) == "True"

    def gone(self, c: Claim) -> bool:
        return self.claim(c) is None and c.pool not in self.pools and c.pool not in self.nodes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # on purpose (the crash scenario)


@dataclass
class Demo:
    args: argparse.Namespace
    out: Out = field(default_factory=Out)
    state_dir: Path = field(init=False)
    local_dir: Path = field(init=False)
    interactive: bool = field(init=False)
    detach: bool = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    own_cluster: bool = False
    info: cluster.ClusterInfo | None = None
    arm: FakeArmClient | None = None
    arm_env: dict[str, str] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    #: The nodepool scenario's NodePool: its NodeClaims join ``claims`` as they appear.
    nodepool: str | None = None
    #: Node classes the demo created, and the spec of those that were there before it.
    node_classes: list[str] = field(default_factory=list)
    node_class_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Manifests of what the demo created (the hints of ``--keep``).
    written: list[Path] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)
    phase_no: int = 0
    controllers: int = 0
    detached: bool = False
    _api: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        self.local_dir = Path(self.args.local_dir).resolve()
        self.state_dir = Path(self.args.state_dir or self.local_dir / "demo").resolve()
        ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        self.interactive = sys.stdin.isatty() and not ci
        # Kept without a terminal: the processes must outlive this one.
        self.detach = bool(self.args.keep) and not self.interactive

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> str:
        assert self.info is not None
        return self.info.kubeconfig

    def kubectl(self, *args: str, show: bool = True, input: str | None = None) -> str:
        """Run the pinned kubectl; with ``show``, print the command and its output like a terminal."""
        assert self.info is not None
        res = cluster.kubectl(self.info.kubectl, self.kubeconfig, *args, input=input)
        if show:
            self.out.cmd("kubectl " + shlex.join(args))
            self.out.block(res.stdout or res.stderr)
        if res.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    @contextlib.contextmanager
    def phase(self, title: str, short: str) -> Iterator[None]:
        self.phase_no += 1
        self.out.header(f"==> {self.phase_no}/{PHASES[self.args.scenario]} {title}")
        started = time.monotonic()
        yield
        took = time.monotonic() - started
        self.timings.append((short, took))
        if short != "summary":
            self.out.dim(f"    ({took:.1f}s)")

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:  # one run per log
            popen = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops them in order
                preexec_fn=None if self.detach else die_with_parent,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        self.save_state()
        return proc

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None and not p.killed:
                raise DemoError(f"{p.name} (pid {p.popen.pid}) exited with code {p.popen.returncode}")

    def save_state(self) -> None:
        """``demo.json``: what is running, for ``--down`` and for a later demo to clean up."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "pids": [p.popen.pid for p in self.procs if p.popen.poll() is None],
            "cluster_state_dir": str(self.state_dir / "cluster") if self.own_cluster else None,
            "kubeconfig": self.info.kubeconfig if self.info else None,
        }
        (self.state_dir / "demo.json").write_text(json.dumps(data, indent=2))

    def api(self) -> tuple[Any, Any]:
        """(CustomObjectsApi, CoreV1Api) of the kubernetes client (untyped, hence Any)."""
        if self._api is None:
            import kubernetes  # imported late: it takes a moment and --down does not need it

            k8s: Any = kubernetes
            client = k8s.config.new_client_from_config(config_file=self.kubeconfig)
            self._api = (k8s.client.CustomObjectsApi(client), k8s.client.CoreV1Api(client))
        return self._api

    def observe(self) -> World:
        co, core = self.api()
        if self.nodepool:
            self.discover_nodeclaims()
        claims: dict[str, dict[str, Any] | None] = {c.name: None for c in self.claims}
        for kind in {c.kind for c in self.claims}:
            group, version, plural = API[kind]
            for obj in co.list_cluster_custom_object(group, version, plural)["items"]:
                if obj["metadata"]["name"] in claims:
                    claims[obj["metadata"]["name"]] = obj
        assert self.arm is not None
        pools = self.arm.pools()
        if self.nodepool:
            by_claim = {(p["properties"].get("tags") or {}).get(TAG_CLAIM): n for n, p in pools.items()}
            for c in self.claims:
                if not c.pool_name and c.name in by_claim:
                    c.pool_name = by_claim[c.name]
        names = ",".join(c.pool for c in self.claims)
        resp = core.list_node(label_selector=f"{POOL_LABEL} in ({names})", _preload_content=False)
        nodes = {n["metadata"]["labels"][POOL_LABEL]: n for n in json.loads(resp.data)["items"]}
        return World(claims, pools, nodes)

    def discover_nodeclaims(self) -> None:
        """The NodePool's NodeClaims not seen before join ``claims`` (the controller makes them)."""
        co, _ = self.api()
        group, version, plural = API["nodeclaim"]
        items = co.list_cluster_custom_object(
            group, version, plural, label_selector=f"{LABEL_NODEPOOL}={self.nodepool}"
        )["items"]
        known = {c.name for c in self.claims}
        now = time.monotonic()
        for obj in sorted(items, key=lambda o: o["metadata"].get("creationTimestamp", "")):
            name = obj["metadata"]["name"]
            if name in known:
                continue
            instance_type = next(
                (
                    r["values"][0]
                    for r in obj["spec"].get("requirements") or ()
                    if r.get("key") == "node.kubernetes.io/instance-type" and r.get("values")
                ),
                "?",
            )
            self.claims.append(
                Claim("nodeclaim", name, NODEPOOL_WORKSPACE, instance_type, f"NodePool {self.nodepool}")
            )
            self.claims[-1].created_at = now

    def row(self, c: Claim, w: World, elapsed: float) -> tuple[str, ...]:
        obj = w.claim(c)
        label = c.ref
        if obj is None and c.created_at:
            label += " (gone)"
        elif obj and obj["metadata"].get("deletionTimestamp"):
            label += " (deleting)"
        elif conditions(obj).get("Drifted", {}).get("status") == "True":
            label += " (drifted)"
        pool = w.pools.get(c.pool)
        if pool is not None:
            c.pool_seen = True
            pool_state = str(pool["properties"].get("provisioningState", "?"))
        else:
            pool_state = "gone" if c.pool_seen else "-"
        conds = [w.status(c, i) or "-" for i in range(4)]
        node = w.nodes.get(c.pool)
        node_col = gpus = "-"
        if node is not None:
            c.node_seen = True
            node_col = "Ready" if node_ready(node) else "NotReady"
            gpus = node_gpus(node) or "-"
        elif c.node_seen:
            node_col = "gone"
        return (label, f"{elapsed:.1f}s", pool_state, *conds, node_col, gpus)

    def watch(
        self,
        until: str,
        done: Callable[[World], bool],
        timeout: float,
        since: float,
        notes: Callable[[World], list[str]] | None = None,
    ) -> World:
        """Show the live table until ``done`` holds; fail after ``timeout`` seconds. ``notes`` says
        what happened since the last look, printed above the table."""
        table = LiveTable(self.out)
        deadline = time.monotonic() + timeout
        spinner = "|/-\\"
        tick = 0
        while True:
            world = self.observe()
            now = time.monotonic()
            for c in self.claims:
                if c.time_to_ready is None and c.created_at and world.ready(c):
                    c.time_to_ready = now - c.created_at
            for text in notes(world) if notes else ():
                table.note(text)
            rows = [self.row(c, world, now - since) for c in self.claims if not c.retired]
            if done(world):
                table.finish(rows)
                return world
            if now > deadline:
                table.finish(rows)
                raise DemoError(f"timed out after {timeout:.0f}s waiting until {until}")
            self.check_alive()
            tick += 1
            table.update(
                rows,
                f"{spinner[tick % 4]} waiting until {until} ({now - since:.0f}s, gives up after {timeout:.0f}s)",
            )
            time.sleep(POLL)

    # -- phases ---------------------------------------------------------------------------------

    def start_cluster(self) -> None:
        shared = self.local_dir / "cluster"
        info = None if self.args.own_cluster else cluster.running(shared)
        if info is not None:
            self.out.info(f"reusing the control plane of `make cluster-up` at {info.server}")
            cluster.install_crds(info.kubectl, info.kubeconfig)
        else:
            self.out.info("etcd + kube-apiserver on 127.0.0.1 (free ports), CRDs from crds/ installed")
            self.own_cluster = True
            info = cluster.start(
                self.state_dir / "cluster", self.state_dir / "kubeconfig", detach=self.detach
            )
            self.out.info(f"kube-apiserver {info.server}")
            self.out.info(f"etcd (pid {info.etcd_pid}), kube-apiserver (pid {info.apiserver_pid})")
        self.info = info
        self.save_state()
        self.out.ok(f"API server ready; KUBECONFIG={rel(info.kubeconfig)}")

    def start_arm(self) -> None:
        arm_dir = self.state_dir / "arm"
        arm_dir.mkdir(parents=True, exist_ok=True)
        create_latency = 8.0 if self.args.scenario == "crash" else 4.0
        config = {
            "clusters": [
                {"subscription_id": SUBSCRIPTION, "resource_group": RESOURCE_GROUP, "name": AKS_CLUSTER}
            ],
            "latency": {"create": create_latency, "update": 1.0, "delete": 3.0},
        }
        config_path = arm_dir / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        env = dict(os.environ)
        # The node simulator: a node joins 3s after its VM is running, is Ready 2s later and its GPUs
        # are advertised 2s after that (real AKS: minutes; FAKE_NODE_* in the environment win).
        for key, value in (
            ("FAKE_NODE_PROFILE", "fast"),
            ("FAKE_NODE_JOIN_DELAY_SECONDS", "3"),
            ("FAKE_NODE_READY_DELAY_SECONDS", "2"),
            ("FAKE_NODE_GPU_DELAY_SECONDS", "2"),
        ):
            env.setdefault(key, value)
        log = self.state_dir / "logs" / "fake-arm.log"
        cmd = [
            sys.executable,
            "-m",
            "fakes.arm",
            "--port",
            "0",
            "--state-dir",
            str(arm_dir / "state"),
            "--config",
            str(config_path),
            "--kubeconfig",
            self.kubeconfig,
        ]
        self.out.cmd(f"python -m fakes.arm --port 0 --config {rel(config_path)} --kubeconfig ...")
        proc = self.spawn("fake ARM server", cmd, env, log)
        values: dict[str, str] = {}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            if "READY" in lines:
                values = dict(ln.split("=", 1) for ln in lines if re.match(r"^[A-Z_]+=", ln))
                break
            if proc.popen.poll() is not None:
                raise DemoError(f"the fake ARM server exited with code {proc.popen.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise DemoError(f"the fake ARM server did not print READY within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        self.arm = FakeArmClient(values["ARM_ENDPOINT"], values["ARM_CA_BUNDLE"])
        # Workload identity as in an AKS pod: a projected token file exchanged at the fake's endpoint.
        self.arm_env = clientenv.controller_env(
            values["ARM_ENDPOINT"], values["ARM_CA_BUNDLE"], values["AZURE_AUTHORITY_HOST"], arm_dir
        )
        self.out.info(f"ARM endpoint  {values['ARM_ENDPOINT']}  ({proc.name}, pid {proc.popen.pid})")
        self.out.info(f"subscription  {SUBSCRIPTION}, cluster {RESOURCE_GROUP}/{AKS_CLUSTER} in {LOCATION}")
        self.out.info(f"pool create {create_latency:g}s, delete 3s; nodes join 3s later, Ready +2s, GPUs +2s")
        self.out.info(f"log           {rel(log)}")
        self.out.ok("fake ARM ready (agent pools API, Resource SKUs, quota, token endpoint)")

    def controller_env(self, metrics_port: int, health_port: int) -> dict[str, str]:
        return {
            **os.environ,
            **self.arm_env,
            # Short caches and retries so the demo sees changes within seconds.
            "AZURE_LIST_CACHE_SECONDS": "1",
            "AZURE_USAGE_CACHE_SECONDS": "1",
            "AZURE_QUOTA_RECHECK_SECONDS": "1",
            "AZURE_UNAVAILABLE_SKU_SECONDS": "2",
            "CAPACITY_RETRY_BASE_SECONDS": "2",
            "CAPACITY_RETRY_MAX_SECONDS": "4",
            "LAUNCH_POLL_SECONDS": "1",
            "DELETE_POLL_SECONDS": "1",
            "DRAIN_RETRY_SECONDS": "1",
            "LEADER_ELECTION_NAMESPACE": "default",
            "LEADER_ELECTION_NAME": "gpu-provisioner-demo",
            "LEADER_ELECTION_LEASE_SECONDS": str(LEASE_SECONDS),
            "LEADER_ELECTION_RENEW_SECONDS": "3",
            "LEADER_ELECTION_RETRY_SECONDS": "0.5",
            "METRICS_PORT": str(metrics_port),
            "HEALTH_PORT": str(health_port),
            "BIND_ADDRESS": "127.0.0.1",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "info"),
        }

    def start_controller(self) -> Proc:
        self.controllers += 1
        n = self.controllers
        log = self.state_dir / "logs" / ("controller.log" if n == 1 else f"controller-{n}.log")
        exe = Path(sys.executable).with_name("gpu-provisioner")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "provisioner.cli"]
        metrics_port, health_port = free_port(), free_port()
        cmd = [*base, "controller", "--cloud", "azure", "--kubeconfig", self.kubeconfig]
        self.out.cmd(f"gpu-provisioner controller --cloud azure --kubeconfig {rel(self.kubeconfig)}")
        proc = self.spawn(f"controller #{n}", cmd, self.controller_env(metrics_port, health_port), log)
        self.out.info(f"{proc.name} (pid {proc.popen.pid}), log {rel(log)}")
        self.out.info(f"metrics http://127.0.0.1:{metrics_port}/metrics, health :{health_port}/readyz")
        deadline = time.monotonic() + START_TIMEOUT + LEASE_SECONDS
        said_waiting = False
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            if "controller started" in text:
                break
            if "waiting to become leader" in text and n > 1 and not said_waiting:
                self.out.info(f"waiting for the Lease default/gpu-provisioner-demo (expires {LEASE_SECONDS}s")
                self.out.info("  after its holder stopped renewing it)")
                said_waiting = True
            if proc.popen.poll() is not None:
                raise DemoError(f"the controller exited with code {proc.popen.returncode}")
            if time.monotonic() > deadline:
                raise DemoError(f"the controller did not start within {START_TIMEOUT:.0f}s; see {log}")
            time.sleep(0.2)
        self.out.ok("controller started: holds the Lease, watches Machines, NodeClaims and NodePools")
        return proc

    def create_claims(self) -> None:
        self.claims = [
            Claim("machine", random_claim_name(), "workspace-falcon-7b-instruct", V100, "Kaito v0.1-v0.4"),
            Claim("nodeclaim", random_claim_name(), "workspace-llama-3-1-8b-instruct", A100, "Kaito v0.7+"),
        ]
        manifests = self.manifests()
        for c in self.claims:
            c.manifest = manifests / f"{c.kind}-{c.workspace}.yaml"
            c.manifest.write_text(yaml.safe_dump(c.body(), sort_keys=False))
            self.written.append(c.manifest)
            self.out.info(f"{c.origin:16} {c.kind:9} {c.name} for {c.workspace} ({c.instance_type})")
        self.kubectl("create", *[a for c in self.claims for a in ("-f", rel(c.manifest or ""))])
        now = time.monotonic()
        for c in self.claims:
            c.created_at = now

    def wait_ready(self, claims: list[Claim] | None = None, since: float | None = None) -> World:
        claims = claims or self.claims
        what = " and ".join(c.kind for c in claims) + (" are" if len(claims) > 1 else " is") + " Ready"
        start = since if since is not None else min(c.created_at for c in claims)
        world = self.watch(what, lambda w: all(w.ready(c) for c in claims), READY_TIMEOUT, start)
        for c in claims:
            self.out.ok(f"{c.ref} Ready after {c.time_to_ready or 0:.1f}s")
        return world

    def scenario_happy(self) -> None:
        with self.phase("Kaito asks for two GPU nodes: a Machine and a NodeClaim", "create->Ready"):
            self.create_claims()
            self.wait_ready()

    def scenario_capacity(self) -> None:
        assert self.arm is not None
        machine, nodeclaim = "machine", "nodeclaim"
        with self.phase("Kaito asks for GPU nodes while the A100 quota is used up", "quota short"):
            self.arm.set_quota(A100_FAMILY, 0)
            self.out.info(f"fake ARM: quota {A100_FAMILY} in {LOCATION} set to 0 vCPUs")
            self.create_claims()
            m = next(c for c in self.claims if c.kind == machine)
            nc = next(c for c in self.claims if c.kind == nodeclaim)
            world = self.watch(
                f"the machine is Ready and the nodeclaim is Launched=False ({A100_FAMILY} at 0)",
                lambda w: w.ready(m) and w.status(nc, 0) == "False",
                READY_TIMEOUT,
                m.created_at,
            )
            launched = conditions(world.claim(nc))["Launched"]
            self.out.ok(f"{m.ref} Ready after {m.time_to_ready or 0:.1f}s (V100 quota is fine)")
            self.out.info(f"{nc.ref} condition Launched=False, reason {launched.get('reason')}:")
            self.out.block(launched.get("message", ""), indent=8)
            if not launched.get("message", "").startswith(KAITO_CAPACITY_TEXT):
                raise DemoError(f"expected Kaito's text {KAITO_CAPACITY_TEXT!r} in the Launched message")
            self.show_events(nc.kind, nc.name)
            puts = self.arm.count("PUT", nc.name)
            if puts:
                raise DemoError(f"{puts} PUT(s) for {nc.name} although the quota pre-flight says no")
            self.out.ok("no agent pool PUT was sent: the quota pre-flight avoided a doomed ARM write")
        with self.phase(
            f"The quota request is approved: {A100_FAMILY} raised to {A100_QUOTA_RAISED}", "quota raised"
        ):
            self.arm.set_quota(A100_FAMILY, A100_QUOTA_RAISED)
            self.out.info(f"fake ARM: quota {A100_FAMILY} = {A100_QUOTA_RAISED} vCPUs")
            raised = time.monotonic()
            self.wait_ready([nc], since=raised)
            self.out.ok(f"{nc.ref} launched {time.monotonic() - raised:.1f}s after the quota was raised")

    def scenario_crash(self) -> None:
        assert self.arm is not None
        arm = self.arm
        with self.phase("Kaito asks for GPU nodes; the controller is killed mid-create", "create+kill"):
            self.create_claims()
            start = min(c.created_at for c in self.claims)
            self.watch(
                "both agent pool PUTs were sent",
                lambda w: all(c.name in w.pools for c in self.claims),
                START_TIMEOUT,
                start,
            )
            victim = next(p for p in self.procs if p.name == "controller #1")
            self.out.cmd(f"kill -9 {victim.popen.pid}   # the controller, while both pools are Creating")
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(10)
            victim.killed = True
            states = {n: p["properties"].get("provisioningState") for n, p in arm.pools().items()}
            for c in self.claims:
                self.out.info(f"agent pool {c.name}: {states.get(c.name, 'missing')} at ARM")
        with self.phase("A new controller takes over and adopts the pools", "adopt->Ready"):
            restarted = time.monotonic()
            replacement = self.start_controller()
            self.wait_ready(since=restarted)
            for c in self.claims:
                puts = arm.count("PUT", c.name)
                if puts != 1:
                    raise DemoError(f"{puts} PUTs for pool {c.name}; the new controller should adopt it")
            log = replacement.log.read_text(errors="replace").splitlines()
            for c in self.claims:
                line = next((ln for ln in log if f"adopting existing agent pool {c.name}" in ln), None)
                if line:
                    self.out.info(f"controller #2: {line.strip()}")
            self.out.ok("exactly one PUT per pool: the new controller adopted the running operations")

    def scenario_nodepool(self) -> None:
        assert self.arm is not None
        self.arm.set_quota(A100_FAMILY, NODEPOOL_A100_QUOTA)
        self.out.info(f"fake ARM: quota {A100_FAMILY} = {NODEPOOL_A100_QUOTA} vCPUs (room for a replacement)")
        manifests = self.manifests()
        with self.phase(
            "Kaito starts: it creates its node classes and waits for the default one", "node classes"
        ):
            bodies = [kaito_node_class(entry) for entry in KAITO_CHART_NODE_CLASSES]
            path = manifests / "kaitonodeclasses.yaml"
            path.write_text(yaml.safe_dump_all(bodies, sort_keys=False))
            self.written.append(path)
            for b in bodies:  # on a shared cluster they may exist: put back as they were afterwards
                name = b["metadata"]["name"]
                existing = self.custom(NODE_CLASS_API, name)
                if existing is None:
                    self.node_classes.append(name)
                else:
                    self.node_class_specs[name] = existing.get("spec") or {}
            self.kubectl("apply", "-f", rel(path))
            default = next(e["name"] for e in KAITO_CHART_NODE_CLASSES if e.get("default"))
            self.poll(
                f"node class {default} Ready",
                lambda: (
                    conditions(self.custom(NODE_CLASS_API, default)).get("Ready", {}).get("status") == "True"
                ),
                START_TIMEOUT,
            )
            self.kubectl("get", "kaitonodeclasses")
            self.out.ok("node classes Ready: Kaito goes on (it gives up after 120s without a Ready default)")
        with self.phase(
            f"Kaito creates the NodePool of workspace {NODEPOOL_WORKSPACE} ({NODEPOOL_REPLICAS} replicas)",
            "NodePool->Ready",
        ):
            body = kaito_nodepool(NODEPOOL_WORKSPACE, instance_type=A100, replicas=NODEPOOL_REPLICAS)
            self.nodepool = body["metadata"]["name"]
            path = manifests / f"nodepool-{self.nodepool}.yaml"
            path.write_text(yaml.safe_dump(body, sort_keys=False))
            self.written.append(path)
            self.out.info(
                f"static NodePool {self.nodepool}: replicas {NODEPOOL_REPLICAS}, {A100}, taint sku=gpu:NoSchedule,"
            )
            self.out.info(
                f"  node class {body['spec']['template']['spec']['nodeClassRef']['name']}, budget"
                " for Drifted: 1 node at a time"
            )
            self.kubectl("create", "-f", rel(path))
            self.wait_nodepool(NODEPOOL_REPLICAS, time.monotonic())
        with self.phase(f"The workspace grows: Kaito raises replicas to {NODEPOOL_RAISED}", "raise->Ready"):
            patch = json.dumps({"spec": {"replicas": NODEPOOL_RAISED}})
            self.kubectl("patch", "nodepool", self.nodepool, "--type=merge", "-p", patch)
            self.wait_nodepool(NODEPOOL_RAISED, time.monotonic())
        with self.phase(
            f"Node class {DRIFT_NODE_CLASS} moves to {DRIFT_FAMILY}: every node drifts, replaced one at a time",
            "drift",
        ):
            self.drift()

    def manifests(self) -> Path:
        path = self.state_dir / "manifests"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def custom(self, api: tuple[str, str, str], name: str) -> dict[str, Any] | None:
        co, _ = self.api()
        try:
            return co.get_cluster_custom_object(*api, name)  # type: ignore[no-any-return]
        except Exception as e:  # the client's ApiException; 404 is "not there"
            if getattr(e, "status", None) == 404:
                return None
            raise

    def poll(self, what: str, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            self.check_alive()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(POLL)

    def live(self, w: World) -> list[Claim]:
        """The NodePool's NodeClaims that exist and are not being deleted."""
        return [
            c for c in self.claims if (obj := w.claim(c)) and not obj["metadata"].get("deletionTimestamp")
        ]

    def wait_nodepool(self, replicas: int, since: float) -> None:
        assert self.nodepool is not None
        self.watch(
            f"the NodePool has {replicas} Ready NodeClaims",
            lambda w: len(self.live(w)) == replicas and all(w.ready(c) for c in self.live(w)),
            READY_TIMEOUT,
            since,
        )
        self.poll(
            f"NodePool status nodes={replicas}",
            lambda: (
                ((self.custom(NODEPOOL_API, self.nodepool or "") or {}).get("status") or {}).get("nodes")
                == replicas
            ),
            START_TIMEOUT,
        )
        self.kubectl("get", "nodepool", self.nodepool)
        self.out.ok(
            f"{replicas} NodeClaims Ready, one agent pool each; NodePool status says {replicas} nodes"
        )

    def drift(self) -> None:
        """Change the node class; every NodeClaim drifts and is replaced within the budget of 1: the
        replacement is Ready before its predecessor goes, and Ready capacity never drops."""
        old = {c.name for c in self.live(self.observe())}
        patch = json.dumps({"spec": {"imageFamily": DRIFT_FAMILY}})
        self.kubectl("patch", "kaitonodeclass", DRIFT_NODE_CLASS, "--type=merge", "-p", patch)
        changed = time.monotonic()
        said: set[tuple[str, str]] = set()
        lowest = [len(old)]
        in_flight = [0]

        def notes(w: World) -> list[str]:
            out: list[str] = []

            def once(key: tuple[str, str], text: str) -> None:
                if key not in said:
                    said.add(key)
                    out.append(text)

            live = self.live(w)
            ready = [c for c in live if w.ready(c)]
            lowest[0] = min(lowest[0], len(ready))
            in_flight[0] = max(in_flight[0], sum(1 for c in live if c.name not in old and not w.ready(c)))
            for c in self.claims:
                obj = w.claim(c)
                if c.name in old:
                    if obj and conditions(obj).get("Drifted", {}).get("status") == "True":
                        reason = conditions(obj)["Drifted"].get("reason", "")
                        once((c.name, "drifted"), f"{c.name}: Drifted=True ({reason})")
                    if obj is None or obj["metadata"].get("deletionTimestamp"):
                        once((c.name, "deleting"), f"{c.name}: its replacement is Ready; it drains and goes")
                elif obj:
                    replaces = (obj["metadata"].get("annotations") or {}).get(ANNOTATION_REPLACES)
                    if replaces:
                        once((c.name, "launched"), f"{c.name}: launched to replace {replaces}")
                    if w.ready(c):
                        once((c.name, "ready"), f"{c.name}: Ready ({len(ready)} Ready nodes)")
            return out

        self.watch(
            f"every NodeClaim replaced (image family {DRIFT_FAMILY})",
            lambda w: (
                all(w.gone(c) for c in self.claims if c.name in old)
                and len(self.live(w)) == len(old)
                and all(w.ready(c) for c in self.live(w))
            ),
            DRIFT_TIMEOUT,
            changed,
            notes,
        )
        for c in self.claims:
            c.retired = c.name in old
        if lowest[0] < len(old):
            raise DemoError(f"Ready nodes dropped to {lowest[0]} (of {len(old)}) during the replacement")
        if in_flight[0] > 1:
            raise DemoError(f"{in_flight[0]} replacements at once although the budget allows 1")
        self.out.ok(
            f"{len(old)} NodeClaims replaced one at a time in {time.monotonic() - changed:.1f}s; "
            f"Ready nodes never below {len(old)}"
        )

    def show_events(self, kind: str, name: str) -> None:
        text = self.kubectl("describe", kind, name, show=False)
        events = text[text.find("Events:") :] if "Events:" in text else "Events: <none>"
        self.out.cmd(f"kubectl describe {kind} {name}   # the Events section")
        self.out.block(events)

    def show(self) -> None:
        assert self.arm is not None
        world = self.observe()
        present = [c for c in self.claims if not world.gone(c)]
        names = ",".join(c.pool for c in present)
        if self.nodepool:
            self.kubectl("get", "nodepools,nodeclaims", "-o", "wide")
        else:
            self.kubectl("get", "machines,nodeclaims", "-o", "wide")
        self.out.line()
        self.kubectl(
            "get",
            "nodes",
            "-l",
            f"{POOL_LABEL} in ({names})",
            "-o",
            "custom-columns=NAME:.metadata.name,"
            'READY:.status.conditions[?(@.type=="Ready")].status,'
            "POOL:.metadata.labels.kubernetes\\.azure\\.com/agentpool,"
            "INSTANCE-TYPE:.metadata.labels.node\\.kubernetes\\.io/instance-type,"
            "ZONE:.metadata.labels.topology\\.kubernetes\\.io/zone,"
            + ("OS-IMAGE:.status.nodeInfo.osImage," if self.nodepool else "")
            + "GPU:.status.capacity.nvidia\\.com/gpu",
        )
        for c in present:
            node = world.nodes.get(c.pool)
            if node is None or not node_gpus(node):
                raise DemoError(f"the node of {c.ref} does not advertise {GPU}")
        self.out.line()
        self.out.info("Agent pools in the fake subscription (what `az aks nodepool list` would show):")
        self.show_pools(world.pools)
        if self.nodepool:
            self.out.line()
            self.show_events("nodepool", self.nodepool)
            self.out.line()
            self.show_disruption_events()
            return
        for c in present:
            self.out.line()
            self.show_events(c.kind, c.name)

    def show_disruption_events(self) -> None:
        """What the replacements said on the drifted NodeClaims (those are gone; their Events stay)."""
        args = (
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=NodeClaim",
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message",
        )
        lines = self.kubectl(*args, show=False).splitlines()
        mine = {c.name for c in self.claims}
        picked = [ln for ln in lines[1:] if ln.split()[0] in mine and re.search(r"\sDisruption\w*\s", ln)]
        self.out.cmd("kubectl " + shlex.join(args) + " | grep Disruption")
        self.out.block("\n".join(lines[:1] + picked) if picked else "(no disruption events)")
        if not picked:
            raise DemoError("no disruption events on the drifted NodeClaims")

    def show_pools(self, pools: dict[str, dict[str, Any]]) -> None:
        mine = [p for name, p in sorted(pools.items()) if name in {c.pool for c in self.claims}]
        if not mine:
            self.out.info("  (none)")
            return
        self.out.info(f"  {'NAME':13} {'VM SIZE':26} {'COUNT':5}  {'OS SKU':11} {'STATE':10} WORKSPACE")
        for p in mine:
            props = p["properties"]
            labels = props.get("nodeLabels") or {}
            workspace = labels.get("kaito.sh/workspace") or labels.get(
                "karpenter.kaito.sh/workspace-name", ""
            )
            self.out.info(
                f"  {p['name']:13} {props.get('vmSize', ''):26} {props.get('count', '')!s:5}  "
                f"{props.get('osSKU', ''):11} {props.get('provisioningState', ''):10} {workspace}"
            )

    def delete_claims(self) -> None:
        assert self.arm is not None
        if self.nodepool:
            self.kubectl("delete", "nodepool", self.nodepool, "--wait=false")
        else:
            self.kubectl("delete", *[c.ref for c in self.claims], "--wait=false")
        deleted = time.monotonic()
        what = "the NodePool, its claims" if self.nodepool else "the claims"
        self.watch(
            f"{what}, their agent pools and their nodes are gone",
            lambda w: (
                all(w.gone(c) for c in self.claims)
                and (not self.nodepool or self.custom(NODEPOOL_API, self.nodepool) is None)
            ),
            GONE_TIMEOUT,
            deleted,
        )
        self.out.ok(f"{what}, agent pools and nodes gone after {time.monotonic() - deleted:.1f}s")
        names = ",".join(c.pool for c in self.claims)
        self.kubectl("get", "nodepools,nodeclaims" if self.nodepool else "machines,nodeclaims")
        self.kubectl("get", "nodes", "-l", f"{POOL_LABEL} in ({names})")
        self.out.info("Agent pools in the fake subscription:")
        self.show_pools(self.arm.pools())
        for c in self.claims:
            puts, deletes = self.arm.count("PUT", c.pool), self.arm.count("DELETE", c.pool)
            if (puts, deletes) != (1, 1):
                raise DemoError(f"pool {c.pool}: {puts} PUT and {deletes} DELETE (expected one of each)")

    def summary(self) -> None:
        assert self.arm is not None
        for c in self.claims:
            ready = f"Ready after {c.time_to_ready:.1f}s" if c.time_to_ready is not None else "never Ready"
            self.out.info(f"{c.ref:21} {c.origin:16} {c.instance_type:25} {ready}")
        self.out.info("ARM calls: " + summarize_requests(self.arm.requests()))
        for p in self.procs:
            if p.name.startswith("controller"):
                self.out.info(f"{p.name} log: {rel(p.log)}")
        total = sum(t for _, t in self.timings)
        self.out.info("phases: " + ", ".join(f"{short} {t:.1f}s" for short, t in self.timings))
        self.out.ok(self.out.bold(f"demo '{self.args.scenario}' passed in {total:.0f}s"))

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> int:
        stop_previous(self.state_dir, self.out)
        self.out.line(self.out.bold("gpu-provisioner demo") + f"  scenario: {self.args.scenario}")
        self.out.line("Kaito asks for GPU nodes; gpu-provisioner creates one AKS agent pool per claim.")
        self.out.line("Azure is the fake ARM server; everything else is real (kube-apiserver, Azure SDK).")
        try:
            with self.phase("Starting the local control plane (etcd + kube-apiserver)", "control plane"):
                self.start_cluster()
            with self.phase(
                "Starting the fake Azure Resource Manager (and its AKS node simulator)", "fake ARM"
            ):
                self.start_arm()
            with self.phase("Starting gpu-provisioner with --cloud azure", "controller"):
                self.start_controller()
            getattr(self, f"scenario_{self.args.scenario}")()
            with self.phase("What Kubernetes and Azure show", "show"):
                self.show()
            with self.phase(
                "Kaito deletes the workspace: "
                + ("its NodePool, " if self.nodepool else "")
                + "claims, pools and nodes go away",
                "delete",
            ):
                self.delete_claims()
            with self.phase("Summary", "summary"):
                self.summary()
            if self.args.keep or (self.interactive and self.ask_keep()):
                return self.stay_up()
            return 0
        except DemoError as e:
            self.out.line()
            self.out.line(self.out.style(f"demo FAILED: {e}", "1;31"))
            self.print_log_hints()
            return 1
        except cluster.ClusterError as e:
            self.out.line(self.out.style(f"demo FAILED: the local control plane: {e}", "1;31"))
            return 1
        except KeyboardInterrupt:
            self.out.line("\ninterrupted")
            return 130
        finally:
            if not self.detached:
                self.cleanup()

    def print_log_hints(self) -> None:
        for p in self.procs:
            self.out.line(f"  {p.name} log: {p.log}")
            if p.name.startswith("controller") and p.log.exists():
                tail = p.log.read_text(errors="replace").splitlines()[-8:]
                self.out.block("\n".join(tail), indent=4)

    def ask_keep(self) -> bool:
        self.out.line()
        try:
            answer = input(
                "Keep the control plane, fake ARM server and controller running to explore? [y/N] "
            )
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def stay_up(self) -> int:
        assert self.info is not None and self.arm is not None
        self.out.header("==> Everything is still running")
        self.out.line(f"    export KUBECONFIG={self.kubeconfig}")
        self.out.line(f"    alias kubectl={self.info.kubectl}")
        self.out.info("try:")
        for path in self.written:
            self.out.info(f"  kubectl apply -f {rel(path)}")
        self.out.info(
            f"  kubectl get {'nodepools,nodeclaims' if self.nodepool else 'machines,nodeclaims'},nodes -w"
        )
        self.out.info(f"  curl -s --cacert {self.arm.ca_bundle} {self.arm.endpoint}/_fake/pools")
        for p in self.procs:
            self.out.info(f"{p.name} (pid {p.popen.pid}) log: {rel(p.log)}")
        if not self.own_cluster:
            self.out.info(
                "the control plane is the one from `make cluster-up`: stop it with `make cluster-down`"
            )
        if self.detach:
            self.detached = True
            self.save_state()
            if self.args.state_dir:
                down = f"{rel(sys.executable)} -m hack.demo --down --state-dir {rel(self.state_dir)}"
            else:
                down = "make demo DEMO_ARGS=--down"
            self.out.info(f"stop everything with: {down}")
            return 0
        self.out.info("Ctrl-C stops the controller, the fake ARM server and the demo's control plane.")
        try:
            while True:
                self.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            self.out.line()
            return 0
        except DemoError as e:
            self.out.line(f"demo FAILED: {e}")
            return 1

    def cleanup(self) -> None:
        """Stop everything this run started: controllers, then the fake ARM server, then the cluster."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # every step below is bounded; let it finish
        self.out.header("==> Cleaning up")
        if not self.own_cluster and self.info is not None:
            self.remove_leftovers()
        started = [(p.name, p.popen.pid) for p in reversed(self.procs)]
        for p in reversed(self.procs):
            stop_pid(p.popen.pid)
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                p.popen.wait(5)
        if self.own_cluster and self.info is not None:
            cluster.stop(self.state_dir / "cluster")
            started += [("kube-apiserver", self.info.apiserver_pid), ("etcd", self.info.etcd_pid)]
        stopped = ", ".join(f"{name} (pid {pid})" for name, pid in started)
        leftovers = [f"{name} (pid {pid})" for name, pid in started if alive(pid)]
        remove_runtime_state(self.state_dir)
        self.out.info("stopped " + (stopped or "nothing (nothing was started)"))
        if leftovers:
            self.out.warn("still running: " + ", ".join(leftovers))
        if (self.state_dir / "logs").exists():
            self.out.info(f"logs kept in {rel(self.state_dir / 'logs')}/")

    def remove_leftovers(self) -> None:
        """On a shared cluster after a failure: remove what the demo created (best effort)."""
        refs = [
            r
            for r in (
                *([f"nodepool/{self.nodepool}"] if self.nodepool else []),
                *(c.ref for c in self.claims),
                *(f"kaitonodeclass/{n}" for n in self.node_classes),
            )
            if self.kubectl("get", r, "--ignore-not-found", show=False)
        ]
        for name, spec in self.node_class_specs.items():
            put_back = json.dumps([{"op": "replace", "path": "/spec", "value": spec}])
            with contextlib.suppress(DemoError):
                self.kubectl("patch", "kaitonodeclass", name, "--type=json", "-p", put_back, show=False)
        if not refs:
            return
        self.out.info("removing what the demo created from the shared cluster")
        with contextlib.suppress(DemoError):
            self.kubectl("delete", *refs, "--wait=false", "--ignore-not-found", show=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                self.kubectl("get", r, "--ignore-not-found", show=False) for r in refs
            ):
                time.sleep(POLL)
            for r in refs:  # the controller could not finish: let them go anyway
                if self.kubectl("get", r, "--ignore-not-found", show=False):
                    self.kubectl(
                        "patch", r, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', show=False
                    )


def remove_runtime_state(state_dir: Path) -> None:
    """Everything of a finished run except its logs and manifests."""
    for name in ("demo.json", "kubeconfig", "arm", "cluster"):
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stop_previous(state_dir: Path, out: Out) -> bool:
    """Stop what an earlier ``--keep`` run left in ``state_dir``; True if anything ran."""
    path = state_dir / "demo.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    pids = [pid for pid in data.get("pids", []) if alive(pid)]
    ran = bool(pids)
    for pid in pids:
        stop_pid(pid)
    if data.get("cluster_state_dir"):
        ran |= cluster.stop(Path(data["cluster_state_dir"]))
    remove_runtime_state(state_dir)
    if ran:
        out.line(f"stopped the demo left running in {rel(state_dir)}")
    return ran


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same orderly cleanup as Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.demo",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="happy", help="what to show (default: happy)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave everything running afterwards (see --down)"
    )
    parser.add_argument("--down", action="store_true", help="stop what an earlier --keep left running")
    parser.add_argument(
        "--own-cluster",
        action="store_true",
        help="always start a control plane for the demo, even if `make cluster-up` runs one",
    )
    parser.add_argument(
        "--local-dir", default=".local", help="where `make cluster-up` keeps its cluster (default: .local)"
    )
    parser.add_argument("--state-dir", help="the demo's own state and logs (default: LOCAL_DIR/demo)")
    args = parser.parse_args(argv)
    demo = Demo(args)
    if args.down:
        if not stop_previous(demo.state_dir, demo.out):
            demo.out.line(f"no demo running from {rel(demo.state_dir)}")
        return 0
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    return demo.run()


if __name__ == "__main__":
    sys.exit(main())
