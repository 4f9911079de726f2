"""The release, as far as it runs without a container registry: the workflow passes actionlint, and
the image's Python steps (Dockerfile) run here for real.

The image build itself needs the base image from Docker Hub, which this test does not reach, so it
repeats the Dockerfile's steps on the host's Python: the build backend and the dependencies from
the lock files with ``--require-hashes --only-binary=:all:`` into fresh virtualenvs, the wheel built
with ``--no-build-isolation``, installed with ``--no-deps``, ``pip check``, the CLI run from outside
the source tree. The arm64 half is checked by downloading every locked wheel for linux/aarch64.
Virtualenvs and downloads are cached by the lock file's hash, so a second run only rebuilds the wheel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from hack.cluster import build_tools

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("GPU_PROVISIONER_CACHE", Path.home() / ".cache" / "gpu-provisioner"))
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Debian bookworm (the image's base) has glibc 2.36: it takes manylinux wheels up to 2_36.
AARCH64_PLATFORMS = [f"manylinux_2_{v}_aarch64" for v in range(17, 37)] + ["manylinux2014_aarch64"]


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {proc.returncode}\nstdout: {proc.stdout[-4000:]}\n"
            f"stderr: {proc.stderr[-4000:]}"
        )
    return proc


def lock_key(*names: str) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update((REPO / name).read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def locked_venv(kind: str, lock: str) -> Path:
    """A virtualenv holding exactly ``lock``, installed as the Dockerfile does; cached by its hash."""
    venv = CACHE / "release-check" / f"{kind}-{lock_key(lock)}"
    done = venv / ".complete"
    if not done.exists():
        shutil.rmtree(venv, ignore_errors=True)
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--require-hashes", "--no-deps", "--only-binary=:all:", "-r", REPO / lock)  # fmt: skip
        done.touch()
    return venv


@pytest.fixture(scope="module")
def production_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The controller's wheel, built as the image builds it (pinned backend, no build isolation)."""
    builder = locked_venv("build", "requirements-build.lock")
    src = tmp_path_factory.mktemp("src")
    # A copy of what .dockerignore lets in, so the build writes nothing into the work tree.
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "provisioner", src / "provisioner", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    run(builder / "bin" / "python", "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-build-isolation", "--wheel-dir", dist, src)  # fmt: skip
    (wheel,) = dist.glob("gpu_provisioner-*.whl")
    assert wheel.name == f"gpu_provisioner-{VERSION}-py3-none-any.whl"
    return wheel


@pytest.fixture(scope="module")
def image_venv(production_wheel: Path) -> Path:
    venv = locked_venv("runtime", "requirements.lock")
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--force-reinstall", production_wheel)  # fmt: skip
    return venv


def test_release_workflow_passes_actionlint() -> None:
    actionlint = build_tools("actionlint")["actionlint"] / "actionlint"
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    proc = subprocess.run(
        [str(actionlint), "-no-color", "-oneline", *map(str, workflows)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"actionlint found problems:\n{proc.stdout}{proc.stderr}"


def test_production_wheel_has_no_test_code(production_wheel: Path) -> None:
    names = zipfile.ZipFile(production_wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"provisioner", f"gpu_provisioner-{VERSION}.dist-info"}
    info = f"gpu_provisioner-{VERSION}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(production_wheel).read(f"{info}/entry_points.txt").decode()
    assert "azure = provisioner.cloud.azure:AzureCloud" in entry_points
    assert "fake" not in entry_points
    metadata = zipfile.ZipFile(production_wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "Provides-Extra: fake" in metadata


def test_image_python_steps_install_and_run(image_venv: Path, tmp_path: Path) -> None:
    python, cli = image_venv / "bin" / "python", image_venv / "bin" / "gpu-provisioner"
    run(python, "-m", "pip", "check", "--disable-pip-version-check")
    # Outside the source tree, as in the image: the fakes are nowhere to be imported.
    assert run(cli, "version", cwd=tmp_path).stdout.strip() == f"gpu-provisioner {VERSION}"
    assert "--cloud" in run(cli, "controller", "--help", cwd=tmp_path).stdout
    probe = run(
        python,
        "-c",
        "import importlib.util, importlib.metadata as m; import provisioner.operator, provisioner.cloud.azure;"
        "print(importlib.util.find_spec('fakes') is None,"
        " sorted(e.name for e in m.entry_points(group='gpu_provisioner.cloud_providers')))",
        cwd=tmp_path,
    )
    assert probe.stdout.split(maxsplit=1) == ["True", "['azure']\n"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "ARM_", "AZURE_"))}
    proc = subprocess.run(
        [str(cli), "controller", "--cloud", "fake"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'fake'" in lines[0] and "Traceback" not in proc.stderr
    # It says what is missing and how to install it.
    assert "gpu-provisioner-fakes" in lines[0] and "pip install" in lines[0], lines[0]


def test_every_locked_dependency_has_an_arm64_wheel(tmp_path: Path) -> None:
    marker = CACHE / "release-check" / f"aarch64-{lock_key('requirements.lock', 'requirements-build.lock')}"
    if marker.exists():
        return
    for lock in ["requirements.lock", "requirements-build.lock"]:
        platforms = [arg for p in AARCH64_PLATFORMS for arg in ("--platform", p)]
        run(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", *platforms, "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", "--require-hashes", "--no-deps", "-r", REPO / lock, "-d", tmp_path / lock)  # fmt: skip
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
