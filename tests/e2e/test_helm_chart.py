"""The Helm chart: lint, render, schema, server-side validation and least-privilege RBAC.

The pinned helm renders the chart the way `helm install` would; what it renders is sent to the real
API server (`--dry-run=server`, so admission, schema and PodSecurity checks run), and the chart's
ServiceAccount, roles and bindings are applied for real so `kubectl auth can-i --as=<the SA>` shows
exactly what the controller may do: every call it makes, and nothing next to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import cluster as local_cluster
from tests.conftest import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "gpu-provisioner"
RELEASE = "gpu-provisioner"
NAMESPACE = "gpu-provisioner"

Obj = dict[str, Any]

# A values file as the Azure/gpu-provisioner chart's install guide produces it (its values
# template filled in by hack/deploy/configure-helm-values.sh), plus the defaults of its
# values.yaml that such files carry along, including keys this chart accepts but ignores.
AZURE_STYLE_VALUES = """
replicas: 1
controller:
  image:
    repository: mcr.microsoft.com/aks/kaito/gpu-provisioner
    tag: 0.3.8
    digest: ""
  securityContext: {}
  env:
    - name: ARM_SUBSCRIPTION_ID
      value: 00000000-0000-0000-0000-000000000001
    - name: LOCATION
      value: eastus
    - name: AZURE_CLUSTER_NAME
      value: kaito-cluster
    - name: AZURE_NODE_RESOURCE_GROUP
      value: MC_kaito-rg_kaito-cluster_eastus
    - name: ARM_RESOURCE_GROUP
      value: kaito-rg
    - name: LEADER_ELECT
      value: "false"
    - name: E2E_TEST_MODE
      value: "false"
  envFrom: []
  resources:
    requests:
      cpu: 200m
    limits:
      cpu: 500m
  outputPaths: [stdout]
  errorOutputPaths: [stderr]
  logLevel: debug
  logEncoding: ""
  metrics:
    port: 8000
  healthProbe:
    port: 8081
workloadIdentity:
  clientId: 11111111-2222-3333-4444-555555555555
  tenantId: 66666666-7777-8888-9999-000000000000
settings:
  batchMaxDuration: 10s
  batchIdleDuration: 1s
  azure:
    clusterName: kaito-cluster
    vmMemoryOverheadPercent: 0.075
    tags:
  featureGates:
    driftEnabled: false
logLevel: debug
logEncoding: console
deploymentMode: self-hosted
podDisruptionBudget:
  name: gpu-provisioner
  maxUnavailable: 1
podSecurityContext:
  fsGroup: 1000
priorityClassName: system-cluster-critical
terminationGracePeriodSeconds:
hostNetwork: false
dnsPolicy: Default
dnsConfig: {}
nodeSelector:
  kubernetes.io/os: linux
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.azure.com/cluster
              operator: Exists
            - key: type
              operator: NotIn
              values: [virtual-kubelet]
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: "kubernetes.io/hostname"
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
tolerations:
  - key: CriticalAddonsOnly
    operator: Exists
extraVolumes: []
imagePullPolicy: IfNotPresent
imagePullSecrets: []
service:
  annotations: {}
serviceAccount:
  create: true
  name: ""
  annotations: {}
additionalClusterRoleRules: []
serviceMonitor:
  enabled: false
  additionalLabels: {}
  endpointConfig: {}
revisionHistoryLimit: 10
strategy:
  rollingUpdate:
    maxUnavailable: 1
webhook:
  logLevel: error
  port: 8443
"""

# Every optional part switched on, with our own keys.
EVERYTHING_ON_VALUES = """
replicas: 3
serviceMonitor:
  enabled: true
  additionalLabels:
    release: kube-prometheus-stack
  endpointConfig:
    interval: 15s
podDisruptionBudget:
  enabled: true
  minAvailable: 1
workloadIdentity:
  clientId: 11111111-2222-3333-4444-555555555555
settings:
  instanceTypeAllowlist: [Standard_NC24ads_A100_v4, Standard_NC6s_v3]
  azure:
    clusterName: kaito
    subscriptionId: 00000000-0000-0000-0000-000000000001
    resourceGroup: kaito-rg
    location: westus3
    tags:
      team: ml
controller:
  image:
    digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  env:
    - name: AZURE_CLUSTER_NAME
      value: from-env
"""

VALUE_SETS = {"default": "", "azure-style": AZURE_STYLE_VALUES, "everything-on": EVERYTHING_ON_VALUES}

# What the chart cannot install without on Azure (the required-settings guard); the value sets and
# renders below are layered on top of it unless a test asks for the chart alone.
AZURE_CLUSTER_VALUES = """
settings:
  azure:
    clusterName: kaito-cluster
    subscriptionId: 00000000-0000-0000-0000-0000000000aa
    resourceGroup: kaito-rg
    location: eastus
"""


class Helm:
    """The pinned helm with its config/cache/data dirs in a temporary directory."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.home = home

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def values_file(self, text: str) -> list[str]:
        """`-f <file>` arguments for a values document (none for an empty one)."""
        if not text.strip():
            return []
        path = self.home / f"values-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(text)
        return ["-f", str(path)]

    def values_args(self, values: str | Path, cluster_values: bool) -> list[str]:
        """`-f` arguments: the cluster's settings (unless not wanted), then ``values`` (a document or
        a file)."""
        base = self.values_file(AZURE_CLUSTER_VALUES) if cluster_values else []
        if isinstance(values, Path):
            return [*base, "-f", str(values)]
        return [*base, *self.values_file(values)]

    def template(
        self,
        values: str | Path = "",
        *set_args: str,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        cluster_values: bool = True,
    ) -> list[Obj]:
        out = self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            *self.values_args(values, cluster_values),
            *set_args,
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def template_error(self, values: str | Path = "", *set_args: str, cluster_values: bool = True) -> str:
        """What `helm template` says when it refuses to render."""
        proc = self.run(
            "template", RELEASE, str(CHART), *self.values_args(values, cluster_values), *set_args, check=False
        )
        assert proc.returncode != 0, f"rendered although it should not:\n{proc.stdout[:2000]}"
        return proc.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    bin_dir = local_cluster.build_tools("helm")["helm"]
    return Helm(bin_dir / "helm", tmp_path_factory.mktemp("helm"))


def find(docs: Sequence[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: Sequence[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: Sequence[Obj]) -> Obj:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (controller,) = [c for c in pod["containers"] if c["name"] == "controller"]
    return controller


def env_of(docs: Sequence[Obj]) -> dict[str, str]:
    entries = container(docs)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e.get("value") for e in entries if "valueFrom" not in e}


def lease_rules(docs: Sequence[Obj]) -> list[Obj]:
    return [
        rule
        for role in find(docs, "Role")
        for rule in role["rules"]
        if "coordination.k8s.io" in rule["apiGroups"]
    ]


# ------------------------------------------------------------------------------------- lint, schema


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_passes(helm: Helm, values: str) -> None:
    proc = helm.run("lint", "--strict", str(CHART), *helm.values_args(values, cluster_values=True))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize(
    ("set_args", "path", "problem"),
    [
        (["--set", "replicas=two"], "/replicas", "want integer"),
        (["--set-string", "controller.metrics.port=eighty"], "/controller/metrics/port", "want integer"),
        (["--set", "leaderElection.enabled=maybe"], "/leaderElection/enabled", "want boolean"),
        (["--set", "logLevel=verbose"], "/logLevel", "must be one of"),
        (
            ["--set", "controller.env[0].name=WORKERS", "--set", "controller.env[0].value=4"],
            "/controller/env/0/value",
            "want",
        ),
        (
            ["--set", "settings.azure.subscriptionId=my-subscription"],
            "/settings/azure/subscriptionId",
            "pattern",
        ),
        (["--set", "serviceMonitor.enable=true"], "/serviceMonitor", "enable"),
        (["--set", "nodePools.installCRD=maybe"], "/nodePools/installCRD", "must be one of"),
        (["--set", "settings.azure.poolStrategy=pooled"], "/settings/azure/poolStrategy", "must be one of"),
    ],
    ids=[
        "replicas-string",
        "port-string",
        "bool-string",
        "log-level",
        "env-value-number",
        "subscription",
        "typo",
        "nodepool-crd-mode",
        "pool-strategy",
    ],
)
def test_values_schema_rejects_wrong_values(helm: Helm, set_args: list[str], path: str, problem: str) -> None:
    for command in (["template", RELEASE], ["lint"]):
        proc = helm.run(*command, str(CHART), *set_args, check=False)
        assert proc.returncode != 0, f"helm {command[0]} accepted {set_args}"
        message = proc.stdout + proc.stderr
        assert "schema" in message and path in message and problem in message, message


# ---------------------------------------------------------------------------------- rendered content


def test_default_render_is_hardened_ha_and_leader_elected(helm: Helm) -> None:
    docs = helm.template()
    deployment = one(docs, "Deployment", RELEASE)
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    ctr = container(docs)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert set(ctr["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(ctr["resources"]["limits"])

    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"http-metrics": 8080, "health": 8081}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ctr["args"] == ["controller"]

    env = env_of(docs)
    assert env["CLOUD_PROVIDER"] == "azure"
    assert env["METRICS_PORT"] == "8080" and env["HEALTH_PORT"] == "8081"
    assert env["LEADER_ELECT"] == "true"
    assert env["LEADER_ELECTION_NAMESPACE"] == NAMESPACE
    assert env["LEADER_ELECTION_NAME"] == "gpu-provisioner-leader"
    assert env["LOG_LEVEL"] == "info" and env["LOG_FORMAT"] == "json"
    assert env["AZURE_POOL_STRATEGY"] == "dedicated"  # one pool per claim unless asked otherwise

    # The Lease Role names exactly the Lease the controller is told to use, in its namespace.
    role = one(docs, "Role", f"{RELEASE}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    named, create = lease_rules(docs)
    assert named["resourceNames"] == [env["LEADER_ELECTION_NAME"]]
    assert sorted(named["verbs"]) == ["get", "patch"]
    assert create["verbs"] == ["create"] and "resourceNames" not in create

    # Replicas spread over nodes; the selector filled in matches the pods.
    selector = deployment["spec"]["selector"]["matchLabels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector

    # Workload identity: pod label on, no client-id annotation until a client ID is given.
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert "annotations" not in one(docs, "ServiceAccount", RELEASE)["metadata"]
    assert pod["serviceAccountName"] == RELEASE

    service = one(docs, "Service", RELEASE)
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == selector
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not find(docs, "ServiceMonitor")


def test_azure_chart_values_map_to_the_controller_settings(helm: Helm) -> None:
    docs = helm.template(AZURE_STYLE_VALUES)
    deployment = one(docs, "Deployment", RELEASE)
    pod = deployment["spec"]["template"]["spec"]
    ctr = container(docs)
    env = env_of(docs)

    assert deployment["spec"]["replicas"] == 1
    assert ctr["image"] == "mcr.microsoft.com/aks/kaito/gpu-provisioner:0.3.8"
    # controller.env passes through, and wins over what the chart would set (no duplicates).
    assert env["ARM_SUBSCRIPTION_ID"] == "00000000-0000-0000-0000-000000000001"
    assert env["ARM_RESOURCE_GROUP"] == "kaito-rg"
    assert env["LOCATION"] == "eastus"
    assert env["AZURE_NODE_RESOURCE_GROUP"] == "MC_kaito-rg_kaito-cluster_eastus"
    assert env["AZURE_CLUSTER_NAME"] == "kaito-cluster"
    assert env["E2E_TEST_MODE"] == "false"
    assert env["LEADER_ELECT"] == "false"
    # ... and leader election off means no Lease rights at all.
    assert not lease_rules(docs)
    # logLevel/logEncoding (zap names) become ours; the metrics port moves everywhere.
    assert env["LOG_LEVEL"] == "debug" and env["LOG_FORMAT"] == "text"
    assert env["METRICS_PORT"] == "8000"
    assert {p["name"]: p["containerPort"] for p in ctr["ports"]}["http-metrics"] == 8000
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 8000
    # Resources merge with ours: their CPU, our memory.
    assert ctr["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    assert ctr["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi"}

    # Workload identity as the Azure chart does it.
    sa = one(docs, "ServiceAccount", RELEASE)
    assert sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
        "azure.workload.identity/tenant-id": "66666666-7777-8888-9999-000000000000",
    }
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"

    # `securityContext: {}` does not undo the hardening; fsGroup comes from their values.
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True

    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["dnsPolicy"] == "Default"
    assert pod["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "terminationGracePeriodSeconds" not in pod
    (required,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert one(docs, "PodDisruptionBudget", "gpu-provisioner")["spec"]["maxUnavailable"] == 1


def test_optional_parts_and_our_settings_keys(helm: Helm) -> None:
    docs = helm.template(EVERYTHING_ON_VALUES)
    env = env_of(docs)
    assert env["ARM_SUBSCRIPTION_ID"] == "00000000-0000-0000-0000-000000000001"
    assert env["ARM_RESOURCE_GROUP"] == "kaito-rg"
    assert env["LOCATION"] == "westus3"
    assert env["AZURE_CLUSTER_NAME"] == "from-env"  # controller.env beats settings.azure.clusterName
    assert json.loads(env["AZURE_EXTRA_TAGS"]) == {"team": "ml"}
    assert env["INSTANCE_TYPE_ALLOWLIST"] == "Standard_NC24ads_A100_v4,Standard_NC6s_v3"
    assert container(docs)["image"] == (
        "ghcr.io/gpu-provisioner/gpu-provisioner:0.1.0"
        "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555"
    }

    monitor = one(docs, "ServiceMonitor", RELEASE)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http-metrics", "path": "/metrics", "interval": "15s"}]
    service = one(docs, "Service", RELEASE)
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}

    pdb = one(docs, "PodDisruptionBudget", RELEASE)
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]

    off = helm.template(
        "", "--set", "podDisruptionBudget.enabled=false", "--set", "workloadIdentity.enabled=false"
    )
    assert not find(off, "PodDisruptionBudget")
    assert "MAX_NODES" not in env_of(off) and "MAX_GPUS" not in env_of(off)  # 0 = no limit: left out
    limited = env_of(helm.template("", "--set", "settings.maxNodes=4", "--set", "settings.maxGpus=16"))
    assert (limited["MAX_NODES"], limited["MAX_GPUS"]) == ("4", "16")
    shared = env_of(helm.template("", "--set", "settings.azure.poolStrategy=shared"))
    assert shared["AZURE_POOL_STRATEGY"] == "shared"
    assert (
        "azure.workload.identity/use" not in one(off, "Deployment")["spec"]["template"]["metadata"]["labels"]
    )


def test_service_account_and_lease_names_follow_the_values(helm: Helm) -> None:
    docs = helm.template(
        "",
        "--set", "serviceAccount.create=false",
        "--set", "serviceAccount.name=existing-sa",
        "--set", "leaderElection.leaseName=my-lease",
    )  # fmt: skip
    assert not find(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing-sa"
    for binding in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "existing-sa", "namespace": NAMESPACE}
        ]
    assert env_of(docs)["LEADER_ELECTION_NAME"] == "my-lease"
    assert lease_rules(docs)[0]["resourceNames"] == ["my-lease"]

    # A lease name given the Azure chart's way (controller.env) moves the Role too.
    docs = helm.template(
        "",
        "--set",
        "controller.env[0].name=LEADER_ELECTION_NAME",
        "--set",
        "controller.env[0].value=env-lease",
    )
    assert env_of(docs)["LEADER_ELECTION_NAME"] == "env-lease"
    assert lease_rules(docs)[0]["resourceNames"] == ["env-lease"]

    # Another release in the same namespace gets its own Lease and cluster-scoped names; the
    # ServiceAccount keeps the Azure chart's fixed name, whatever the release is called.
    docs = helm.template(release="second")
    assert env_of(docs)["LEADER_ELECTION_NAME"] == "second-gpu-provisioner-leader"
    assert one(docs, "ClusterRole")["metadata"]["name"] == "second-gpu-provisioner"
    assert one(docs, "ServiceAccount")["metadata"]["name"] == "gpu-provisioner"
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "gpu-provisioner"


def test_no_wildcards_in_rbac(helm: Helm) -> None:
    for values in VALUE_SETS.values():
        docs = helm.template(values)
        for role in find(docs, "ClusterRole") + find(docs, "Role"):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: {rule}"
                assert "nonResourceURLs" not in rule


# ------------------------------------------------------------------------------------ NodePool CRD

NODEPOOL_CRD = "nodepools.karpenter.sh"


def _nodepool_crds(docs: Sequence[Obj]) -> list[Obj]:
    return find(docs, "CustomResourceDefinition", NODEPOOL_CRD)


def test_nodepool_crd_is_rendered_by_default_as_in_crds(helm: Helm) -> None:
    """Without a cluster to look in (helm template), auto renders it: the CRD of crds/, labelled as
    the release's and kept on uninstall."""
    (crd,) = _nodepool_crds(helm.template())
    shipped = yaml.safe_load((REPO / "crds" / "karpenter.sh_nodepools.yaml").read_text())
    assert crd["spec"] == shipped["spec"]
    assert crd["metadata"]["name"] == shipped["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert "namespace" not in crd["metadata"]
    # The chart's crds/ do not carry it: Helm would install it unconditionally from there.
    assert not (CHART / "crds" / "karpenter.sh_nodepools.yaml").exists()


@pytest.mark.parametrize(
    ("set_args", "rendered"),
    [
        (["--set", "nodePools.installCRD=auto"], True),
        (["--set", "nodePools.installCRD=true"], True),
        (["--set", "nodePools.installCRD=false"], False),
        # The API versions of a cluster that serves NodePools (as a client-side dry run sees them).
        (["--api-versions", "karpenter.sh/v1/NodePool"], False),
        (["--api-versions", "karpenter.sh/v1/NodePool", "--set", "nodePools.installCRD=true"], True),
    ],
    ids=["auto", "true", "false", "auto-nodepools-served", "true-nodepools-served"],
)
def test_nodepool_crd_follows_install_crd(helm: Helm, set_args: list[str], rendered: bool) -> None:
    docs = helm.template("", *set_args)
    assert len(_nodepool_crds(docs)) == (1 if rendered else 0)
    assert one(docs, "Deployment")  # the rest of the chart renders either way


# ---------------------------------------------------------------------------- against the API server


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace that warns about anything below the restricted pod security level."""
    name = f"helm-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label", "namespace", name,
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/warn-version=latest",
    )  # fmt: skip
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_manifests_pass_server_side_dry_run(
    helm: Helm, cluster: Cluster, namespace: str, values: str
) -> None:
    docs = helm.template(values, namespace=namespace)
    # The ServiceMonitor CRD (Prometheus Operator) is not installed here; its content is checked above.
    # The NodePool CRD exists already (the cluster has crds/ applied server-side, without kubectl's
    # last-applied annotation, which a client-side apply would warn about): it is applied server-side.
    crds = find(docs, "CustomResourceDefinition")
    assert [d["metadata"]["name"] for d in crds] == ["nodepools.karpenter.sh"]
    proc = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", "-",
        input=yaml.safe_dump_all(crds), check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
    to_apply = [d for d in docs if d["kind"] not in ("ServiceMonitor", "CustomResourceDefinition")]
    assert {d["kind"] for d in to_apply} >= {"Deployment", "ServiceAccount", "ClusterRole", "Service"}
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(to_apply), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(to_apply), proc.stdout
    assert "PodSecurity" not in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


def test_pod_security_warning_is_detected(helm: Helm, cluster: Cluster, namespace: str) -> None:
    """The check above can fail: hostNetwork breaks the restricted level and is reported."""
    docs = helm.template("", "--set", "hostNetwork=true", namespace=namespace)
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(find(docs, "Deployment"))
    )
    assert 'would violate PodSecurity "restricted:latest"' in proc.stderr


# What the controller does in Kubernetes (provisioner/reconcile/, termination/, events.py,
# leader.py, kopf's watches); each must be allowed. `ns` is the release namespace.
ALLOWED = [
    *[(verb, "machines.karpenter.sh") for verb in ("get", "list", "watch", "patch", "delete")],
    *[(verb, "nodeclaims.karpenter.sh") for verb in ("get", "list", "watch", "patch", "delete")],
    ("create", "nodeclaims.karpenter.sh"),  # the NodePool controller, from a static NodePool's template
    ("patch", "machines.karpenter.sh", "--subresource=status"),
    ("patch", "nodeclaims.karpenter.sh", "--subresource=status"),
    *[(verb, "nodepools.karpenter.sh") for verb in ("get", "list", "watch", "patch")],
    ("patch", "nodepools.karpenter.sh", "--subresource=status"),
    ("list", "kaitonodeclasses.kaito.sh"),
    ("watch", "kaitonodeclasses.kaito.sh"),
    ("patch", "kaitonodeclasses.kaito.sh", "--subresource=status"),
    *[(verb, "nodes") for verb in ("list", "watch", "patch", "delete")],
    ("list", "pods", "--all-namespaces"),
    ("create", "pods", "--subresource=eviction", "--all-namespaces"),
    ("delete", "pods", "--all-namespaces"),
    ("list", "volumeattachments.storage.k8s.io"),
    ("get", "persistentvolumes"),
    ("create", "events", "-n", "default"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "leases.coordination.k8s.io", "-n", "{ns}"),
    ("get", "leases.coordination.k8s.io/{lease}", "-n", "{ns}"),
    ("patch", "leases.coordination.k8s.io/{lease}", "-n", "{ns}"),
    ("get", "/apis"),
    ("get", "/api"),
    ("get", "/version"),
]

# Neighbours of what is allowed, and the usual suspects; each must be refused.
DENIED = [
    ("*", "*"),
    ("*", "*", "--all-namespaces"),
    ("create", "machines.karpenter.sh"),
    ("update", "machines.karpenter.sh"),
    ("update", "nodeclaims.karpenter.sh"),
    ("deletecollection", "nodeclaims.karpenter.sh"),
    ("update", "nodeclaims.karpenter.sh", "--subresource=status"),
    ("delete", "nodeclaims.karpenter.sh", "--subresource=status"),
    ("create", "nodepools.karpenter.sh"),
    ("update", "nodepools.karpenter.sh"),
    ("delete", "nodepools.karpenter.sh"),
    ("deletecollection", "nodepools.karpenter.sh"),
    ("update", "nodepools.karpenter.sh", "--subresource=status"),
    ("patch", "nodepools.karpenter.sh", "--subresource=scale"),
    ("update", "nodepools.karpenter.sh", "--subresource=scale"),
    ("get", "kaitonodeclasses.kaito.sh/default"),
    ("create", "kaitonodeclasses.kaito.sh"),
    ("update", "kaitonodeclasses.kaito.sh"),
    ("patch", "kaitonodeclasses.kaito.sh"),
    ("delete", "kaitonodeclasses.kaito.sh"),
    ("update", "kaitonodeclasses.kaito.sh", "--subresource=status"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io/nodepools.karpenter.sh"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io/nodepools.karpenter.sh"),
    ("create", "nodes"),
    ("update", "nodes"),
    ("get", "nodes"),
    ("get", "pods", "--all-namespaces"),
    ("patch", "events", "-n", "default"),
    ("create", "events.events.k8s.io", "-n", "default"),
    ("patch", "events.events.k8s.io", "-n", "default"),
    ("deletecollection", "pods", "--all-namespaces"),
    ("create", "pods", "--all-namespaces"),
    ("patch", "pods", "--all-namespaces"),
    ("watch", "pods", "--all-namespaces"),
    ("create", "pods", "--subresource=exec", "--all-namespaces"),
    ("get", "secrets", "--all-namespaces"),
    ("list", "secrets", "-n", "{ns}"),
    ("get", "configmaps", "-n", "{ns}"),
    ("list", "namespaces"),
    ("create", "events", "-n", "kube-system"),
    ("create", "events", "-n", "{ns}"),
    ("delete", "events", "-n", "default"),
    ("list", "events", "-n", "default"),
    ("get", "leases.coordination.k8s.io/other-lease", "-n", "{ns}"),
    ("patch", "leases.coordination.k8s.io/other-lease", "-n", "{ns}"),
    ("delete", "leases.coordination.k8s.io/{lease}", "-n", "{ns}"),
    ("list", "leases.coordination.k8s.io", "-n", "{ns}"),
    ("create", "leases.coordination.k8s.io", "-n", "kube-system"),
    ("get", "leases.coordination.k8s.io/{lease}", "-n", "kube-system"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "customresourcedefinitions.apiextensions.k8s.io/machines.karpenter.sh"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "{ns}"),
    ("create", "poddisruptionbudgets.policy", "-n", "{ns}"),
    ("delete", "volumeattachments.storage.k8s.io"),
    ("list", "persistentvolumes"),
]


def test_rbac_allows_exactly_what_the_controller_does(helm: Helm, cluster: Cluster, namespace: str) -> None:
    release = f"rbac-{uuid.uuid4().hex[:6]}"  # unique cluster-scoped names
    docs = helm.template("", release=release, namespace=namespace)
    rbac = [
        d
        for d in docs
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ]
    assert {d["kind"] for d in rbac} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    manifest = yaml.safe_dump_all(rbac)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    try:
        sa = one(docs, "ServiceAccount")["metadata"]["name"]
        lease = env_of(docs)["LEADER_ELECTION_NAME"]
        as_sa = f"--as=system:serviceaccount:{namespace}:{sa}"

        def answers(checks: list[tuple[str, ...]]) -> dict[str, str]:
            result = {}
            for check in checks:
                args = [a.format(ns=namespace, lease=lease) for a in check]
                proc = cluster.kubectl("auth", "can-i", *args, as_sa, check=False)
                answer = proc.stdout.strip()
                assert answer in ("yes", "no"), f"can-i {args}: {proc.stdout} {proc.stderr}"
                result[" ".join(args)] = answer
            return result

        refused = [check for check, answer in answers(ALLOWED).items() if answer != "yes"]
        assert not refused, f"the controller needs but is refused: {refused}"
        granted = [check for check, answer in answers(DENIED).items() if answer != "no"]
        assert not granted, f"allowed but not needed: {granted}"

        # Another ServiceAccount in the same namespace gets none of it.
        other = f"--as=system:serviceaccount:{namespace}:someone-else"
        proc = cluster.kubectl("auth", "can-i", "list", "nodes", other, check=False)
        assert proc.stdout.strip() == "no"
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


# ------------------------------------------------------------ the controller under the chart's identity


def _service_account_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a token of the chart's ServiceAccount (TokenRequest API)."""
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}],
        "current-context": sa,
    }
    path.write_text(json.dumps(config))
    return path


def test_kaito_flow_runs_under_the_charts_service_account(
    helm: Helm, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    from fakes.kaito import kaito_machine, random_claim_name
    from tests.e2e.fakearm import FakeArm
    from tests.e2e.harness import Controller, condition_status, create, delete_and_wait, get_json, wait_for

    lease = f"lease-{uuid.uuid4().hex[:6]}"
    docs = helm.template(f"leaderElection:\n  leaseName: {lease}\n", namespace=namespace)
    rbac = [
        d
        for d in docs
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    sa_kubeconfig = _service_account_kubeconfig(cluster, namespace, sa, tmp_path / "sa-kubeconfig")

    # The RBAC is not a wildcard: with the same token, a verb we never granted is refused.
    denied = subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(sa_kubeconfig), "get", "secrets", "-n", namespace],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr

    arm = FakeArm(tmp_path / "arm", cluster.kubeconfig).start()  # AKS itself joins nodes: admin rights
    ctl = Controller(
        cluster,
        tmp_path,
        cloud="azure",
        kubeconfig=sa_kubeconfig,
        env={**arm.controller_env(), "LEADER_ELECTION_NAMESPACE": namespace},
    )
    ctl.env["LEADER_ELECTION_NAME"] = lease  # the one name the chart's Role allows
    try:
        ctl.start()
        name = random_claim_name()
        create(cluster, ctl.label(kaito_machine(name, instance_type="Standard_NC24ads_A100_v4")))
        wait_for(
            "machine Ready under the chart's RBAC",
            lambda: condition_status(get_json(cluster, "machine", name), "Ready") == "True",
            90,
        )
        delete_and_wait(cluster, "machine", name, timeout=90)
        assert get_json(cluster, "lease", lease, "-n", namespace) is not None
        log = ctl.log()
        assert "forbidden" not in log.lower() and " 403 " not in log, log[-3000:]
    finally:
        ctl.stop()
        arm.stop()
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(rbac), check=False)


# ------------------------------------------------ values files written for the Azure/gpu-provisioner chart

GO_VALUES = REPO / "tests" / "fixtures" / "azure-gpu-provisioner"
GO_CHART_VERSIONS = ("v0.2.1", "v0.3.0", "v0.4.3")
# What Kaito's guide passes next to its generated values file.
KAITO_GUIDE_SET = ("--set", "settings.azure.clusterName=kaito-cluster")
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
# The cluster's settings on the command line, next to an old values file (which leaves them empty).
CLUSTER_SET = (
    "--set", "settings.azure.clusterName=kaito-cluster",
    "--set", f"settings.azure.subscriptionId={SUBSCRIPTION}",
    "--set", "settings.azure.resourceGroup=kaito-rg",
    "--set", "settings.azure.location=eastus",
)  # fmt: skip


def _subjects(docs: Sequence[Obj]) -> list[Obj]:
    return [s for b in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding") for s in b["subjects"]]


@pytest.mark.parametrize("version", GO_CHART_VERSIONS)
def test_go_chart_values_alone_name_every_missing_azure_setting(helm: Helm, version: str) -> None:
    """The Azure chart's values.yaml leaves the cluster's settings empty: the install is refused
    with every missing one named, instead of a controller that cannot start."""
    message = helm.template_error(GO_VALUES / f"values-{version}.yaml", cluster_values=False)
    assert "cloudProvider is azure but the cluster's settings are not set" in message, message
    for key, var in (
        ("clusterName", "AZURE_CLUSTER_NAME"),
        ("subscriptionId", "ARM_SUBSCRIPTION_ID"),
        ("resourceGroup", "ARM_RESOURCE_GROUP"),
        ("location", "LOCATION"),
    ):
        assert f"settings.azure.{key} (or {var} in controller.env)" in message, message


@pytest.mark.parametrize("version", GO_CHART_VERSIONS)
def test_go_chart_values_render_the_intended_env_service_account_and_rbac(helm: Helm, version: str) -> None:
    docs = helm.template(
        GO_VALUES / f"values-{version}.yaml", *CLUSTER_SET, release="kaito-gp", cluster_values=False
    )
    ctr = container(docs)
    entries = ctr["env"]
    assert all("value" not in e or e["value"] is not None for e in entries), entries  # no `value: null`
    env = env_of(docs)
    # Their empty `value:` entries set nothing: the settings keys fill the variables.
    assert env["ARM_SUBSCRIPTION_ID"] == SUBSCRIPTION
    assert env["ARM_RESOURCE_GROUP"] == "kaito-rg"
    assert env["AZURE_CLUSTER_NAME"] == "kaito-cluster"
    assert env["LOCATION"] == "eastus"
    assert "AZURE_NODE_RESOURCE_GROUP" not in env  # empty in theirs, unset in ours: the controller derives it
    assert env["LEADER_ELECT"] == "false" and env["E2E_TEST_MODE"] == "false"
    assert env["LOG_LEVEL"] == "debug" and env["LOG_FORMAT"] == "text"
    assert ctr["image"] == f"mcr.microsoft.com/aks/kaito/gpu-provisioner:{version.removeprefix('v')}"
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    # The ServiceAccount is gpu-provisioner whatever the release is called, and the bindings name it.
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "gpu-provisioner"
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "gpu-provisioner"
    assert _subjects(docs) and all(
        s == {"kind": "ServiceAccount", "name": "gpu-provisioner", "namespace": NAMESPACE}
        for s in _subjects(docs)
    )
    assert "annotations" not in sa["metadata"]  # their clientId/tenantId are empty
    # Leader election off (their LEADER_ELECT=false): no Lease rights; the claim and node rights stay.
    assert not lease_rules(docs)
    rules = one(docs, "ClusterRole")["rules"]
    assert any("nodeclaims" in r["resources"] and "patch" in r["verbs"] for r in rules)
    assert any("machines" in r["resources"] and "patch" in r["verbs"] for r in rules)


def test_kaito_install_guide_values_render_what_its_federated_credential_expects(helm: Helm) -> None:
    docs = helm.template(GO_VALUES / "kaito-guide-values.yaml", *KAITO_GUIDE_SET, cluster_values=False)
    env = env_of(docs)
    assert env["ARM_SUBSCRIPTION_ID"] == "0c0a1c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert env["ARM_RESOURCE_GROUP"] == "kaito-rg"
    assert env["AZURE_CLUSTER_NAME"] == "kaito-cluster"
    assert env["LOCATION"] == "eastus"
    assert env["AZURE_NODE_RESOURCE_GROUP"] == "MC_kaito-rg_kaito-cluster_eastus"
    assert env["LEADER_ELECT"] == "false"
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    sa = one(docs, "ServiceAccount", "gpu-provisioner")
    assert sa["metadata"]["namespace"] == "gpu-provisioner"
    assert sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "5b7e1d2c-6a4f-4c3b-9e8d-7f6a5b4c3d2e",
        "azure.workload.identity/tenant-id": "3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a43",
    }
    pod = one(docs, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == "gpu-provisioner"
    assert all(s["name"] == "gpu-provisioner" for s in _subjects(docs))


def test_go_chart_webhook_keys_are_accepted_and_ignored(helm: Helm) -> None:
    docs = helm.template(GO_VALUES / "values-v0.3.0.yaml", *CLUSTER_SET, cluster_values=False)
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    assert ports == {"http-metrics": 8080, "health": 8081}  # no webhook ports
    assert not any("WEBHOOK" in name for name in env_of(docs))


@pytest.mark.parametrize(
    ("values", "set_args", "problem"),
    [
        (
            "replicas: 2\nleaderElection:\n  enabled: false\n",
            [],
            "replicas is 2 but leader election is off",
        ),
        # The Azure chart's way of turning it off counts the same.
        (
            'replicas: 3\ncontroller:\n  env:\n    - name: LEADER_ELECT\n      value: "false"\n',
            [],
            "replicas is 3 but leader election is off",
        ),
        (
            "",
            ["--set", "settings.azure.resourceGroup="],
            "the cluster's setting is not set: settings.azure.resourceGroup (or ARM_RESOURCE_GROUP in controller.env).",
        ),
    ],
    ids=["replicas-without-leader-election", "replicas-with-LEADER_ELECT-false", "missing-resource-group"],
)
def test_guards_refuse_what_cannot_work(helm: Helm, values: str, set_args: list[str], problem: str) -> None:
    message = helm.template_error(values, *set_args)
    assert problem in message, message


def test_guards_let_through_what_works(helm: Helm) -> None:
    # One replica without leader election is fine; so are settings given only as controller.env.
    helm.template("replicas: 1\nleaderElection:\n  enabled: false\n")
    env_only = "controller:\n  env:\n" + "".join(
        f"    - name: {name}\n      value: {value}\n"
        for name, value in (
            ("AZURE_CLUSTER_NAME", "c"),
            ("ARM_SUBSCRIPTION_ID", SUBSCRIPTION),
            ("ARM_RESOURCE_GROUP", "g"),
            ("LOCATION", "eastus"),
        )
    )
    assert env_of(helm.template(env_only, cluster_values=False))["ARM_RESOURCE_GROUP"] == "g"
    # A Secret or ConfigMap may carry them (envFrom): the chart cannot see inside, so it does not refuse.
    helm.template("controller:\n  envFrom:\n    - secretRef:\n        name: azure\n", cluster_values=False)
    # The fake cloud needs none of them.
    helm.template("cloudProvider: fake\n", cluster_values=False)


def test_unknown_top_level_keys_are_refused(helm: Helm) -> None:
    message = helm.template_error("replica: 2\n")  # a typo of replicas
    assert "schema" in message and "replica" in message and "not allowed" in message, message
    # Keys only earlier Azure charts had still install.
    helm.template("namespace: gpu-provisioner\ndeploymentMode: self-hosted\nwebhook:\n  port: 8443\n")


def _notes(helm: Helm, cluster: Cluster, *args: str) -> str:
    """The notes `helm install` prints (client-side dry run: nothing is created)."""
    proc = helm.run(
        "install", "kaito-gp", str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
        "--kubeconfig", str(cluster.kubeconfig), *args,
    )  # fmt: skip
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_warn_about_ignored_webhook_keys(helm: Helm, cluster: Cluster) -> None:
    notes = _notes(helm, cluster, "-f", str(GO_VALUES / "values-v0.3.0.yaml"), *CLUSTER_SET)
    assert "WARNING: controller.webhook, controller.webhookMetrics are ignored" in notes, notes
    notes = _notes(helm, cluster, "-f", str(GO_VALUES / "values-v0.4.3.yaml"), *CLUSTER_SET)
    assert "webhook" not in notes, notes


def test_helm_install_with_kaitos_guide_values(helm: Helm, cluster: Cluster) -> None:
    """Kaito's install steps with this chart, for real: release and namespace gpu-provisioner, and
    the ServiceAccount its federated credential names has the controller's rights."""
    namespace = f"gp-{uuid.uuid4().hex[:6]}"  # the guide's namespace, made unique per run
    release = f"gpu-provisioner-{uuid.uuid4().hex[:6]}"
    values = GO_VALUES / "kaito-guide-values.yaml"
    proc = helm.run(
        "install", release, str(CHART), "--values", str(values), *KAITO_GUIDE_SET,
        "--namespace", namespace, "--create-namespace", "--skip-crds",
        "--kubeconfig", str(cluster.kubeconfig),
    )  # fmt: skip
    try:
        assert f"subject:  system:serviceaccount:{namespace}:gpu-provisioner" in proc.stdout, proc.stdout
        sa = f"system:serviceaccount:{namespace}:gpu-provisioner"
        cluster.kubectl("get", "serviceaccount", "gpu-provisioner", "-n", namespace)
        for check in (
            ("patch", "nodeclaims.karpenter.sh"),
            ("patch", "machines.karpenter.sh"),
            ("delete", "nodes"),
        ):
            answer = cluster.kubectl("auth", "can-i", *check, f"--as={sa}", check=False).stdout.strip()
            assert answer == "yes", (check, answer)
        deployment = json.loads(
            cluster.kubectl("get", "deployment", release, "-n", namespace, "-o", "json").stdout
        )
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["AZURE_CLUSTER_NAME"] == "kaito-cluster" and env["LEADER_ELECT"] == "false"
    finally:
        helm.run(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            check=False,
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _install(helm: Helm, cluster: Cluster, release: str, namespace: str, *args: str) -> str:
    """`helm install` against the cluster (``--dry-run=server`` among ``args`` to only render, with
    lookups answered by the API server); returns helm's output."""
    return helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
        *helm.values_args("", cluster_values=True), "--kubeconfig", str(cluster.kubeconfig), *args,
    ).stdout  # fmt: skip


def _crd_state(cluster: Cluster) -> Obj:
    crd = json.loads(cluster.kubectl("get", "crd", NODEPOOL_CRD, "-o", "json").stdout)
    return {"metadata": crd["metadata"], "spec": crd["spec"]}


def test_existing_nodepool_crd_is_left_alone(helm: Helm, cluster: Cluster) -> None:
    """A cluster with Karpenter or AKS node auto-provisioning already has a NodePool CRD. The test
    cluster's (crds/ applied with kubectl, no Helm ownership) stands in for one: the chart installs
    and uninstalls without touching it, and says so."""
    before = _crd_state(cluster)
    assert "meta.helm.sh/release-name" not in before["metadata"].get("annotations", {})
    namespace = f"np-{uuid.uuid4().hex[:6]}"
    release = f"np-{uuid.uuid4().hex[:6]}"

    dry = _install(helm, cluster, release, namespace, "--dry-run=server")
    manifest = [doc for doc in yaml.safe_load_all(dry.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]) if doc]
    assert manifest and not _nodepool_crds(manifest), "the chart would take over the existing NodePool CRD"
    assert "NodePool CRD: found an existing nodepools.karpenter.sh" in dry, dry
    assert "acts only on NodePools whose nodeClassRef is a KaitoNodeClass" in dry, dry
    # A client-side dry run cannot look the CRD up, but sees the NodePool API served: the same.
    client = _install(helm, cluster, release, namespace, "--dry-run=client")
    assert "NodePool CRD: the cluster serves NodePools already" in client, client

    try:
        out = _install(helm, cluster, release, namespace)
        assert "found an existing nodepools.karpenter.sh" in out, out
        installed = helm.run(
            "get", "manifest", release, "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)
        ).stdout
        assert NODEPOOL_CRD not in installed
        assert _crd_state(cluster) == before
    finally:
        helm.run(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            check=False,
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert _crd_state(cluster) == before

    # installCRD=true insists, and Helm refuses to adopt a CRD it does not own: nothing is installed.
    proc = helm.run(
        "install", release, str(CHART), "--namespace", namespace, "--dry-run=server",
        *helm.values_args("", cluster_values=True), "--set", "nodePools.installCRD=true",
        "--kubeconfig", str(cluster.kubeconfig), check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "invalid ownership metadata" in proc.stderr, proc.stderr
    assert _crd_state(cluster) == before


def test_nodepool_crd_of_this_release_stays_managed(helm: Helm, cluster: Cluster) -> None:
    """Once a release installed the CRD (Helm labels and annotates it as that release's), auto keeps
    rendering it for that release, so upgrades update it; for any other release it is someone else's.
    The test cluster's CRD is marked so for a moment, and only server-side dry runs look at it."""
    release, namespace = f"np-{uuid.uuid4().hex[:6]}", f"np-{uuid.uuid4().hex[:6]}"
    ownership = {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace}
    cluster.kubectl("annotate", "crd", NODEPOOL_CRD, *[f"{k}={v}" for k, v in ownership.items()])
    cluster.kubectl("label", "crd", NODEPOOL_CRD, "app.kubernetes.io/managed-by=Helm")
    try:
        ours = _install(helm, cluster, release, namespace, "--dry-run=server")
        assert "NodePool CRD: installed by this release" in ours, ours
        manifest = yaml.safe_load_all(ours.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0])
        assert len(_nodepool_crds([doc for doc in manifest if doc])) == 1
        other = _install(helm, cluster, "other-" + release, namespace, "--dry-run=server")
        assert "NodePool CRD: found an existing" in other, other
    finally:
        cluster.kubectl("annotate", "crd", NODEPOOL_CRD, *[f"{k}-" for k in ownership], check=False)
        cluster.kubectl("label", "crd", NODEPOOL_CRD, "app.kubernetes.io/managed-by-", check=False)
