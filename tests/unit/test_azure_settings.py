"""Provider configuration, credential choice and log redaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from provisioner.cloud.azure.auth import SecretRedactingFilter, build_credential, credential_kind
from provisioner.cloud.azure.env import ConfigError
from provisioner.cloud.azure.settings import AzureSettings

SUB = "00000000-0000-0000-0000-000000000000"
BASE = {
    "ARM_SUBSCRIPTION_ID": SUB,
    "ARM_RESOURCE_GROUP": "rg",
    "AZURE_CLUSTER_NAME": "aks",
    "LOCATION": "East US",
}


def test_minimal_settings_and_defaults() -> None:
    s = AzureSettings.from_env(BASE)
    assert (s.subscription_id, s.resource_group, s.cluster_name, s.location) == (SUB, "rg", "aks", "eastus")
    assert s.effective_node_resource_group == "MC_rg_aks_eastus"
    assert s.arm_endpoint == "https://management.azure.com"
    assert s.credential_scope == "https://management.azure.com/.default"
    assert s.sdk_retry_total <= 2
    assert credential_kind(s) == "managed-identity"


def test_cluster_name_falls_back_to_the_context() -> None:
    env = {k: v for k, v in BASE.items() if k != "AZURE_CLUSTER_NAME"}
    assert AzureSettings.from_env(env, cluster_name="ctx").cluster_name == "ctx"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"ARM_SUBSCRIPTION_ID": ""}, "ARM_SUBSCRIPTION_ID"),
        ({"ARM_SUBSCRIPTION_ID": "not-a-uuid"}, "ARM_SUBSCRIPTION_ID"),
        ({"ARM_RESOURCE_GROUP": " "}, "ARM_RESOURCE_GROUP"),
        ({"AZURE_CLUSTER_NAME": ""}, "AZURE_CLUSTER_NAME"),
        ({"LOCATION": ""}, "LOCATION"),
        ({"ARM_ENDPOINT": "http://127.0.0.1:8443"}, "ARM_ENDPOINT"),
        ({"ARM_CA_BUNDLE": "/nonexistent/ca.pem"}, "ARM_CA_BUNDLE"),
        ({"AZURE_CREDENTIAL": "cli"}, "AZURE_CREDENTIAL"),
        ({"AZURE_ARM_RATE_LIMIT": "fast"}, "AZURE_ARM_RATE_LIMIT"),
        ({"AZURE_ARM_RATE_LIMIT": "0"}, "AZURE_ARM_RATE_LIMIT"),
        ({"AZURE_MAX_PODS": "1000"}, "AZURE_MAX_PODS"),
        ({"AZURE_OS_DISK_TYPE": "SSD"}, "AZURE_OS_DISK_TYPE"),
        ({"AZURE_GPU_DRIVER_INSTALL": "maybe"}, "AZURE_GPU_DRIVER_INSTALL"),
        ({"AZURE_EXTRA_TAGS": "novalue"}, "AZURE_EXTRA_TAGS"),
        ({"AZURE_EXTRA_TAGS": "{not json"}, "AZURE_EXTRA_TAGS"),
        ({"AZURE_VNET_SUBNET_ID": "subnet-1"}, "AZURE_VNET_SUBNET_ID"),
        ({"AZURE_CREDENTIAL": "workload-identity"}, "AZURE_FEDERATED_TOKEN_FILE"),
        (
            {"AZURE_CREDENTIAL": "client-secret", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"},
            "AZURE_CLIENT_SECRET",
        ),
        ({"AZURE_FEDERATED_TOKEN_FILE": "/var/run/token", "AZURE_TENANT_ID": "t"}, "AZURE_CLIENT_ID"),
    ],
)
def test_bad_configuration_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        AzureSettings.from_env({**BASE, **env})
    assert info.value.setting == setting
    assert str(info.value).startswith(f"{setting}: ")
    assert isinstance(info.value, ValueError)


def test_optional_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    s = AzureSettings.from_env(
        {
            **BASE,
            "ARM_ENDPOINT": "https://127.0.0.1:9443/",
            "ARM_CA_BUNDLE": str(ca),
            "AZURE_EXTRA_TAGS": '{"env": "prod"}',
            "AZURE_ARM_RATE_LIMIT": "2.5",
            "AZURE_LIST_CACHE_SECONDS": "0",
            "AZURE_GPU_DRIVER_INSTALL": "off",
            "AZURE_OS_DISK_TYPE": "managed",
        }
    )
    assert s.arm_endpoint == "https://127.0.0.1:9443"
    assert s.credential_scope == "https://127.0.0.1:9443/.default"
    assert s.ca_bundle == str(ca)
    assert s.extra_tags == {"env": "prod"}
    assert s.arm_rate_limit == 2.5
    assert s.list_cache_seconds == 0
    assert s.gpu_driver_install is False
    assert s.os_disk_type == "Managed"


def test_credential_choice() -> None:
    wi = {"AZURE_FEDERATED_TOKEN_FILE": "/t", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    assert credential_kind(AzureSettings.from_env({**BASE, **wi})) == "workload-identity"
    sp = {"AZURE_CLIENT_SECRET": "s3cret!", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    assert credential_kind(AzureSettings.from_env({**BASE, **sp})) == "client-secret"
    assert credential_kind(AzureSettings.from_env({**BASE, "AZURE_CREDENTIAL": "default"})) == "default"


def test_secrets_are_not_in_repr() -> None:
    sp = {"AZURE_CLIENT_SECRET": "very-secret-value", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    s = AzureSettings.from_env({**BASE, **sp})
    assert "very-secret-value" not in repr(s)
    assert s.secrets() == ["very-secret-value"]


def test_every_setting_is_documented_in_one_line() -> None:
    docs = AzureSettings.documentation()
    names = [name for name, _ in docs]
    assert len(names) == len(set(names))
    assert {"ARM_SUBSCRIPTION_ID", "ARM_ENDPOINT", "ARM_CA_BUNDLE", "AZURE_ARM_RATE_LIMIT"} <= set(names)
    assert all(doc and "\n" not in doc for _, doc in docs)


def test_redacting_filter_masks_tokens_and_secrets() -> None:
    f = SecretRedactingFilter(["hunter2-secret"])
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    record = logging.LogRecord(
        "azure",
        logging.DEBUG,
        __file__,
        1,
        "headers %s body %s",
        ({"Authorization": f"Bearer {jwt}"}, "client_secret=hunter2-secret&client_assertion=abc.def"),
        None,
    )
    assert f.filter(record)
    text = record.getMessage()
    assert jwt not in text and "hunter2-secret" not in text and "abc.def" not in text
    assert "Bearer ***" in text


async def test_the_credential_in_use_is_logged_and_no_identity_at_all_is_a_warning(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.cloud.azure.auth")
    credential = build_credential(AzureSettings.from_env(BASE))
    await credential.close()
    (info,) = [r for r in caplog.records if r.levelno == logging.INFO]
    assert "managed identity" in info.getMessage()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no Azure identity is configured" in warning.getMessage()
    assert "AZURE_FEDERATED_TOKEN_FILE" in warning.getMessage()

    caplog.clear()
    token = tmp_path / "token"
    token.write_text("t")
    workload = {
        **BASE,
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        "AZURE_CLIENT_ID": "c1",
        "AZURE_TENANT_ID": "t1",
    }
    credential = build_credential(AzureSettings.from_env(workload))
    await credential.close()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "workload identity (client c1, tenant t1" in caplog.records[0].getMessage()
