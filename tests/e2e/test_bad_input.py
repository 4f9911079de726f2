"""Generated claims against the real controller (``--cloud azure``), the fake ARM and the API server.

Hypothesis builds Kaito Machines and NodeClaims and spoils some of them in the ways users and
operators do: unknown VM sizes, storage quantities the CRD pattern lets through but no disk can
have, labels and taints Kubernetes would refuse, claims that are another controller's. Each case
knows what it should come to, decided by how it was built (never by asking the code under test):

* ``valid``: Ready on an agent pool of its own;
* ``invalid``: a False launch condition and a ``LaunchFailed`` Event, and not one pool PUT;
* ``foreign``: untouched (no finalizer of ours, no pool).

Whatever the API server refuses is dropped; the rest must hold with no traceback in the controller
log, and after deleting them all no pool and no Node is left. ``make test`` runs a small batch;
``make fuzz`` (``BAD_INPUT_CLAIMS=300``) the large one.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from fakes.kaito import kaito_machine, kaito_nodeclaim
from fakes.skus import FAMILY_DSV3
from provisioner.claims.model import MANAGED_BY_ANNOTATION, TERMINATION_FINALIZER
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import Controller, conditions, get_json, wait_for

pytestmark = pytest.mark.e2e

#: Claims the API server must accept in one run (``make fuzz`` sets 300).
CLAIMS = int(os.environ.get("BAD_INPUT_CLAIMS", "24"))
SIZES = ("Standard_D2s_v3", "Standard_D4s_v3", "Standard_D8s_v3")
#: Where a claim names its VM size: the instance type, else (Kaito's NodeClaims) the Azure SKU name.
INSTANCE_TYPE_KEYS = ("node.kubernetes.io/instance-type", "karpenter.azure.com/sku-name")
LAUNCHED = {"Machine": "MachineLaunched", "NodeClaim": "Launched"}
PLURAL = {"Machine": ("v1alpha5", "machines"), "NodeClaim": ("v1", "nodeclaims")}

Verdict = Literal["valid", "invalid", "foreign"]
Body = dict[str, Any]
Mutation = tuple[Verdict, str, Callable[[Body], None]]


@dataclass
class Case:
    body: Body
    verdict: Verdict = "valid"
    why: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def apply(self, mutation: Mutation) -> None:
        verdict, why, change = mutation
        change(self.body)
        self.why.append(why)
        rank = {"valid": 0, "invalid": 1, "foreign": 2}  # a foreign claim is never judged at all
        if rank[verdict] > rank[self.verdict]:
            self.verdict = verdict


# --- building blocks -----------------------------------------------------------------------------

_name = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,14}[A-Za-z0-9])?\Z")
_prefix = st.sampled_from(["", "example.com/", "team.example.org/", "a-b.c/"])
label_key = st.builds(lambda p, n: p + n, _prefix, _name)
label_value = st.one_of(st.just(""), _name)
bad_value = st.sampled_from(["café", "a b", "x" * 64, "-lead", "trail.", "semi;colon"])
bad_key = st.sampled_from(["bad key", "Example.COM/team", "a/b/c", "k" * 64, "/empty-prefix", "pre.fix/"])
bad_storage = st.sampled_from(["1e1000010", "5e99999999", "4096Gi", "2049Gi", "-1", "0", "1e40"])
effect = st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"])


def _requirement(key: str, operator: str, *values: str) -> Callable[[Body], None]:
    return lambda b: b["spec"]["requirements"].append(
        {"key": key, "operator": operator, "values": list(values)}
    )


def _set(path: tuple[str, ...], value: Any) -> Callable[[Body], None]:
    def change(b: Body) -> None:
        target = b
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value

    return change


def _append(field_name: str, item: Body) -> Callable[[Body], None]:
    return lambda b: b["spec"].setdefault(field_name, []).append(item)


def _instance_types(*sizes: str) -> Callable[[Body], None]:
    def change(b: Body) -> None:
        for r in b["spec"]["requirements"]:
            if r["key"] in INSTANCE_TYPE_KEYS:
                r["values"] = list(sizes)

    return change


def _drop_instance_type(b: Body) -> None:
    b["spec"]["requirements"] = [r for r in b["spec"]["requirements"] if r["key"] not in INSTANCE_TYPE_KEYS]


valid_mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.builds(
        lambda k, v: ("valid", f"label {k}={v}", _set(("metadata", "labels", k), v)), label_key, label_value
    ),
    st.builds(
        lambda k, v: ("valid", f"requirement {k} In [{v}]", _requirement(k, "In", v)), label_key, label_value
    ),
    st.builds(
        lambda k, vs: ("valid", f"requirement {k} NotIn {vs}", _requirement(k, "NotIn", *vs)),
        label_key,
        st.lists(_name, min_size=1, max_size=3),
    ),
    st.builds(
        lambda k, v, e: (
            "valid",
            f"taint {k}={v}:{e}",
            _append("taints", {"key": k, "value": v, "effect": e}),
        ),
        label_key,
        label_value,
        effect,
    ),
    st.builds(
        lambda gib: (
            "valid",
            f"storage {gib}Gi",
            _set(("spec", "resources", "requests", "storage"), f"{gib}Gi"),
        ),
        st.integers(min_value=1, max_value=1024),
    ),
    st.builds(
        lambda sizes: ("valid", f"instance types {sizes}", _instance_types(*sizes)),
        st.lists(st.sampled_from(SIZES), min_size=1, max_size=3, unique=True),
    ),
    st.builds(
        lambda size: ("valid", f"unknown size before {size}", _instance_types("Standard_Bogus_v9", size)),
        st.sampled_from(SIZES),
    ),
)

invalid_mutations: st.SearchStrategy[Mutation] = st.one_of(
    st.just(("invalid", "unknown VM size", _instance_types("Standard_Bogus_v9"))),
    st.just(("invalid", "no instance type", _drop_instance_type)),
    st.builds(
        lambda s: ("invalid", f"storage {s}", _set(("spec", "resources", "requests", "storage"), s)),
        bad_storage,
    ),
    # Under a prefix of their own: a valid label of the same key must not override them.
    st.builds(
        lambda n, v: ("invalid", f"label value {v!r}", _requirement(f"bad.example.net/{n}", "In", v)),
        _name,
        bad_value,
    ),
    st.builds(lambda k: ("invalid", f"label key {k!r}", _requirement(k, "In", "v")), bad_key),
    st.builds(
        lambda f, k, e: ("invalid", f"{f} key {k!r}", _append(f, {"key": k, "effect": e})),
        st.sampled_from(["taints", "startupTaints"]),
        st.one_of(bad_key, st.just("k" * 300)),
        effect,
    ),
    st.builds(
        lambda f, v: (
            "invalid",
            f"{f} value {v!r}",
            _append(f, {"key": "sku", "value": v, "effect": "NoSchedule"}),
        ),
        st.sampled_from(["taints", "startupTaints"]),
        bad_value,
    ),
    st.builds(
        lambda f, e: (
            "invalid",
            f"{f} effect {e!r}",
            _append(f, {"key": "sku", "value": "gpu", "effect": e}),
        ),
        st.sampled_from(["taints", "startupTaints"]),
        st.sampled_from(["Bogus", "noschedule", ""]),
    ),
)

foreign_mutations: st.SearchStrategy[Mutation] = st.sampled_from(
    [
        (
            "foreign",
            "managed by another controller",
            _set(("metadata", "annotations", MANAGED_BY_ANNOTATION), "other"),
        ),
    ]
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    name = "wsz" + secrets.token_hex(4)
    body = draw(st.sampled_from([kaito_machine, kaito_nodeclaim]))(
        name, instance_type=draw(st.sampled_from(SIZES))
    )
    case = Case(body)
    for mutation in draw(st.lists(valid_mutations, max_size=3)):
        case.apply(mutation)
    roll = draw(st.integers(min_value=0, max_value=9))
    if roll < 4:
        case.apply(draw(invalid_mutations))
    elif roll == 4:
        if case.kind == "NodeClaim" and draw(st.booleans()):
            case.apply(("foreign", "node class of another provider", _foreign_node_class))
        else:
            case.apply(draw(foreign_mutations))
    return case


def _foreign_node_class(b: Body) -> None:
    b["spec"]["nodeClassRef"] = {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}


# --- the run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    # AKS allows 100 agent pools per cluster; a large batch has more valid claims than that, and
    # the pool cap is not what this test is about.
    config = {
        "max_pools_per_cluster": 100 + CLAIMS,
        "latency": {"create": 0.5, "update": 0.3, "delete": 0.5},
        "quota": {"*": {FAMILY_DSV3: 1_000_000, "cores": 1_000_000}},
    }
    server = FakeArm(workdir, cluster.kubeconfig, config).start()
    yield server
    server.stop()


def _submit(api: CustomObjectsApi, case: Case) -> bool:
    """Create the claim; False when the API server refuses it."""
    version, plural = PLURAL[case.kind]
    try:
        api.create_cluster_custom_object("karpenter.sh", version, plural, case.body)
    except ApiException as e:
        if e.status in (400, 422):
            return False
        raise
    return True


def _claims(cluster: Cluster, kind: str, selector: str) -> dict[str, Body]:
    data = get_json(cluster, f"{kind.lower()}s.karpenter.sh", "-l", selector) or {}
    return {o["metadata"]["name"]: o for o in data.get("items") or ()}


def _events_by_claim(cluster: Cluster) -> dict[str, list[Body]]:
    data = get_json(cluster, "events", "-n", "default") or {}
    out: dict[str, list[Body]] = {}
    for e in data.get("items") or ():
        out.setdefault(e["involvedObject"]["name"], []).append(e)
    return out


@pytest.mark.timeout(600 + 6 * CLAIMS)
def test_generated_claims_end_as_their_construction_says(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    ctl = Controller(cluster, workdir, cloud="azure", env=arm.controller_env()).start()
    api = CustomObjectsApi(cluster.api_client())
    accepted: list[Case] = []
    refused: list[Case] = []

    # Each example is one claim sent to the API server (milliseconds); the controller works on
    # them meanwhile, and the whole batch is judged once it is in.
    @settings(
        max_examples=4 * CLAIMS,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: the verdicts are judged after the batch
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def submit(case: Case) -> None:
        if len(accepted) >= CLAIMS:
            return
        ctl.label(case.body)
        (accepted if _submit(api, case) else refused).append(case)

    try:
        submit()
        assert len(accepted) == CLAIMS, (
            f"only {len(accepted)} of {CLAIMS} claims accepted ({len(refused)} refused)"
        )
        by_verdict = {v: [c for c in accepted if c.verdict == v] for v in ("valid", "invalid", "foreign")}
        print(  # the run's shape, for the log of a failed run
            f"{CLAIMS} accepted, {len(refused)} refused: "
            + ", ".join(f"{len(v)} {k}" for k, v in by_verdict.items())
        )
        assert by_verdict["valid"] and by_verdict["invalid"], (
            "the batch must have both valid and invalid claims"
        )

        def judged() -> list[str] | None:
            claims = {
                **_claims(cluster, "Machine", ctl.selector),
                **_claims(cluster, "NodeClaim", ctl.selector),
            }
            events = _events_by_claim(cluster)
            pending = []
            for c in accepted:
                body = claims.get(c.name) or {}
                got = conditions(body)
                if c.verdict == "valid" and (got.get("Ready") or {}).get("status") != "True":
                    pending.append(f"{c.name} not Ready: {c.why} {got.get(LAUNCHED[c.kind])}")
                if c.verdict == "invalid":
                    launched = got.get(LAUNCHED[c.kind]) or {}
                    warned = any(
                        e["type"] == "Warning" and e["reason"] == "LaunchFailed"
                        for e in events.get(c.name, ())
                    )
                    if launched.get("status") != "False" or not warned:
                        pending.append(f"{c.name} not refused: {c.why} {launched} warned={warned}")
            return pending or None

        timeout = 60 + CLAIMS
        deadline = time.monotonic() + timeout
        while (left := judged()) is not None and time.monotonic() < deadline:
            time.sleep(1)
        assert left is None, f"after {timeout:.0f}s: {json.dumps(left[:20], indent=1)}"

        for c in by_verdict["invalid"] + by_verdict["foreign"]:
            assert arm.count("PUT", c.name) == 0, f"{c.name} ({c.why}) cost a pool PUT"
        for c in by_verdict["foreign"]:
            body = get_json(cluster, f"{c.kind.lower()}s.karpenter.sh", c.name) or {}
            assert TERMINATION_FINALIZER not in (body["metadata"].get("finalizers") or ()), c.why
            assert not conditions(body), f"a foreign claim was written to: {c.why}"
        assert "Traceback" not in ctl.log(), ctl.log()[-6000:]

        for kind in ("machines.karpenter.sh", "nodeclaims.karpenter.sh"):
            cluster.kubectl("delete", kind, "-l", ctl.selector, "--wait=false")
        wait_for(
            "every claim to be gone",
            lambda: (
                not _claims(cluster, "Machine", ctl.selector)
                and not _claims(cluster, "NodeClaim", ctl.selector)
            ),
            120 + CLAIMS,
        )
        names = {c.name for c in accepted}
        wait_for("every pool to be gone", lambda: not (names & set(arm.pools())), 120)

        def node_pools() -> set[str]:
            nodes = get_json(cluster, "nodes") or {}
            return {
                (n["metadata"].get("labels") or {}).get("kubernetes.azure.com/agentpool", "")
                for n in nodes["items"]
            }

        wait_for("every node to be gone", lambda: not (names & node_pools()), 120)
        assert "Traceback" not in ctl.log(), ctl.log()[-6000:]
    finally:
        ctl.stop()
