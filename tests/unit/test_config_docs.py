"""docs/configuration.md is generated from the settings code and must not drift from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack import gen_config_docs
from provisioner.cli import build_parser
from provisioner.cloud.azure.settings import AzureSettings
from provisioner.settings import Settings

DOC = gen_config_docs.OUTPUT


def test_committed_reference_matches_the_settings_code() -> None:
    assert DOC.exists(), f"{DOC} is missing; run `python -m hack.gen_config_docs`"
    assert DOC.read_text() == gen_config_docs.render(), (
        f"{DOC} is out of date; run `python -m hack.gen_config_docs` (or `make docs`)"
    )


def _rows(text: str, section: str) -> dict[str, str]:
    """Table rows of the ``## <section>...`` part, by the environment variable in their first cell."""
    rows: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line.startswith(f"## {section}")
        elif inside and line.startswith("| `"):
            rows[line.split("|")[1].strip().strip("`")] = line
    assert rows, f"no table rows under '## {section}'"
    return rows


def test_every_controller_setting_is_documented_with_its_flag_and_default() -> None:
    rows = _rows(DOC.read_text(), "Controller")
    for f in Settings.fields():
        row = rows.get(f.metadata["env"])
        assert row is not None, f"{f.metadata['env']} is not in {DOC.name}"
        assert f"`{gen_config_docs.flag(f.name)}`" in row
        assert f.metadata["help"].replace("|", "\\|") in row
        for choice in f.metadata["choices"]:
            assert f"`{choice}`" in row


def test_documented_flags_are_the_flags_the_cli_accepts() -> None:
    controller = build_parser()._subparsers._group_actions[0].choices["controller"]  # type: ignore[union-attr]
    accepted = {option for action in controller._actions for option in action.option_strings}
    for f in Settings.fields():
        assert gen_config_docs.flag(f.name) in accepted


def test_every_azure_setting_is_documented() -> None:
    rows = _rows(DOC.read_text(), "Azure provider")
    for env, _ in AzureSettings.documentation():
        assert env in rows, f"{env} is not in {DOC.name}"
    assert "**required**" in rows["ARM_SUBSCRIPTION_ID"]
    assert "`25`" in rows["AZURE_ARM_RATE_LIMIT"] and "`10`" in rows["AZURE_ARM_WRITE_RATE_LIMIT"]


def test_defaults_are_rendered_as_the_cli_parses_them() -> None:
    rows = _rows(gen_config_docs.render(), "Controller")
    assert "`kaito.sh/workspace,kaito.sh/ragengine`" in rows["CLAIM_SELECTOR_LABELS"]
    assert "(empty)" in rows["INSTANCE_TYPE_ALLOWLIST"]
    assert "`1200`" in rows["REGISTRATION_TIMEOUT_SECONDS"]
    assert "`true`" in rows["LEADER_ELECT"]


def test_check_fails_with_a_diff_when_the_file_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "configuration.md"
    assert gen_config_docs.main(["--check", "--output", str(target)]) == 1  # missing

    assert gen_config_docs.main(["--output", str(target)]) == 0
    assert gen_config_docs.main(["--check", "--output", str(target)]) == 0

    target.write_text(target.read_text().replace("`LOG_FORMAT`", "`LOG_STYLE`"))
    capsys.readouterr()
    assert gen_config_docs.main(["--check", "--output", str(target)]) == 1
    err = capsys.readouterr().err
    assert "-| `LOG_STYLE`" in err and "+| `LOG_FORMAT`" in err
    assert "out of date" in err
