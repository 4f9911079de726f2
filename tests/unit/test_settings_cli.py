"""Settings from the environment and the command line built from them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from provisioner import __version__, cli
from provisioner.settings import Settings, SettingsError

ENV_NAMES = [f.metadata["env"] for f in Settings.fields()]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


# ================================================================================ settings


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    s.validate()
    assert s.cloud in ("azure", "fake")
    assert s.claim_labels == ("kaito.sh/workspace", "kaito.sh/ragengine")
    assert s.claim_node_class_kinds == ("KaitoNodeClass",)
    assert s.instance_type_allowlist == ()
    assert s.registration_timeout == 1200.0  # 20 minutes
    assert s.not_ready_repair_after == 600.0  # 10 minutes
    assert s.delete_on_insufficient_capacity is False
    assert s.workers >= 1


def test_every_setting_has_a_unique_env_name_and_help() -> None:
    assert len(set(ENV_NAMES)) == len(ENV_NAMES)
    for f in Settings.fields():
        assert f.metadata["help"]
        assert f.metadata["env"].isupper()


def test_values_are_parsed_by_type() -> None:
    s = Settings.from_env(
        {
            "CLOUD_PROVIDER": "azure",
            "AZURE_CLUSTER_NAME": "aks-gpu",
            "CLAIM_SELECTOR_LABELS": " team , kaito.sh/workspace,, ",
            "INSTANCE_TYPE_ALLOWLIST": "Standard_NC24ads_A100_v4,Standard_NC12s_v3",
            "REGISTRATION_TIMEOUT_SECONDS": "90.5",
            "DELETE_ON_INSUFFICIENT_CAPACITY": "true",
            "WORKERS": "3",
            "LOG_FORMAT": "json",
        }
    )
    assert s.cloud == "azure"
    assert s.cluster_name == "aks-gpu"
    assert s.claim_labels == ("team", "kaito.sh/workspace")
    assert s.instance_type_allowlist == ("Standard_NC24ads_A100_v4", "Standard_NC12s_v3")
    assert s.registration_timeout == 90.5
    assert s.delete_on_insufficient_capacity is True
    assert s.workers == 3
    assert s.log_format == "json"


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", True), ("yes", True), ("ON", True), ("True", True), ("0", False), ("no", False), ("off", False)],
)
def test_boolean_spellings(raw: str, value: bool) -> None:
    assert (
        Settings.from_env({"DELETE_ON_INSUFFICIENT_CAPACITY": raw}).delete_on_insufficient_capacity is value
    )


def test_empty_values_mean_default() -> None:
    assert Settings.from_env({"WORKERS": "", "LOG_LEVEL": ""}) == Settings()


def test_empty_list_means_none() -> None:
    s = Settings.from_env({"CLAIM_SELECTOR_LABELS": "", "INSTANCE_TYPE_ALLOWLIST": ""})
    assert s.claim_labels == ()
    assert s.instance_type_allowlist == ()


def test_overrides_win_over_environment() -> None:
    s = Settings.from_env({"WORKERS": "3"}, workers=5, cloud=None)
    assert s.workers == 5
    assert s.cloud == Settings().cloud


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("WORKERS", "many"),
        ("WORKERS", "2.5"),
        ("WORKERS", "0"),
        ("REGISTRATION_TIMEOUT_SECONDS", "20m"),
        ("GC_INTERVAL_SECONDS", "-1"),
        ("NOT_READY_REPAIR_SECONDS", "-600"),
        ("DELETE_ON_INSUFFICIENT_CAPACITY", "maybe"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_PORT", "70000"),
        ("HEALTH_PORT", "http"),
        ("LEADER_ELECT", "sometimes"),
    ],
)
def test_bad_value_names_its_variable(env: str, value: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({env: value})
    assert env in str(e.value)
    assert value in str(e.value)


def test_leader_election_timings_must_be_ordered() -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"LEADER_ELECTION_RENEW_SECONDS": "20"})
    assert "LEADER_ELECTION_RENEW_SECONDS" in str(e.value)
    relaxed = Settings.from_env({"LEADER_ELECT": "false", "LEADER_ELECTION_RENEW_SECONDS": "20"})
    assert relaxed.leader_elect is False


@pytest.mark.parametrize(
    ("retry", "renew", "lease"), [("2", "10", "11"), ("2", "10", "12"), ("5", "10", "15")]
)
def test_a_leader_must_stop_before_a_standby_may_take_over(retry: str, renew: str, lease: str) -> None:
    """A leader that cannot renew stops renew seconds after its last renewal, noticed up to one retry
    period late; a standby takes over lease seconds after it. retry + renew must be below lease."""
    env = {
        "LEADER_ELECTION_RETRY_SECONDS": retry,
        "LEADER_ELECTION_RENEW_SECONDS": renew,
        "LEADER_ELECTION_LEASE_SECONDS": lease,
    }
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    assert "LEADER_ELECTION_RETRY_SECONDS + LEADER_ELECTION_RENEW_SECONDS" in str(e.value)
    Settings.from_env({**env, "LEADER_ELECTION_LEASE_SECONDS": str(float(retry) + float(renew) + 0.5)})


def test_retry_cap_below_base_is_rejected() -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"CAPACITY_RETRY_BASE_SECONDS": "60", "CAPACITY_RETRY_MAX_SECONDS": "30"})
    assert "CAPACITY_RETRY_MAX_SECONDS" in str(e.value)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("REGISTRATION_TIMEOUT_SECONDS", "nan"),
        ("REGISTRATION_TIMEOUT_SECONDS", "inf"),
        ("GC_ORPHAN_GRACE_SECONDS", "NaN"),
        ("LAUNCH_POLL_SECONDS", "infinity"),
        ("GC_INTERVAL_SECONDS", "-inf"),
    ],
)
def test_non_finite_durations_are_rejected(env: str, value: str) -> None:
    """A NaN or infinite duration passes the 'not negative' check but breaks every timer using it."""
    with pytest.raises(SettingsError) as e:
        Settings.from_env({env: value})
    assert env in str(e.value)


def test_every_bad_value_is_reported_at_once() -> None:
    env = {"WORKERS": "many", "GC_INTERVAL_SECONDS": "-1", "LOG_LEVEL": "verbose"}
    with pytest.raises(SettingsError) as e:
        Settings.from_env(env)
    message = str(e.value)
    for name in env:
        assert name in message, f"{name} not reported in {message!r}"


def test_each_bad_value_is_reported_once() -> None:
    with pytest.raises(SettingsError) as e:
        Settings.from_env({"WORKERS": "-1"})
    lines = [line for line in str(e.value).splitlines() if "WORKERS" in line]
    assert len(lines) == 1, lines


# ================================================================================ cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"gpu-provisioner {__version__}"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


def test_every_setting_has_a_flag_showing_its_env_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["controller", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--kubeconfig" in text
    for f in Settings.fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f"env {f.metadata['env']}" in text
    assert "Installed: azure, fake." in text


def test_flags_parse_into_settings_fields() -> None:
    args = cli.build_parser().parse_args(
        ["controller", "--registration-timeout", "60", "--workers", "2", "--log-level", "debug"]
    )
    assert args.command == "controller"
    assert (args.registration_timeout, args.workers, args.log_level) == ("60", "2", "debug")
    assert args.gc_interval is None  # not given: the env or the default decides


@pytest.mark.parametrize(
    ("argv", "env_name"),
    [
        (["--workers", "zero"], "WORKERS"),
        (["--registration-timeout", "-5"], "REGISTRATION_TIMEOUT_SECONDS"),
        (["--delete-on-insufficient-capacity", "perhaps"], "DELETE_ON_INSUFFICIENT_CAPACITY"),
    ],
)
def test_bad_flag_value_exits_2_naming_the_setting(
    argv: list[str], env_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["controller", *argv]) == 2
    err = capsys.readouterr().err
    assert env_name in err
    assert argv[1] in err


def test_bad_env_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOT_READY_REPAIR_SECONDS", "ten minutes")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert cli.main(["controller"]) == 2
    err = capsys.readouterr().err
    assert "NOT_READY_REPAIR_SECONDS" in err
    assert "ten minutes" in err


def test_bad_choice_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["controller", "--log-format", "xml"])
    assert e.value.code == 2
    assert "--log-format" in capsys.readouterr().err


def test_unknown_cloud_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["controller", "--cloud", "gcp"]) == 2
    err = capsys.readouterr().err
    assert "gcp" in err
    assert "azure" in err and "fake" in err


def test_valid_settings_reach_the_operator_with_flags_winning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioner import logs, operator

    seen: dict[str, Any] = {}

    async def fake_run(settings: Settings, *, kubeconfig: str | None = None) -> int:
        seen["settings"] = settings
        seen["kubeconfig"] = kubeconfig
        return 0

    monkeypatch.setattr(operator, "run", fake_run)
    monkeypatch.setattr(logs, "configure", lambda level, fmt, **_: seen.setdefault("logs", (level, fmt)))
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("GC_INTERVAL_SECONDS", "30")
    code = cli.main(
        ["controller", "--workers", "5", "--kubeconfig", "/tmp/kc", "--log-format", "json", "--cloud", "fake"]
    )
    assert code == 0
    settings: Settings = seen["settings"]
    assert settings.workers == 5  # flag wins over env
    assert settings.gc_interval == 30.0  # env applies where no flag is given
    assert settings == dataclasses.replace(
        Settings(), workers=5, gc_interval=30.0, log_format="json", cloud="fake"
    )
    assert seen["kubeconfig"] == "/tmp/kc"
    assert seen["logs"] == ("info", "json")


def test_tracebacks_are_masked_too() -> None:
    import io
    import logging

    from provisioner.logs import JsonFormatter, SecretRedactingFilter, TextFormatter

    for formatter in (JsonFormatter(), TextFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(SecretRedactingFilter(["s3cr3t-value"]))
        log = logging.getLogger(f"test-redaction-{type(formatter).__name__}")
        log.addHandler(handler)
        log.propagate = False
        try:
            raise RuntimeError(
                "token request failed: client_secret=s3cr3t-value Bearer eyJhbGciOi.eyJzdWIi.sig"
            )
        except RuntimeError:
            log.exception("call failed")
        out = stream.getvalue()
        assert "s3cr3t-value" not in out and "eyJhbGciOi" not in out, out
        assert "RuntimeError" in out and "call failed" in out


def test_log_lines_are_dated_carry_the_reconcile_fields_and_use_karpenters_levels() -> None:
    import io
    import json
    import logging
    import re

    from provisioner import logs

    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(logs.ContextFieldsFilter())
        log = logging.getLogger(f"test-fields-{type(formatter).__name__}")
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        log.propagate = False
        with logs.fields(claim="ws1", kind="NodeClaim", pool="ws1"):
            log.warning("launch failed")
            log.info("node joined", extra={"node": "aks-ws1-0"})
        log.info("outside")
        first, second, third = stream.getvalue().splitlines()
        if isinstance(formatter, logs.JsonFormatter):
            entry = json.loads(first)
            assert entry["level"] == "WARN"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
            assert (entry["claim"], entry["kind"], entry["pool"]) == ("ws1", "NodeClaim", "ws1")
            assert json.loads(second)["node"] == "aks-ws1-0" and json.loads(second)["level"] == "INFO"
            assert "claim" not in json.loads(third)
        else:
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING ", first), first
            assert first.endswith("[claim=ws1 kind=NodeClaim pool=ws1]")
            assert "node=aks-ws1-0" in second
            assert "[" not in third


def test_log_level_warn_is_accepted() -> None:
    assert Settings.from_env({"LOG_LEVEL": "warn"}).log_level == "warn"
