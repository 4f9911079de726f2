"""The controller's own identity on the API server, so that its requests can be counted apart.

The API server counts requests by verb and resource (``apiserver_request_total``) but not by
client, and the local control plane's audit log records writes only. API Priority and Fairness
(APF) does count by client: every request is classified by the first FlowSchema that matches its
user, verb and resource, and ``apiserver_flowcontrol_dispatched_requests_total`` is labelled with
that FlowSchema's name. So the controller runs as a ServiceAccount of its own (bound to
``cluster-admin``, with a token from the TokenRequest API), and one FlowSchema per verb and kind of
resource matches only that ServiceAccount. The FlowSchemas use the ``exempt`` priority level: the
controller's requests are never queued or rejected by APF, as those of the admin user (group
``system:masters``) it would otherwise run as are not.

Everything created here carries the run's name and is deleted again by :meth:`stop`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from prometheus_client.parser import text_string_to_metric_families

NAMESPACE = "default"
#: Verbs counted one by one (the API server's request verbs: ``watch`` is a list with ?watch=true).
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
READ_VERBS = frozenset({"get", "list", "watch"})
#: Kinds of resource counted apart: name -> (API groups, resources). ``other`` is everything else.
BUCKETS: dict[str, tuple[list[str], list[str]]] = {
    "claims": (["karpenter.sh"], ["*"]),  # Machines, NodeClaims (and NodePools), status included
    "nodes": ([""], ["nodes", "nodes/status"]),
    "pods": ([""], ["pods", "pods/eviction", "pods/status"]),
    "leases": (["coordination.k8s.io"], ["leases"]),
    "events": (["", "events.k8s.io"], ["events"]),
    "other": (["*"], ["*"]),
}
#: Precedences: specific buckets first, then each verb's ``other``, then anything left.
PRECEDENCE, OTHER_PRECEDENCE, REST_PRECEDENCE = 1000, 1001, 1002
DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
TOKEN_SECONDS = 24 * 3600


def flow_schema_name(prefix: str, verb: str, bucket: str) -> str:
    return f"{prefix}-{verb}-{bucket}"


def flow_schemas(prefix: str, service_account: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The FlowSchemas that sort one ServiceAccount's requests by verb and bucket.

    ``<prefix>-<verb>-<bucket>`` for each verb and bucket, ``<prefix>-nonresource`` (discovery,
    ``/version``, ...) and ``<prefix>-rest`` (any other verb, e.g. ``deletecollection``).
    """
    subject = [
        {"kind": "ServiceAccount", "serviceAccount": {"name": service_account, "namespace": namespace}}
    ]

    def schema(name: str, precedence: int, rule: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": name, "labels": {"bench.gpu-provisioner.sh/run": prefix}},
            "spec": {
                "priorityLevelConfiguration": {"name": "exempt"},
                "matchingPrecedence": precedence,
                "rules": [{"subjects": subject, **rule}],
            },
        }

    out = []
    for verb in VERBS:
        for bucket, (groups, resources) in BUCKETS.items():
            rule = {
                "resourceRules": [
                    {
                        "verbs": [verb],
                        "apiGroups": groups,
                        "resources": resources,
                        "clusterScope": True,
                        "namespaces": ["*"],
                    }
                ]
            }
            precedence = OTHER_PRECEDENCE if bucket == "other" else PRECEDENCE
            out.append(schema(flow_schema_name(prefix, verb, bucket), precedence, rule))
    out.append(
        schema(
            f"{prefix}-nonresource",
            PRECEDENCE,
            {"nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]},
        )
    )
    out.append(
        schema(
            f"{prefix}-rest",
            REST_PRECEDENCE,
            {
                "resourceRules": [
                    {
                        "verbs": ["*"],
                        "apiGroups": ["*"],
                        "resources": ["*"],
                        "clusterScope": True,
                        "namespaces": ["*"],
                    }
                ]
            },
        )
    )
    return out


def parse_flow_counts(prefix: str, metrics_text: str) -> dict[str, int]:
    """``"verb bucket"`` -> requests dispatched, for this prefix's FlowSchemas (``"* nonresource"``,
    ``"* rest"`` for the last two)."""
    counts: Counter[str] = Counter()
    head = prefix + "-"
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != DISPATCHED:
                continue
            name = sample.labels.get("flow_schema", "")
            if not name.startswith(head):
                continue
            rest = name[len(head) :]
            verb, _, bucket = rest.partition("-")
            key = f"{verb} {bucket}" if bucket else f"* {verb}"
            counts[key] += int(sample.value)
    return dict(counts)


def summarize_requests(counts: Mapping[str, int], n: int) -> dict[str, Any]:
    """Totals by verb, by bucket, reads and writes, and per claim (``n`` claims)."""
    by_verb: Counter[str] = Counter()
    by_bucket: Counter[str] = Counter()
    reads = writes = 0
    for key, value in counts.items():
        verb, _, bucket = key.partition(" ")
        by_verb[verb] += value
        by_bucket[bucket] += value
        if verb in READ_VERBS or bucket == "nonresource":
            reads += value
        else:
            writes += value

    def per(v: int) -> float | None:
        return None if n <= 0 else round(v / n, 2)

    return {
        "by_verb": dict(sorted(by_verb.items())),
        "by_bucket": dict(sorted(by_bucket.items())),
        "reads": reads,
        "writes": writes,
        "total": reads + writes,
        "per_claim": {
            "reads": per(reads),
            "writes": per(writes),
            "all": per(reads + writes),
            **{f"{verb}": per(by_verb.get(verb, 0)) for verb in VERBS},
            # PATCH and PUT of claims and their status: the claim writes of the targets.
            "claim_writes": per(counts.get("patch claims", 0) + counts.get("update claims", 0)),
        },
    }


def _api_metrics_text(api_client: kubernetes.client.ApiClient) -> str:
    url = f"{api_client.configuration.host}/metrics"
    resp = api_client.call_api("GET", url, header_params={"Accept": "text/plain"}, _request_timeout=15)
    resp.read()  # type: ignore[no-untyped-call]
    if resp.status != 200 or resp.data is None:
        raise RuntimeError(f"GET /metrics answered {resp.status}")
    return str(resp.data.decode())


def _cluster_entry(kubeconfig: Path) -> dict[str, Any]:
    """The current context's cluster entry of ``kubeconfig``, with a CA file path made absolute."""
    config = yaml.safe_load(kubeconfig.read_text())
    current = config.get("current-context")
    context = next((c["context"] for c in config.get("contexts") or () if c.get("name") == current), None)
    if context is None:
        raise ValueError(f"{kubeconfig}: no current context")
    cluster = next(
        (c["cluster"] for c in config.get("clusters") or () if c.get("name") == context["cluster"]), None
    )
    if cluster is None:
        raise ValueError(f"{kubeconfig}: no cluster {context['cluster']!r}")
    entry = dict(cluster)
    ca = entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        entry["certificate-authority"] = str((kubeconfig.parent / ca).resolve())
    return entry


@dataclass
class ControllerIdentity:
    """A ServiceAccount for the controller, its kubeconfig, and the FlowSchemas that count it."""

    api_client: kubernetes.client.ApiClient
    admin_kubeconfig: Path
    workdir: Path
    run_id: str
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) to delete
    kubeconfig: Path | None = None

    @property
    def name(self) -> str:
        return f"gpu-provisioner-bench-{self.run_id}"

    @property
    def prefix(self) -> str:
        return f"gpb-{self.run_id}"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{NAMESPACE}:{self.name}"

    def start(self, timeout: float = 30.0) -> Path:
        """Create the ServiceAccount, its binding and FlowSchemas; return the controller's kubeconfig
        once a request made with it is counted."""
        core = kubernetes.client.CoreV1Api(self.api_client)
        custom = kubernetes.client.CustomObjectsApi(self.api_client)
        labels = {"bench.gpu-provisioner.sh/run": self.prefix}
        account: Any = {"metadata": {"name": self.name, "labels": labels}}
        core.create_namespaced_service_account(NAMESPACE, account, _request_timeout=15)
        self.created.append(("serviceaccount", self.name))
        custom.create_cluster_custom_object(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": self.name, "labels": labels},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": NAMESPACE}],
            },
            _request_timeout=15,
        )
        self.created.append(("clusterrolebinding", self.name))
        for body in flow_schemas(self.prefix, self.name):
            custom.create_cluster_custom_object(
                "flowcontrol.apiserver.k8s.io", "v1", "flowschemas", body, _request_timeout=15
            )
            self.created.append(("flowschema", body["metadata"]["name"]))
        request: Any = {"spec": {"expirationSeconds": TOKEN_SECONDS}}
        resp: Any = core.create_namespaced_service_account_token(
            self.name,
            NAMESPACE,
            request,
            _preload_content=False,
            _request_timeout=15,
        )
        token = json.loads(resp.data)["status"]["token"]
        path = self.workdir / "controller.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "bench", "cluster": _cluster_entry(self.admin_kubeconfig)}],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": self.name}}],
            "current-context": "bench",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        self.kubeconfig = path
        self._wait_counted(path, timeout)
        return path

    def _wait_counted(self, kubeconfig: Path, timeout: float) -> None:
        """APF picks up new FlowSchemas asynchronously: GET a namespace as the ServiceAccount until
        the request lands in its ``get other`` FlowSchema."""
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
        client = kubernetes.client.ApiClient(cfg)
        try:
            core = kubernetes.client.CoreV1Api(client)
            deadline = time.monotonic() + timeout
            while True:
                before = self.counts().get("get other", 0)
                core.read_namespace(NAMESPACE, _request_timeout=10, _preload_content=False)
                if self.counts().get("get other", 0) > before:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"requests of {self.user} are not counted by its FlowSchemas")
                time.sleep(0.3)
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def counts(self) -> dict[str, int]:
        """Requests of the controller so far, as ``"verb bucket"`` -> count."""
        return parse_flow_counts(self.prefix, _api_metrics_text(self.api_client))

    def stop(self) -> None:
        """Delete what :meth:`start` created (best effort: the run's result does not depend on it)."""
        core = kubernetes.client.CoreV1Api(self.api_client)
        custom = kubernetes.client.CustomObjectsApi(self.api_client)
        for kind, name in reversed(self.created):
            try:
                if kind == "serviceaccount":
                    core.delete_namespaced_service_account(name, NAMESPACE, _request_timeout=15)
                elif kind == "clusterrolebinding":
                    custom.delete_cluster_custom_object(
                        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", name, _request_timeout=15
                    )
                else:
                    custom.delete_cluster_custom_object(
                        "flowcontrol.apiserver.k8s.io", "v1", "flowschemas", name, _request_timeout=15
                    )
            except Exception:
                pass
        self.created.clear()
