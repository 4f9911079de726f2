"""What the benchmark sees: watch streams of claims and Nodes (first time each milestone is seen),
the fake ARM request log sorted into kinds of calls, and the API server's request counters.

Times are wall-clock (``time.time()``) in this process; the fake ARM server stamps its request log
with the same clock on the same machine, so both can be subtracted.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

#: Taint the node lifecycle controller keeps on a Node until it is Ready.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
POOL_LABEL = "kubernetes.azure.com/agentpool"
GPU_RESOURCE = "nvidia.com/gpu"
CLAIM_MILESTONES = ("Launched", "Registered", "Initialized", "Ready")


#: A Machine's (v1alpha5) names of the conditions a NodeClaim calls Launched, Registered, Initialized.
_MACHINE_CONDITIONS = {f"Machine{t}": t for t in ("Launched", "Registered", "Initialized")}


def conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Conditions by type, with a Machine's ``MachineLaunched`` etc. under the NodeClaim names."""
    out: dict[str, Mapping[str, Any]] = {}
    for c in (obj.get("status") or {}).get("conditions") or ():
        ctype = c.get("type", "")
        out[_MACHINE_CONDITIONS.get(ctype, ctype)] = c
    return out


def is_true(obj: Mapping[str, Any], ctype: str) -> bool:
    return conditions(obj).get(ctype, {}).get("status") == "True"


def node_usable(node: Mapping[str, Any], needs_gpu: bool) -> bool:
    """Ready, without the not-ready taint, and (for GPU sizes) with GPUs advertised."""
    if not is_true(node, "Ready"):
        return False
    if any(t.get("key") == NOT_READY_TAINT for t in (node.get("spec") or {}).get("taints") or ()):
        return False
    if not needs_gpu:
        return True
    gpus = str(((node.get("status") or {}).get("capacity") or {}).get(GPU_RESOURCE, "0"))
    return gpus not in ("", "0")


@dataclass
class NodeTimeline:
    """When this process saw each step of one Node, and what binds it to a claim."""

    name: str
    pool: str = ""
    provider_id: str = ""
    #: Names of the claims (Machine, NodeClaim) among the Node's ownerReferences.
    owners: tuple[str, ...] = ()
    seen: float | None = None
    ready: float | None = None
    usable: float | None = None
    gone: float | None = None


@dataclass
class ClaimTimeline:
    """When this process saw each step of one claim (wall-clock seconds; None: not seen)."""

    name: str
    kind: str
    create_sent: float | None = None
    created: float | None = None
    milestones: dict[str, float] = field(default_factory=dict)
    delete_sent: float | None = None
    gone: float | None = None
    last: dict[str, Any] = field(default_factory=dict)
    #: The claim's Node: ``status.nodeName`` once set; before that (dedicated pools) the Node of the
    #: agent pool named like the claim, or a Node whose ownerReferences name the claim.
    node_name: str | None = None

    def status_text(self) -> str:
        """The claim's conditions as last seen, for error messages."""
        parts = [
            f"{t}={c.get('status')}({c.get('reason') or ''}: {c.get('message') or ''})"
            for t, c in conditions(self.last).items()
        ]
        return ", ".join(parts) or "no conditions"


CLAIM_OWNER_KINDS = frozenset({"Machine", "NodeClaim"})


class Timelines:
    """Thread-safe record of claim and Node milestones, fed by :class:`Watcher` threads.

    Nodes are recorded by name whichever claim they turn out to belong to: with shared pools a
    Node's pool says nothing about its claim, which only the claim's ``status.nodeName`` (or the
    Node's owner reference) tells, and the Node may be usable before either is written.
    """

    def __init__(self, needs_gpu: bool) -> None:
        self.needs_gpu = needs_gpu
        self.claims: dict[str, ClaimTimeline] = {}
        self.nodes: dict[str, NodeTimeline] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def add(self, timeline: ClaimTimeline) -> None:
        with self.lock:
            self.claims[timeline.name] = timeline

    def node(self, tl: ClaimTimeline) -> NodeTimeline | None:
        """The Node timeline of a claim (no lock taken: safe inside :meth:`wait`'s predicates)."""
        return self.nodes.get(tl.node_name) if tl.node_name else None

    def node_time(self, tl: ClaimTimeline, step: str) -> float | None:
        """``seen``, ``ready``, ``usable`` or ``gone`` of the claim's Node."""
        node = self.node(tl)
        value = getattr(node, step) if node is not None else None
        return float(value) if value is not None else None

    def on_claim(self, event_type: str, obj: Mapping[str, Any], seen: float) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        with self.changed:
            tl = self.claims.get(name)
            if tl is None:
                return
            if event_type == "DELETED":
                tl.gone = tl.gone or seen
            else:
                tl.last = dict(obj)
                node_name = (obj.get("status") or {}).get("nodeName")
                if node_name:
                    tl.node_name = str(node_name)
                for ctype in CLAIM_MILESTONES:
                    if ctype not in tl.milestones and is_true(obj, ctype):
                        tl.milestones[ctype] = seen
            self.changed.notify_all()

    def on_node(self, event_type: str, obj: Mapping[str, Any], seen: float) -> None:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        pool = str((meta.get("labels") or {}).get(POOL_LABEL, ""))
        owners = tuple(
            str(ref.get("name", ""))
            for ref in meta.get("ownerReferences") or ()
            if ref.get("kind") in CLAIM_OWNER_KINDS
        )
        with self.changed:
            node = self.nodes.get(name)
            if node is None:
                node = self.nodes[name] = NodeTimeline(name=name)
            node.pool = pool or node.pool
            node.provider_id = str((obj.get("spec") or {}).get("providerID") or node.provider_id)
            node.owners = owners or node.owners
            for claim_name in (pool, *owners):
                tl = self.claims.get(claim_name)
                if tl is not None and tl.node_name is None:
                    tl.node_name = name
            if event_type == "DELETED":
                node.gone = node.gone or seen
            else:
                node.seen = node.seen or seen
                if node.ready is None and is_true(obj, "Ready"):
                    node.ready = seen
                if node.usable is None and node_usable(obj, self.needs_gpu):
                    node.usable = seen
            self.changed.notify_all()

    def wait(
        self, what: str, done: Callable[[ClaimTimeline], bool], timeout: float, alive: Callable[[], bool]
    ) -> list[ClaimTimeline]:
        """Block until ``done`` holds for every claim; return the claims for which it does not."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                pending = [tl for tl in self.claims.values() if not done(tl)]
                left = deadline - time.monotonic()
                if not pending or left <= 0 or not alive():
                    return pending
                self.changed.wait(min(left, 0.5))


class Watcher(threading.Thread):
    """One list-and-watch stream; hands each event to ``sink`` with the time it arrived."""

    def __init__(
        self,
        name: str,
        api_client: kubernetes.client.ApiClient,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        sink: Callable[[str, Mapping[str, Any], float], None],
        label_selector: str | None = None,
    ) -> None:
        super().__init__(name=f"watch-{name}", daemon=True)
        self.api_client = api_client
        self.list_fn = list_fn
        self.args = args
        self.sink = sink
        self.label_selector = label_selector
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.error: str | None = None
        self._watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        resource_version: str | None = None
        while not self.stopping.is_set():
            kwargs: dict[str, Any] = {"timeout_seconds": 5, "allow_watch_bookmarks": True}
            if self.label_selector:
                kwargs["label_selector"] = self.label_selector
            if resource_version:
                kwargs["resource_version"] = resource_version
            try:
                if resource_version is None:
                    # List first: the watch then starts at that version, so nothing is missed
                    # between this call and the stream being open.
                    listed = self.list_fn(*self.args, **{**kwargs, "watch": False}, _preload_content=False)
                    body = _json(listed.data)
                    now = time.time()
                    for item in body.get("items") or ():
                        self.sink("ADDED", item, now)
                    resource_version = body["metadata"]["resourceVersion"]
                    self.connected.set()
                    continue
                stream = self._watch.stream(self.list_fn, *self.args, deserialize=False, **kwargs)  # type: ignore[no-untyped-call]
                for event in stream:
                    now = time.time()
                    obj = event.get("object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion")
                    if version:
                        resource_version = version
                    if event["type"] == "ERROR":
                        resource_version = None  # expired ("410 Gone"): list again
                        break
                    if event["type"] != "BOOKMARK":
                        self.sink(event["type"], obj, now)
                    if self.stopping.is_set():
                        break
            except kubernetes.client.ApiException as e:
                if e.status == 410:
                    resource_version = None
                    continue
                self.error = f"{e.status} {e.reason}"
                time.sleep(0.5)
            except Exception as e:  # a dropped connection: retry from the last version
                self.error = repr(e)
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()
        self._watch.stop()  # type: ignore[no-untyped-call]


def _json(data: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(data)
    return parsed


# ------------------------------------------------------------------------------------- ARM calls

_POOL = re.compile(r"/managedClusters/[^/]+/agentPools/[^/]+$", re.IGNORECASE)
_POOLS = re.compile(r"/managedClusters/[^/]+/agentPools$", re.IGNORECASE)
_DELETE_MACHINES = re.compile(r"/agentPools/[^/]+/deleteMachines$", re.IGNORECASE)
_MACHINES = re.compile(r"/agentPools/[^/]+/machines$", re.IGNORECASE)
_MACHINE = re.compile(r"/agentPools/[^/]+/machines/[^/]+$", re.IGNORECASE)
_CLUSTER = re.compile(r"/managedClusters/[^/]+$", re.IGNORECASE)
_POOL_NAME = re.compile(r"/agentPools/([^/?]+)(?:/deleteMachines|/machines(?:/[^/?]+)?)?$", re.IGNORECASE)
#: Requests to the identity endpoint, not to ARM.
IDENTITY_KINDS = frozenset({"token", "identity_discovery"})


def classify(method: str, path: str) -> str:
    """A short name for the kind of one ARM/identity request."""
    if "/oauth2/" in path:
        return "token"
    if "openid-configuration" in path or "/discovery/" in path:
        return "identity_discovery"
    if _POOL.search(path):
        return {"PUT": "pool_put", "GET": "pool_get", "DELETE": "pool_delete"}.get(method, "pool_other")
    if _DELETE_MACHINES.search(path):
        return "pool_delete_machines" if method == "POST" else "pool_other"
    if _MACHINES.search(path):
        return "machines_list"
    if _MACHINE.search(path):
        return "machine_get"
    if _POOLS.search(path):
        return "pool_list"
    if "/operations/" in path or "/operationresults/" in path:
        return "operation_status"
    if path.lower().endswith("/microsoft.compute/skus"):
        return "skus_list"
    if path.lower().endswith("/usages"):
        return "usages_list"
    if _CLUSTER.search(path):
        return "cluster_get"
    return "other"


def pool_of(path: str) -> str | None:
    m = _POOL_NAME.search(path)
    return m.group(1) if m else None


@dataclass
class ArmCalls:
    """Requests from one window of the fake ARM request log."""

    records: list[dict[str, Any]]

    def by_kind(self) -> dict[str, int]:
        counts = Counter(classify(r["method"], r["path"]) for r in self.records)
        return dict(sorted(counts.items()))

    def errors(self) -> dict[str, int]:
        """Responses with status >= 400 (or dropped, 0), by status code."""
        counts = Counter(str(r["status"]) for r in self.records if r["status"] >= 400 or r["status"] == 0)
        return dict(sorted(counts.items()))

    def per_pool(self, kind: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for r in self.records:
            pool = pool_of(r["path"])
            if pool and classify(r["method"], r["path"]) == kind:
                counts[pool] += 1
        return dict(counts)

    def first(self, kind: str, pool: str, ok_only: bool = True) -> float | None:
        """Timestamp of the first request of ``kind`` on ``pool`` (successful ones if ``ok_only``)."""
        for r in self.records:
            if classify(r["method"], r["path"]) != kind or pool_of(r["path"]) != pool:
                continue
            if ok_only and not 200 <= r["status"] < 300:
                continue
            return float(r["timestamp"])
        return None

    def sequence(self, pool: str, since: float) -> list[str]:
        """Requests on ``pool`` as ``"+SECONDS METHOD STATUS"`` relative to ``since``."""
        return [
            f"+{r['timestamp'] - since:.3f}s {r['method']} {r['status']}"
            for r in self.records
            if pool_of(r["path"]) == pool
        ]

    def between(self, start: float, end: float) -> ArmCalls:
        return ArmCalls([r for r in self.records if start <= r["timestamp"] < end])

    def first_after(self, kinds: Iterable[str], pool: str, since: float) -> float | None:
        """Timestamp of the first successful request of one of ``kinds`` on ``pool`` at or after
        ``since`` (a shared pool serves many claims: its first PUT is not every claim's)."""
        wanted = set(kinds)
        for r in self.records:
            if r["timestamp"] < since or not 200 <= r["status"] < 300 or pool_of(r["path"]) != pool:
                continue
            if classify(r["method"], r["path"]) in wanted:
                return float(r["timestamp"])
        return None

    def arm_only(self) -> ArmCalls:
        """Without the identity endpoint's requests (tokens, discovery)."""
        return ArmCalls([r for r in self.records if classify(r["method"], r["path"]) not in IDENTITY_KINDS])

    def by_verb(self) -> dict[str, int]:
        """ARM requests (identity endpoint left out) by HTTP method."""
        counts = Counter(r["method"] for r in self.arm_only().records)
        return dict(sorted(counts.items()))

    def pools_created(self) -> set[str]:
        """Pools a PUT created (201)."""
        return {
            pool
            for r in self.records
            if r["status"] == 201
            and classify(r["method"], r["path"]) == "pool_put"
            and (pool := pool_of(r["path"])) is not None
        }


# ------------------------------------------------------------------------------------- API server

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})


def apiserver_writes(api_client: kubernetes.client.ApiClient) -> Counter[str]:
    """``apiserver_request_total`` for write verbs, as ``"VERB resource[/subresource]"`` -> count."""
    url = f"{api_client.configuration.host}/metrics"
    resp = api_client.call_api("GET", url, header_params={"Accept": "text/plain"}, _request_timeout=15)
    resp.read()  # type: ignore[no-untyped-call]
    if resp.status != 200 or resp.data is None:
        raise RuntimeError(f"GET /metrics answered {resp.status}")
    text = resp.data.decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            verb = sample.labels.get("verb", "")
            if verb not in WRITE_VERBS:
                continue
            resource = sample.labels.get("resource", "")
            sub = sample.labels.get("subresource", "")
            counts[f"{verb} {resource}{'/' + sub if sub else ''}"] += int(sample.value)
    return counts


def diff(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    out = {k: after[k] - before.get(k, 0) for k in after}
    return dict(sorted((k, v) for k, v in out.items() if v > 0))


def sum_matching(counts: Mapping[str, int], verbs: Iterable[str], resources: Iterable[str]) -> int:
    verb_set, res_set = set(verbs), set(resources)
    total = 0
    for key, n in counts.items():
        verb, _, resource = key.partition(" ")
        if verb in verb_set and resource in res_set:
            total += n
    return total


# ------------------------------------------------------------------------------------- controller


def controller_metrics(metrics_url: str) -> dict[str, Any]:
    """Reconciles by result and cloud calls (count, mean seconds) by operation, from ``/metrics``."""
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    reconciles: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    call_seconds: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gpu_provisioner_reconciles_total":
                reconciles[sample.labels.get("result", "")] += int(sample.value)
            elif sample.name == "gpu_provisioner_cloud_request_duration_seconds_count":
                calls[sample.labels.get("operation", "")] += int(sample.value)
            elif sample.name == "gpu_provisioner_cloud_request_duration_seconds_sum":
                op = sample.labels.get("operation", "")
                call_seconds[op] = call_seconds.get(op, 0.0) + sample.value
    return {
        "reconciles": dict(sorted(reconciles.items())),
        "cloud_calls": {
            op: {"count": n, "mean_s": round(call_seconds.get(op, 0.0) / n, 3) if n else None}
            for op, n in sorted(calls.items())
        },
    }


# ------------------------------------------------------------------------------------- agent pools


class PoolSampler(threading.Thread):
    """Counts the fake ARM's agent pools (those not there at the start) every ``interval`` seconds
    and keeps the peak. ``sample()`` also takes one at once (at the end of a Ready phase)."""

    def __init__(self, list_pools: Callable[[], list[dict[str, Any]]], interval: float = 0.5) -> None:
        super().__init__(name="pool-sampler", daemon=True)
        self.list_pools = list_pools
        self.interval = interval
        self.baseline: set[str] = {p["name"] for p in list_pools()}
        self.peak = 0
        self.samples = 0
        self.errors = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> int | None:
        try:
            pools = self.list_pools()
        except Exception:  # the fake ARM stopping, a slow answer: the next sample counts
            self.errors += 1
            return None
        count = sum(1 for p in pools if p["name"] not in self.baseline)
        with self._lock:
            self.peak = max(self.peak, count)
            self.samples += 1
        return count

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stopping.set()
