"""``make demo`` as a newcomer runs it without a terminal: it plays through, exits 0, leaves nothing running.

Each run gets its own ``LOCAL_DIR`` (so its own control plane on free ports, never the test session's
API server nor a ``make cluster-up`` one) and reads stdin from /dev/null, as in CI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 420  # the happy path takes well under a minute; this bounds a hung run
#: Command lines of the processes the demo starts (to tell them from an unrelated reuse of a pid).
OUR_PROCESSES = ("etcd", "kube-apiserver", "fakes.arm", "gpu-provisioner", "provisioner.cli")


def run_demo(local_dir: Path, demo_args: str = "") -> str:
    """``make demo < /dev/null``; returns its output, failing with it on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NODE_")}
    cmd = ["make", "--no-print-directory", "demo", f"LOCAL_DIR={local_dir}", f"DEMO_ARGS={demo_args}"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo stops what it started on SIGTERM
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail(f"make demo did not finish within {RUN_TIMEOUT}s:\n{output}")
    assert proc.returncode == 0, f"make demo exited {proc.returncode}:\n{output}"
    return output


def ours_running(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and any(name in cmdline for name in OUR_PROCESSES)


def assert_phases(output: str, titles: list[str]) -> None:
    """Every phase header, numbered and in order."""
    position = 0
    for n, title in enumerate(titles, start=1):
        header = f"==> {n}/{len(titles)} {title}"
        found = output.find(header, position)
        assert found >= 0, f"phase header {header!r} missing or out of order:\n{output}"
        position = found


def assert_nothing_left(output: str, local_dir: Path) -> None:
    pids = {int(p) for p in re.findall(r"\(pid (\d+)\)", output)}
    # etcd, kube-apiserver, the fake ARM server and at least one controller.
    assert len(pids) >= 4, f"the demo should report the pids it started:\n{output}"
    stopped = output[output.index("==> Cleaning up") :]
    for pid in pids:
        assert f"(pid {pid})" in stopped, f"pid {pid} was started but not reported stopped:\n{stopped}"
    assert not [pid for pid in pids if ours_running(pid)], f"processes left running:\n{output}"
    state = local_dir / "demo"
    assert not (state / "cluster").exists(), "the demo's control plane state should be removed"
    assert not (state / "demo.json").exists()
    assert (state / "logs" / "controller.log").is_file(), "the controller log is kept for reading"


def claim_refs(output: str) -> tuple[str, str]:
    machine = re.search(r"machine\.karpenter\.sh/(ws[0-9a-f]{9}) created", output)
    nodeclaim = re.search(r"nodeclaim\.karpenter\.sh/(ws[0-9a-f]{9}) created", output)
    assert machine and nodeclaim, output
    return machine.group(1), nodeclaim.group(1)


def gpu_nodes(output: str) -> dict[str, tuple[str, str]]:
    """Node listing rows: pool -> (instance type, GPU capacity)."""
    rows = re.findall(
        r"^\s+aks-\S+-vmss\d+\s+True\s+(ws[0-9a-f]{9})\s+(Standard_\S+)\s+\S+\s+(\d+)\s*$",
        output,
        re.MULTILINE,
    )
    return {pool: (sku, gpus) for pool, sku, gpus in rows}


def assert_common(output: str) -> None:
    machine, nodeclaim = claim_refs(output)
    assert f"machine/{machine} Ready after" in output
    assert f"nodeclaim/{nodeclaim} Ready after" in output
    # `kubectl get nodes` shows both nodes Ready with their GPU capacity.
    assert gpu_nodes(output) == {
        machine: ("Standard_NC12s_v3", "2"),
        nodeclaim: ("Standard_NC24ads_A100_v4", "1"),
    }, output
    assert "kubectl get machines,nodeclaims -o wide" in output
    # `kubectl describe` events of both claims.
    for name in (machine, nodeclaim):
        assert re.search(rf"Normal\s+Launched\s+\S+\s+gpu-provisioner\s+launched \S+ instance {name}", output)
        assert re.search(rf"Normal\s+Initialized\s+\S+\s+gpu-provisioner\s+node aks-{name}-", output)
    # Deleted: claims, pools and nodes gone.
    after = output[output.index("claims, agent pools and nodes gone") :]
    assert after.count("No resources found") == 2, after
    assert "Agent pools in the fake subscription:\n      (none)" in after
    assert re.search(r"ARM calls: 2 PUT, 2 DELETE, \d+ GET", output), output
    assert "demo FAILED" not in output


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_make_demo_runs_through_without_a_terminal(tmp_path: Path) -> None:
    output = run_demo(tmp_path)
    assert_phases(
        output,
        [
            "Starting the local control plane",
            "Starting the fake Azure Resource Manager",
            "Starting gpu-provisioner with --cloud azure",
            "Kaito asks for two GPU nodes",
            "What Kubernetes and Azure show",
            "Kaito deletes the workspace",
            "Summary",
        ],
    )
    assert_common(output)
    assert "demo 'happy' passed" in output
    assert "\x1b[" not in output, "no ANSI escapes when stdout is not a terminal"
    assert_nothing_left(output, tmp_path)


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_make_demo_capacity_scenario(tmp_path: Path) -> None:
    output = run_demo(tmp_path, "--scenario capacity")
    assert_phases(
        output,
        [
            "Starting the local control plane",
            "Starting the fake Azure Resource Manager",
            "Starting gpu-provisioner with --cloud azure",
            "Kaito asks for GPU nodes while the A100 quota is used up",
            "The quota request is approved",
            "What Kubernetes and Azure show",
            "Kaito deletes the workspace",
            "Summary",
        ],
    )
    _, nodeclaim = claim_refs(output)
    assert f"{nodeclaim} condition Launched=False" in output
    assert "all requested instance types were unavailable during launch" in output
    assert re.search(r"Warning\s+InsufficientCapacityError", output), output
    assert "no agent pool PUT was sent" in output
    assert_common(output)
    assert_nothing_left(output, tmp_path)


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_make_demo_nodepool_scenario(tmp_path: Path) -> None:
    output = run_demo(tmp_path, "--scenario nodepool")
    assert_phases(
        output,
        [
            "Starting the local control plane",
            "Starting the fake Azure Resource Manager",
            "Starting gpu-provisioner with --cloud azure",
            "Kaito starts: it creates its node classes",
            "Kaito creates the NodePool of workspace phi-4 (2 replicas)",
            "The workspace grows: Kaito raises replicas to 3",
            "Node class image-family-ubuntu moves to AzureLinux",
            "What Kubernetes and Azure show",
            "Kaito deletes the workspace: its NodePool",
            "Summary",
        ],
    )
    assert "node classes Ready" in output
    assert "2 NodeClaims Ready, one agent pool each; NodePool status says 2 nodes" in output
    assert "3 NodeClaims Ready, one agent pool each; NodePool status says 3 nodes" in output
    drift = output[output.index("moves to AzureLinux") : output.index("What Kubernetes and Azure show")]
    old = set(re.findall(r"^\s+(default-phi-4-[a-z0-9]{5}): Drifted=True \(NodeClassDrifted\)$", drift, re.M))
    replaced = dict(
        re.findall(r"^\s+(default-phi-4-[a-z0-9]{5}): launched to replace (default-phi-4-\S+)$", drift, re.M)
    )
    assert len(old) == 3 and set(replaced.values()) == old, drift
    assert "3 NodeClaims replaced one at a time" in drift and "Ready nodes never below 3" in drift
    # The replacements run the new image family: nodes and agent pools say so.
    show = output[
        output.index("What Kubernetes and Azure show") : output.index("Kaito deletes the workspace")
    ]
    nodes = re.findall(
        r"^\s+aks-\S+\s+True\s+\S+\s+Standard_NC24ads_A100_v4\s+\S+\s+CBL-Mariner/Linux\s+1\s*$", show, re.M
    )
    assert len(nodes) == 3, show
    pools = re.findall(
        r"^\s+g\S+\s+Standard_NC24ads_A100_v4\s+1\s+AzureLinux\s+Succeeded\s+phi-4$", show, re.M
    )
    assert len(pools) == 3, show
    for name in old:  # each drifted NodeClaim: its replacement launched, then it was terminated
        assert re.search(rf"^\s+{name}\s+DisruptionLaunching\s", show, re.M), show
        assert re.search(rf"^\s+{name}\s+DisruptionTerminating\s", show, re.M), show
    after = output[output.index("the NodePool, its claims, agent pools and nodes gone") :]
    assert after.count("No resources found") == 2, after
    assert "Agent pools in the fake subscription:\n      (none)" in after
    assert re.search(r"ARM calls: 6 PUT, 6 DELETE, \d+ GET", output), output
    assert "demo 'nodepool' passed" in output
    assert_nothing_left(output, tmp_path)
