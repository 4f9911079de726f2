"""The worked plugin example (examples/cloud-plugin): pip-installed, found by name, driving claims.

The package is installed into this venv the way a user would add a cloud, and the controller is
started with ``--cloud inmemory-example`` as a separate process against the test API server.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.kaito import kaito_machine, random_claim_name
from provisioner.cloud import (
    CloudProvider,
    InstanceRequest,
    InstanceState,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    ProviderContext,
    Throttled,
    Transient,
    available_providers,
    load_factory,
    load_provider,
)
from tests.conftest import Cluster
from tests.e2e.harness import (
    REPO,
    Controller,
    condition_status,
    create,
    delete_and_wait,
    event_reasons,
    get_json,
    wait_for,
)

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "cloud-plugin"
NAME = "inmemory-example"


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _build_wheel(source: Path, out: Path) -> Path:
    """A wheel of ``source`` from its pyproject.toml, for venvs without setuptools/wheel to build one.

    Carries exactly what the declared backend would: the listed packages, the metadata and the
    entry points.
    """
    pyproject = tomllib.loads((source / "pyproject.toml").read_text())
    project = pyproject["project"]
    dist = re.sub(r"[-_.]+", "_", project["name"]).lower()
    version = project["version"]
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in pyproject["tool"]["setuptools"]["packages"]:
        for path in sorted((source / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(source).as_posix()] = path.read_bytes()
    metadata = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {d}\n" for d in project.get("dependencies", ()))
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in project.get("entry-points", {}).items()
    ).encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items()) + f"{info}/RECORD,,\n"
    wheel = out / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install the example into this venv; uninstall it afterwards."""
    dist = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["name"]
    # With its declared build backend when the venv can build offline; else from a wheel made here.
    installed = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(EXAMPLE))
    if installed.returncode != 0:
        wheel = _build_wheel(EXAMPLE, tmp_path_factory.mktemp("wheel"))
        installed = _pip("install", "--no-deps", "--no-index", "--force-reinstall", "--quiet", str(wheel))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    importlib.invalidate_caches()
    try:
        yield dist
    finally:
        sys.modules.pop("inmemory_cloud.provider", None)
        sys.modules.pop("inmemory_cloud", None)
        removed = _pip("uninstall", "--yes", "--quiet", dist)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def _request(name: str, *types: str, uid: str = "uid-1", **kwargs: Any) -> InstanceRequest:
    return InstanceRequest(claim_name=name, claim_uid=uid, name=name, instance_types=types, **kwargs)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_example_implements_the_protocol_and_the_error_taxonomy(plugin: str) -> None:
    assert NAME in available_providers()
    env = {
        "INMEMORY_CAPACITY": "gpu-h100-8=0",
        "INMEMORY_CREATE_SECONDS": "5",
        "INMEMORY_FAIL_TYPES": "cpu-4",
    }
    assert isinstance(load_provider(NAME, ProviderContext(env=env)), CloudProvider)
    factory: Any = load_factory(NAME)  # the class; built here with a clock the test controls
    clock = _Clock()
    cloud = factory(ProviderContext(env=env, cluster_name="c1"), clock=clock)
    try:
        assert cloud.instance_name("ws0123abcd") == "ws0123abcd"
        hashed = cloud.instance_name("Not_A_Valid.Name")
        assert hashed == cloud.instance_name("Not_A_Valid.Name") != "Not_A_Valid.Name"

        # Candidates in order; only capacity moves on to the next one. Returns at once, creating.
        started = await cloud.create(_request("ws1", "gpu-h100-8", "gpu-a100-8"))
        assert (started.instance_type, started.state) == ("gpu-a100-8", InstanceState.CREATING)
        assert started.managed and started.claim_uid == "uid-1"
        assert started.capacity["nvidia.com/gpu"] == "8"
        assert (await cloud.create(_request("ws1", "gpu-h100-8", "gpu-a100-8"))).name == "ws1"  # adopted
        clock.now += 5
        assert (await cloud.get("ws1")).state == InstanceState.RUNNING
        assert [i.name for i in await cloud.list()] == ["ws1"]

        with pytest.raises(Transient):  # same name, another claim
            await cloud.create(_request("ws1", "gpu-a100-8", uid="uid-2"))
        with pytest.raises(InsufficientCapacity) as short:
            await cloud.create(_request("ws2", "gpu-h100-8"))
        assert (short.value.code, short.value.family) == ("CapacityExhausted", "h100")
        with pytest.raises(InvalidSpec):
            await cloud.create(_request("ws3", "no-such-size"))
        with pytest.raises(InvalidSpec):
            await cloud.create(_request("ws3", "gpu-a100-1", zones=("mars-1",)))

        # A failure found after the create was accepted arrives as state FAILED with the error.
        await cloud.create(_request("ws4", "cpu-4"))
        clock.now += 5
        failed = await cloud.get("ws4")
        assert failed.state == InstanceState.FAILED and isinstance(failed.failure, InsufficientCapacity)

        await cloud.delete("ws1")
        await cloud.delete("ws1")  # idempotent
        await cloud.delete("never-created")
        with pytest.raises(NotFound):
            await cloud.get("ws1")

        warnings = cloud.warnings(_request("ws5", "cpu-4", labels={"inmemory.example.com/x": "y"}))
        assert len(warnings) == 1 and "inmemory.example.com/x" in warnings[0]
        assert await cloud.check() == (True, "1 instances")
    finally:
        await cloud.close()

    throttled = factory(ProviderContext(env={"INMEMORY_RATE_LIMIT": "1"}), clock=clock)
    await throttled.list()
    with pytest.raises(Throttled) as slow_down:
        await throttled.list()
    assert slow_down.value.retry_after is not None and 0 < slow_down.value.retry_after <= 1
    clock.now += 1
    await throttled.list()  # a token again after a second


@pytest.fixture
def controller(plugin: str, cluster: Cluster, tmp_path: Path) -> Iterator[Controller]:
    ctl = Controller(
        cluster,
        tmp_path,
        cloud=NAME,
        env={"INMEMORY_CAPACITY": "gpu-h100-8=0", "INMEMORY_CREATE_SECONDS": "1"},
    ).start()
    yield ctl
    ctl.stop()


def _launched(cluster: Cluster, name: str) -> dict[str, Any] | None:
    machine = get_json(cluster, "machine", name)
    return machine if condition_status(machine, "MachineLaunched") == "True" else None


def test_controller_runs_with_the_installed_plugin(cluster: Cluster, controller: Controller) -> None:
    assert f"controller started (cloud={NAME}" in controller.log()

    name = random_claim_name()
    create(cluster, controller.label(kaito_machine(name, instance_type="gpu-a100-1")))
    machine = wait_for(f"machine {name} launched", lambda: _launched(cluster, name))
    assert machine["status"]["providerID"] == f"inmemory:///cluster/zone-1/{name}"
    assert machine["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert machine["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "gpu-a100-1"
    assert "Launched" in event_reasons(cluster, name)

    # Two candidates, the first without capacity: the plugin falls back, the claim records the size.
    fallback = kaito_machine(random_claim_name(), instance_type="gpu-h100-8")
    for req in fallback["spec"]["requirements"]:
        if req["key"] == "node.kubernetes.io/instance-type":
            req["values"] = ["gpu-h100-8", "gpu-a100-8"]
    create(cluster, controller.label(fallback))
    other = fallback["metadata"]["name"]
    launched = wait_for(f"machine {other} launched", lambda: _launched(cluster, other))
    assert launched["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "gpu-a100-8"

    status, body = controller.get("/readyz")
    assert status == 200, body
    status, metrics = controller.get("/metrics")
    assert status == 200
    assert (
        f'gpu_provisioner_cloud_request_duration_seconds_count{{operation="create",provider="{NAME}"}}'
        in metrics
    )

    # Termination goes through the plugin's get/delete until it reports the instance gone.
    delete_and_wait(cluster, "machine", name)
    delete_and_wait(cluster, "machine", other)
