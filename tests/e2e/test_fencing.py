"""A deposed leader never writes: two replicas, claims in flight, the leader paused (SIGSTOP) past
its Lease or cut off from the API server while it still reaches ARM.

Writes are attributed by the replica's identity (the Lease holder), which both clients put in their
User-Agent: at the fake ARM from its request log, at the API server from its audit log (writes that
were answered below 400, i.e. accepted). The bound is the moment the standby acquired the Lease:
from then on nothing of the old leader may land anywhere.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fakes.kaito import kaito_machine, kaito_nodeclaim
from fakes.skus import FAMILY_DSV3
from provisioner.cloud.azure.ratelimit import MAX_WRITES_IN_FLIGHT
from tests.conftest import Cluster
from tests.e2e.fakearm import FakeArm
from tests.e2e.harness import FAST_SETTINGS, Controller, condition_status, create, get_json, wait_for
from tests.e2e.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

ROUNDS = 6
CLAIMS_PER_ROUND = 20
SIZE = "Standard_D2s_v3"
LEASE = float(FAST_SETTINGS["LEADER_ELECTION_LEASE_SECONDS"])
WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fencing")


@pytest.fixture(scope="module")
def arm(cluster: Cluster, workdir: Path) -> Iterator[FakeArm]:
    config = {
        # Slow enough creates that a pause always finds claims in flight.
        "latency": {"create": 3.0, "update": 0.5, "delete": 1.0},
        "quota": {"*": {FAMILY_DSV3: 100_000, "cores": 100_000}},
        "max_pools_per_cluster": 100 + ROUNDS * CLAIMS_PER_ROUND,
    }
    server = FakeArm(workdir, cluster.kubeconfig, config).start()
    yield server
    server.stop()


def _parse_time(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _lease(cluster: Cluster, ctl: Controller) -> dict[str, Any]:
    lease = get_json(cluster, "lease", "-n", "default", f"gpu-provisioner-{ctl.run_id}")
    return dict((lease or {}).get("spec") or {})


def _holder(cluster: Cluster, ctl: Controller) -> str:
    return str(_lease(cluster, ctl).get("holderIdentity") or "")


def _arm_writes_by(arm: FakeArm, identity: str, since: float) -> list[dict[str, Any]]:
    return [
        r
        for r in arm.requests()
        if r["method"] in WRITES and identity in (r.get("user_agent") or "") and r["timestamp"] >= since
    ]


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _pools_created_before(ctl: Controller, wall: float) -> set[str]:
    """Pools the controller's log says it started creating before ``wall`` (epoch seconds)."""
    names = set()
    for line in ctl.log().splitlines():
        m = re.match(r"(\S+Z) .*creating agent pool (\w+) ", line)
        if m and _parse_time(m.group(1)) < wall:
            names.add(m.group(2))
    return names


def _api_writes_by(cluster: Cluster, identity: str, since: float) -> list[str]:
    assert cluster.audit_log is not None, "set GPU_PROVISIONER_TEST_AUDIT_LOG for a reused cluster"
    accepted = []
    for line in cluster.audit_log.read_text().splitlines():
        e = json.loads(line)
        if identity not in e.get("userAgent", "") or _parse_time(e["stageTimestamp"]) < since:
            continue
        if int((e.get("responseStatus") or {}).get("code") or 0) < 400:
            ref = e.get("objectRef") or {}
            accepted.append(f"{e['verb']} {ref.get('resource')}/{ref.get('name')}")
    return accepted


def _claims(ctl: Controller, tag: str) -> list[dict[str, Any]]:
    bodies = []
    for i in range(CLAIMS_PER_ROUND):
        name = f"wsf{tag}{i:02d}"
        make = kaito_machine if i % 2 else kaito_nodeclaim
        bodies.append(ctl.label(make(name, instance_type=SIZE)))
    return bodies


def _all_ready_one_pool_each(cluster: Cluster, arm: FakeArm, bodies: list[dict[str, Any]]) -> None:
    pending: list[str] = []

    def ready() -> bool:
        pending[:] = [
            b["metadata"]["name"]
            for b in bodies
            if condition_status(get_json(cluster, b["kind"].lower(), b["metadata"]["name"]), "Ready")
            != "True"
        ]
        return not pending

    try:
        wait_for("every claim Ready", ready, 120)
    except AssertionError as e:
        raise AssertionError(f"{e}; not Ready: {pending}") from None
    pools = arm.pools()
    for b in bodies:
        name = b["metadata"]["name"]
        assert name in pools, f"no pool for {name}"
        creates = [r for r in arm.requests("PUT", f"/agentPools/{name}$") if r["status"] < 300]
        assert len(creates) == 1, f"{name}: {len(creates)} accepted pool PUTs"


def _exited_non_zero(ctl: Controller) -> None:
    assert ctl.proc is not None
    wait_for("the deposed leader to exit", lambda: ctl.proc is not None and ctl.proc.poll() is not None, 30)
    assert ctl.proc.returncode != 0, ctl.log()[-3000:]


def _delete_all_and_wait(cluster: Cluster, selector: str) -> None:
    kinds = ("machines.karpenter.sh", "nodeclaims.karpenter.sh")
    for kind in kinds:
        cluster.kubectl("delete", kind, "-l", selector, "--wait=false")
    wait_for(
        "every claim to be gone",
        lambda: all(not (get_json(cluster, kind, "-l", selector) or {}).get("items") for kind in kinds),
        180,
    )


def _leader_and_standby(a: Controller, b: Controller, cluster: Cluster) -> tuple[Controller, Controller, str]:
    holder = wait_for("a lease holder", lambda: _holder(cluster, a), 30)
    leader = a if holder in a.log() else b
    return leader, (b if leader is a else a), holder


def _creates_in_flight(arm: FakeArm, identity: str, bodies: list[dict[str, Any]]) -> None:
    """Wait until the leader has sent the pool PUTs of a few of these claims (the rest queue)."""
    names = {b["metadata"]["name"] for b in bodies}

    def sent() -> int:
        return sum(
            1
            for r in arm.requests("PUT")
            if identity in (r.get("user_agent") or "") and r["path"].rsplit("/", 1)[-1] in names
        )

    wait_for("pool creates in flight", lambda: sent() >= 3, 60)


def _pause_past_the_lease(cluster: Cluster, leader: Controller, identity: str) -> tuple[float, float, float]:
    """SIGSTOP the leader until the standby holds the Lease and the pause lasted lease + 5 s;
    resume it; return when it was paused, when the standby acquired the Lease and when the leader
    was resumed (epoch seconds)."""
    assert leader.proc is not None
    paused_at = time.monotonic()
    leader.proc.send_signal(signal.SIGSTOP)
    wait_for("the leader stopped", lambda: _stopped(leader.proc.pid), 10, 0.01)
    paused_wall = time.time()  # nothing it logs or sends can be later than this until SIGCONT
    try:
        wait_for(
            f"the standby to lead and the pause to last {LEASE + 5:.0f}s",
            lambda: (
                _holder(cluster, leader) not in ("", identity) and time.monotonic() - paused_at >= LEASE + 5
            ),
            60,
        )
    finally:
        resumed_at = time.time()
        leader.proc.send_signal(signal.SIGCONT)
    return paused_wall, _parse_time(str(_lease(cluster, leader)["acquireTime"])), resumed_at


def test_a_paused_leader_writes_nothing_after_it_resumes(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    first = Controller(cluster, workdir, cloud="azure", env=arm.controller_env()).start()
    second = Controller(cluster, workdir, cloud="azure", run_id=first.run_id, env=first.env).start(
        leader=False
    )
    replicas = [first, second]
    try:
        for round_no in range(ROUNDS):
            leader, standby, identity = _leader_and_standby(replicas[0], replicas[1], cluster)
            bodies = _claims(leader, f"{round_no}{leader.run_id[:3]}")
            for body in bodies:
                create(cluster, body)
            _creates_in_flight(arm, identity, bodies)
            paused_at, taken_at, resumed_at = _pause_past_the_lease(cluster, leader, identity)

            _exited_non_zero(leader)
            _all_ready_one_pool_each(cluster, arm, bodies)
            # A stopped process sends nothing: what the paused leader sent after the takeover it
            # sent after it resumed (the fake ARM stamps a request when it gets to it, which can be
            # seconds after it was sent, behind a burst). The gate refuses every write decided
            # after the pause; what had passed it before (at most the writes allowed in flight,
            # the documented limit of fencing) may still go out.
            late = _arm_writes_by(arm, identity, resumed_at)
            decided = _pools_created_before(leader, paused_at)
            assert all(r["path"].rsplit("/", 1)[-1] in decided for r in late), (
                f"round {round_no}: ARM writes decided after the pause: {late}"
            )
            assert len(late) <= MAX_WRITES_IN_FLIGHT, f"round {round_no}: {len(late)} writes past the gate"
            assert not _api_writes_by(cluster, identity, taken_at), (
                f"round {round_no}: API writes after takeover"
            )
            assert "Traceback" not in leader.log()

            # The Deployment would restart it: as a standby now.
            restarted = Controller(cluster, workdir, cloud="azure", run_id=first.run_id, env=first.env)
            replicas = [standby, restarted.start(leader=False)]
            for kind in ("machines.karpenter.sh", "nodeclaims.karpenter.sh"):
                cluster.kubectl("delete", kind, "-l", first.selector, "--wait=false")
        _delete_all_and_wait(cluster, first.selector)
    finally:
        for ctl in replicas:
            ctl.stop()


def _through(proxy: TcpProxy, cluster: Cluster, path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        url = urllib.parse.urlsplit(entry["cluster"]["server"])
        entry["cluster"]["server"] = f"{url.scheme}://127.0.0.1:{proxy.port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_leader_cut_off_from_the_api_server_stops_writing_to_arm(
    cluster: Cluster, arm: FakeArm, workdir: Path
) -> None:
    server = urllib.parse.urlsplit(
        yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    )
    proxy = TcpProxy("127.0.0.1", int(server.port or 443))
    kubeconfig = _through(proxy, cluster, workdir / "kubeconfig-via-proxy")
    leader = Controller(
        cluster, workdir, cloud="azure", env=arm.controller_env(), kubeconfig=kubeconfig
    ).start()
    standby = Controller(cluster, workdir, cloud="azure", run_id=leader.run_id, env=leader.env).start(
        leader=False
    )
    try:
        identity = _holder(cluster, leader)
        assert identity and identity in leader.log()
        bodies = _claims(leader, f"p{leader.run_id[:4]}")
        for body in bodies:
            create(cluster, body)
        _creates_in_flight(arm, identity, bodies)
        proxy.cut()
        wait_for("the standby to lead", lambda: _holder(cluster, standby) not in ("", identity), 60)
        taken_at = _parse_time(str(_lease(cluster, standby)["acquireTime"]))
        _exited_non_zero(leader)
        proxy.heal()
        _all_ready_one_pool_each(cluster, arm, bodies)
        assert not _arm_writes_by(arm, identity, taken_at), "ARM writes after the standby took over"
        assert not _api_writes_by(cluster, identity, taken_at), "API writes after the standby took over"
        assert "Traceback" not in leader.log()
        _delete_all_and_wait(cluster, leader.selector)
    finally:
        leader.stop()
        standby.stop()
        proxy.close()
