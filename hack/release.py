"""What a release publishes, and the checks that stop a release whose versions disagree.

    python -m hack.release check --tag v0.1.0 --owner gpu-provisioner [--github-output FILE]
    python -m hack.release notes 0.1.0          # that version's CHANGELOG.md section

``check`` is the first job of .github/workflows/release.yaml. It passes only when the tag, the
package (pyproject.toml, provisioner/__init__.py), the fakes' distribution, the chart (version and
appVersion) and CHANGELOG.md name one version, and when the chart's default image is the one this
repository publishes (``ghcr.io/<owner>/gpu-provisioner``: a fork changes values.yaml first). It
prints, and with ``--github-output`` writes as step outputs, the version, the image and the chart's
OCI repository. Reads files only; ``check`` needs PyYAML, ``notes`` nothing beyond Python.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REGISTRY = "ghcr.io"
IMAGE_NAME = "gpu-provisioner"
CHART_DIR = Path("helm") / "gpu-provisioner"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
_VERSION_LITERAL = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.M)


@dataclass(frozen=True)
class Release:
    version: str
    image: str  # repository, no tag
    chart_repository: str  # oci://... ; `helm push` appends the chart's name

    @property
    def prerelease(self) -> bool:
        return "-" in self.version


def _toml(path: Path) -> dict[str, object]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _yaml(path: Path) -> Any:
    import yaml  # only `check` needs it

    return yaml.safe_load(path.read_text())


def versions(repo: Path = REPO) -> dict[str, str]:
    """Every place that states the project's version -> the version it states."""
    main = _toml(repo / "pyproject.toml")["project"]
    fakes = _toml(repo / "fakes" / "pyproject.toml")["project"]
    chart = _yaml(repo / CHART_DIR / "Chart.yaml")
    assert isinstance(main, dict) and isinstance(fakes, dict) and isinstance(chart, dict)
    found = {
        "pyproject.toml [project].version": str(main["version"]),
        "fakes/pyproject.toml [project].version": str(fakes["version"]),
        "helm/gpu-provisioner/Chart.yaml version": str(chart["version"]),
        "helm/gpu-provisioner/Chart.yaml appVersion": str(chart["appVersion"]),
    }
    literal = _VERSION_LITERAL.search((repo / "provisioner" / "__init__.py").read_text())
    if literal:
        found["provisioner/__init__.py __version__"] = literal.group(1)
    # The two distributions pin each other exactly.
    for where, requirements in (
        ("pyproject.toml extra [fake]", main["optional-dependencies"]["fake"]),  # type: ignore[index]
        ("fakes/pyproject.toml dependencies", fakes["dependencies"]),
    ):
        for requirement in requirements:  # type: ignore[attr-defined]
            m = re.match(r"^(gpu-provisioner(?:-fakes)?)\s*==\s*([^\s;]+)", requirement)
            if m:
                found[f"{where} {m.group(1)}=="] = m.group(2)
    return found


def chart_image(repo: Path = REPO) -> str:
    values = _yaml(repo / CHART_DIR / "values.yaml")
    return str(values["controller"]["image"]["repository"])


def changelog_section(version: str, repo: Path = REPO) -> str | None:
    """The body of CHANGELOG.md's ``## [version]`` section, or None when there is none."""
    text = (repo / "CHANGELOG.md").read_text()
    m = re.search(rf"^## \[{re.escape(version)}\][^\n]*\n(.*?)(?=^## \[|\Z)", text, re.M | re.S)
    return m.group(1).strip() if m else None


def check(tag: str, owner: str | None, repo: Path = REPO) -> tuple[Release | None, list[str]]:
    """The release a tag makes, or every reason it must not be made."""
    problems: list[str] = []
    version = tag[1:] if tag.startswith("v") else tag
    if not tag.startswith("v") or not _SEMVER.match(version):
        problems.append(f"tag {tag!r} is not v<major>.<minor>.<patch>[-<pre-release>]")
    for where, stated in versions(repo).items():
        if stated != version:
            problems.append(f"{where} is {stated!r}, the tag says {version!r}")
    if changelog_section(version, repo) is None:
        problems.append(f"CHANGELOG.md has no '## [{version}]' section")
    image = chart_image(repo)
    if owner is not None:
        expected = f"{REGISTRY}/{owner.lower()}/{IMAGE_NAME}"
        if image != expected:
            problems.append(
                f"the chart's default image (controller.image.repository in {CHART_DIR}/values.yaml) "
                f"is {image!r}, but this repository publishes {expected!r}"
            )
    namespace = image.rsplit("/", 1)[0]
    release = Release(version=version, image=image, chart_repository=f"oci://{namespace}/charts")
    return (None if problems else release), problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.release", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check that a tag may be released; print what it publishes")
    c.add_argument("--tag", required=True, help="the git tag, e.g. v0.1.0")
    c.add_argument("--owner", help="the GitHub repository owner (checks the chart's default image)")
    c.add_argument("--github-output", type=Path, help="append version/image/chart-repository here")
    n = sub.add_parser("notes", help="print a version's CHANGELOG.md section")
    n.add_argument("version")
    args = parser.parse_args(argv)

    if args.command == "notes":
        section = changelog_section(args.version)
        if section is None:
            print(f"release: CHANGELOG.md has no '## [{args.version}]' section", file=sys.stderr)
            return 1
        print(section)
        return 0

    release, problems = check(args.tag, args.owner)
    if release is None:
        for problem in problems:
            print(f"release: {problem}", file=sys.stderr)
        return 1
    outputs = {
        "version": release.version,
        "image": release.image,
        "chart-repository": release.chart_repository,
        "prerelease": str(release.prerelease).lower(),
    }
    lines = "".join(f"{k}={v}\n" for k, v in outputs.items())
    print(lines, end="")
    if args.github_output:
        with args.github_output.open("a") as f:
            f.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
