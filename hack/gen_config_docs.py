"""Render docs/configuration.md from the settings code.

    python -m hack.gen_config_docs            # (re)write docs/configuration.md
    python -m hack.gen_config_docs --check    # exit 1 with a diff when the file is out of date

The controller settings come from ``provisioner.settings.Settings`` (env name, flag, default, help,
choices; sections from the ``# -- <title>`` comments in the class body) and the AKS provider's from
``provisioner.cloud.azure.settings.AzureSettings`` (its ``documentation()`` and field defaults).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provisioner.cloud.azure.settings import AzureSettings
from provisioner.settings import Settings

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "configuration.md"
COMMAND = "python -m hack.gen_config_docs"

_SECTION = re.compile(r"^\s*# -- (?P<title>.+?)\s*$")
_FIELD = re.compile(r"^\s*(?P<name>[a-z_][a-z0-9_]*)\s*:")
_FIRST_SECTION = "General"


def flag(field_name: str) -> str:
    """The command-line flag of a setting (the CLI builds it the same way)."""
    return "--" + field_name.replace("_", "-")


def _sections() -> dict[str, str]:
    """Field name -> the ``# -- title`` comment above it in ``Settings`` (``General`` before any)."""
    current = _FIRST_SECTION
    names = {f.name for f in Settings.fields()}
    out: dict[str, str] = {}
    for line in inspect.getsource(Settings).splitlines():
        section = _SECTION.match(line)
        if section:
            current = section["title"][:1].upper() + section["title"][1:]
            continue
        declared = _FIELD.match(line)
        if declared and declared["name"] in names and declared["name"] not in out:
            out[declared["name"]] = current
    return out


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped, ``<...>`` kept literal (not read as HTML), one line."""
    return re.sub(r"([|<>])", r"\\\1", text).replace("\n", " ")


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "(empty)"
    if isinstance(value, float):
        return f"`{value:g}`"
    if value is None or value == "":
        return "(empty)"
    return f"`{value}`"


def _kind(f: dataclasses.Field[Any]) -> str:
    default = f.default
    if f.metadata.get("choices"):
        return "choice"
    if isinstance(default, bool):
        return "boolean"
    if isinstance(default, tuple):
        return "list"
    if isinstance(default, float):
        return "seconds" if f.metadata["env"].endswith("_SECONDS") else "number"
    if isinstance(default, int):
        return "integer"
    return "string"


def _controller_section() -> list[str]:
    sections = _sections()
    grouped: dict[str, list[dataclasses.Field[Any]]] = {}
    for f in Settings.fields():
        grouped.setdefault(sections.get(f.name, _FIRST_SECTION), []).append(f)
    lines = [
        "## Controller",
        "",
        "Read by `gpu-provisioner controller`. Each setting is an environment variable and a flag; a flag",
        "given on the command line wins over the environment. `--kubeconfig PATH` (default `$KUBECONFIG`,",
        "then in-cluster credentials) is a flag only.",
        "",
        "Values: lists are comma-separated (an empty value means none); booleans accept",
        "`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`; durations are seconds and may be fractional.",
        "Every invalid value is reported at start-up, one line each, and the process exits with status 2.",
    ]
    for title, fields in grouped.items():
        lines += [
            "",
            f"### {title}",
            "",
            "| Environment variable | Flag | Type | Default | Description |",
            "|---|---|---|---|---|",
        ]
        for f in fields:
            description = f.metadata["help"]
            if f.metadata.get("choices"):
                description += " One of " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
            lines.append(
                f"| `{f.metadata['env']}` | `{flag(f.name)}` | {_kind(f)} | {_format_default(f.default)} "
                f"| {_cell(description)} |"
            )
    return lines


def _azure_default(f: dataclasses.Field[Any]) -> str:
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "**required**"
    if f.default is dataclasses.MISSING:
        value = f.default_factory()
        return "(none)" if not value else _format_default(value)
    if f.default is None:
        return "(unset)"
    return _format_default(f.default)


def _azure_section() -> list[str]:
    by_env = {f.metadata["env"]: f for f in dataclasses.fields(AzureSettings)}
    lines = [
        "## Azure provider (`--cloud azure`)",
        "",
        "Read from the environment only (no flags) when the `azure` provider starts; the first invalid",
        "or missing value stops the controller with a message naming it. `AZURE_CLUSTER_NAME` is the",
        "controller's `--cluster-name`; setting either satisfies it.",
        "",
        "| Environment variable | Default | Description |",
        "|---|---|---|",
    ]
    for env, doc in AzureSettings.documentation():
        lines.append(f"| `{env}` | {_azure_default(by_env[env])} | {_cell(doc)} |")
    return lines


def render() -> str:
    lines = [
        f"<!-- Generated by `{COMMAND}` (`make docs`) from provisioner/settings.py and",
        "     provisioner/cloud/azure/settings.py. Do not edit by hand; a unit test fails when it drifts. -->",
        "",
        "# Configuration reference",
        "",
        *_controller_section(),
        "",
        *_azure_section(),
        "",
        "## Other providers",
        "",
        "A cloud plugin reads its own settings from the same environment (it receives them as",
        "`ProviderContext.env`); see [plugins.md](plugins.md). The offline `fake` provider documents its",
        "`FAKE_CLOUD_*` and `FAKE_NODE_*` variables in `fakes/cloud.py` and `fakes/simulator.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="Exit 1 with a diff if the file is out of date.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"Default: {OUTPUT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    path: Path = args.output
    wanted = render()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current == wanted:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            fromfile=f"{path} (committed)",
            tofile=f"{path} (generated)",
        )
        sys.stderr.write("".join(diff))
        sys.stderr.write(f"\n{path} is out of date; run `{COMMAND}` (or `make docs`).\n")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
