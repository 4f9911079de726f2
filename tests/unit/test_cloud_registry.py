"""Finding cloud providers by name: the bundled fake, and a third-party package installed with pip."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes.cloud import FakeCloud
from provisioner.cloud import (
    CloudProvider,
    ProviderContext,
    ProviderNotFoundError,
    available_providers,
    load_provider,
)


def test_fake_is_registered() -> None:
    assert "fake" in available_providers()


async def test_load_fake_with_context() -> None:
    context = ProviderContext(env={"LOCATION": "southcentralus"}, cluster_name="kaito")
    provider = load_provider("fake", context)
    try:
        assert isinstance(provider, FakeCloud)
        assert isinstance(provider, CloudProvider)
        assert provider.location == "southcentralus"
        assert provider.cluster_name == "kaito"
    finally:
        await provider.close()


def test_unknown_provider_lists_known_names() -> None:
    with pytest.raises(ProviderNotFoundError) as err:
        load_provider("no-such-cloud", ProviderContext())
    message = str(err.value)
    assert "no-such-cloud" in message
    assert "fake" in message
    assert "gpu_provisioner.cloud_providers" in message


# --- a third-party plugin, installed into this venv with pip ---------------------------------

# A PEP 517 backend that writes the wheel itself, so building needs neither network nor any
# build tool (setuptools, wheel) being present in the venv.
_BACKEND = """
import base64, hashlib, re, tomllib, zipfile

MODULE = {module!r}


def _hash(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    dist, version = re.sub(r"[-_.]+", "_", project["name"]), project["version"]
    entry_points = "".join(
        f"[{{group}}]\\n" + "".join(f"{{k}} = {{v}}\\n" for k, v in eps.items()) + "\\n"
        for group, eps in project.get("entry-points", {{}}).items()
    )
    info = f"{{dist}}-{{version}}.dist-info"
    with open(f"{{MODULE}}.py", "rb") as f:
        module = f.read()
    files = {{
        f"{{MODULE}}.py": module,
        f"{{info}}/METADATA": f"Metadata-Version: 2.1\\nName: {{project['name']}}\\nVersion: {{version}}\\n".encode(),
        f"{{info}}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
        f"{{info}}/entry_points.txt": entry_points.encode(),
    }}
    record = "".join(f"{{path}},{{_hash(data)}},{{len(data)}}\\n" for path, data in files.items())
    record += f"{{info}}/RECORD,,\\n"
    name = f"{{dist}}-{{version}}-py3-none-any.whl"
    with zipfile.ZipFile(f"{{wheel_directory}}/{{name}}", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{{info}}/RECORD", record)
    return name
"""

_MODULE = '''
"""A minimal cloud written outside gpu-provisioner."""


class AcmeCloud:
    def __init__(self, context):
        self.context = context

    def instance_name(self, claim_name):
        return claim_name

    def instance_of_node(self, node):
        return None

    async def create(self, request):
        raise NotImplementedError

    async def get(self, name):
        raise NotImplementedError

    async def list(self):
        return []

    async def delete(self, name, *, version=None):
        return None

    async def instance_types(self):
        return []

    async def close(self):
        return None


def not_a_provider(context):
    return object()


def crashing(context):
    raise RuntimeError("no credentials for acme")
'''

# Run in a fresh interpreter so the newly installed entry points and module are seen as a
# freshly started controller would see them.
_PROBE = """
import asyncio, json, sys
from provisioner.cloud import ProviderContext, available_providers, load_provider

names = sys.argv[1:]
out = {"available": available_providers(), "results": {}}
for name in names:
    try:
        provider = load_provider(name, ProviderContext(env={"ACME_REGION": "moon"}, cluster_name="c1"))
    except Exception as e:
        out["results"][name] = {"error": type(e).__name__, "message": str(e)}
    else:
        out["results"][name] = {
            "type": type(provider).__name__,
            "module": type(provider).__module__,
            "env": dict(provider.context.env),
            "cluster": provider.context.cluster_name,
            "listed": asyncio.run(provider.list()),
        }
print(json.dumps(out))
"""


@dataclass
class Plugin:
    dist: str
    module: str
    good: str
    broken: str
    not_provider: str
    crashing: str


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def acme_plugin(tmp_path: Path) -> Iterator[Plugin]:
    suffix = uuid.uuid4().hex[:10]
    plugin = Plugin(
        dist=f"gpu-provisioner-acme-{suffix}",
        module=f"acme_cloud_{suffix}",
        good=f"acme-{suffix}",
        broken=f"acme-{suffix}-broken",
        not_provider=f"acme-{suffix}-notprovider",
        crashing=f"acme-{suffix}-crashing",
    )
    src = tmp_path / "acme"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = []
            build-backend = "acme_backend"
            backend-path = ["."]

            [project]
            name = "{plugin.dist}"
            version = "0.1.0"

            [project.entry-points."gpu_provisioner.cloud_providers"]
            {plugin.good} = "{plugin.module}:AcmeCloud"
            {plugin.broken} = "{plugin.module}_missing:AcmeCloud"
            {plugin.not_provider} = "{plugin.module}:not_a_provider"
            {plugin.crashing} = "{plugin.module}:crashing"
            """
        )
    )
    (src / "acme_backend.py").write_text(_BACKEND.format(module=plugin.module))
    (src / f"{plugin.module}.py").write_text(_MODULE)

    installed = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet", str(src))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        yield plugin
    finally:
        removed = _pip("uninstall", "--yes", "--quiet", plugin.dist)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def _probe(tmp_path: Path, *names: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *names],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_third_party_provider_is_found_by_name(acme_plugin: Plugin, tmp_path: Path) -> None:
    # Entry points are read afresh on every lookup, so even this already running process sees it.
    assert acme_plugin.good in available_providers()

    out = _probe(
        tmp_path, acme_plugin.good, acme_plugin.broken, acme_plugin.not_provider, acme_plugin.crashing
    )
    available = out["available"]
    assert isinstance(available, list)
    assert {"fake", acme_plugin.good, acme_plugin.broken} <= set(available)

    results = out["results"]
    assert isinstance(results, dict)
    assert results[acme_plugin.good] == {
        "type": "AcmeCloud",
        "module": acme_plugin.module,
        "env": {"ACME_REGION": "moon"},
        "cluster": "c1",
        "listed": [],
    }

    broken = results[acme_plugin.broken]
    assert broken["error"] == "ProviderLoadError"
    assert "failed to import" in broken["message"] and f"{acme_plugin.module}_missing" in broken["message"]

    not_provider = results[acme_plugin.not_provider]
    assert not_provider["error"] == "ProviderLoadError"
    assert "does not implement CloudProvider" in not_provider["message"]

    crashing = results[acme_plugin.crashing]
    assert crashing["error"] == "ProviderLoadError"
    assert "no credentials for acme" in crashing["message"]


def test_uninstalled_provider_is_gone(acme_plugin: Plugin, tmp_path: Path) -> None:
    removed = _pip("uninstall", "--yes", "--quiet", acme_plugin.dist)
    assert removed.returncode == 0, removed.stderr
    out = _probe(tmp_path, acme_plugin.good)
    assert acme_plugin.good not in out["available"]  # type: ignore[operator]
    result = out["results"][acme_plugin.good]  # type: ignore[index]
    assert result["error"] == "ProviderNotFoundError"
    assert "fake" in result["message"]
    # Reinstall nothing: the fixture's uninstall must tolerate the package being gone already.
