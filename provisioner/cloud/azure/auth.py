"""Azure AD credentials for the provider, and a log filter that keeps secrets out of log lines.

Production runs use one of three credentials, chosen from the settings (never from developer
tools): workload identity (federated token file), a service principal secret, or managed
identity. ``AZURE_CREDENTIAL=default`` opts into the full ``DefaultAzureCredential`` chain
(Azure CLI and friends) for local development.
"""

from __future__ import annotations

import logging
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity import AzureAuthorityHosts
from azure.identity.aio import (
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from provisioner.cloud.azure.settings import AzureSettings
from provisioner.logs import SecretRedactingFilter  # log redaction lives with the log setup
from provisioner.redact import REDACTED

log = logging.getLogger(__name__)

_KNOWN_AUTHORITIES = {
    h.rstrip("/").removeprefix("https://")
    for h in (
        AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
        AzureAuthorityHosts.AZURE_CHINA,
        AzureAuthorityHosts.AZURE_GOVERNMENT,
    )
}


def credential_kind(settings: AzureSettings) -> str:
    """Which credential ``settings`` select (``auto`` resolved)."""
    if settings.credential != "auto":
        return settings.credential
    if settings.federated_token_file:
        return "workload-identity"
    if settings.client_secret:
        return "client-secret"
    return "managed-identity"


def _common_kwargs(settings: AzureSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.ca_bundle:
        kwargs["connection_verify"] = settings.ca_bundle
    return kwargs


def _authority_kwargs(settings: AzureSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.authority_host:
        kwargs["authority"] = settings.authority_host
        host = settings.authority_host.rstrip("/").removeprefix("https://")
        if host not in _KNOWN_AUTHORITIES:
            # A private or test authority cannot answer Azure AD's instance discovery.
            kwargs["disable_instance_discovery"] = True
    return kwargs


def describe_credential(settings: AzureSettings) -> str:
    """The credential in use, in words, for the start-up log line."""
    kind = credential_kind(settings)
    client = f"client {settings.client_id}" if settings.client_id else ""
    if kind == "workload-identity":
        return f"workload identity ({client}, tenant {settings.tenant_id}, token {settings.federated_token_file})"
    if kind == "client-secret":
        return f"service principal secret ({client}, tenant {settings.tenant_id})"
    if kind == "managed-identity":
        who = client or "the system-assigned or kubelet identity of the node"
        return f"managed identity ({who})"
    return "DefaultAzureCredential (environment, workload identity, managed identity, then developer tools)"


def build_credential(settings: AzureSettings) -> AsyncTokenCredential:
    """The async credential ``settings`` ask for. Nothing is fetched until the first request."""
    kind = credential_kind(settings)
    log.info("Azure credential: %s", describe_credential(settings))
    if settings.credential == "auto" and kind == "managed-identity" and not settings.client_id:
        log.warning(
            "no Azure identity is configured (AZURE_FEDERATED_TOKEN_FILE + AZURE_CLIENT_ID for workload "
            "identity, AZURE_CLIENT_SECRET for a service principal, or AZURE_CLIENT_ID for a user-assigned "
            "managed identity); falling back to the node's managed identity, which needs rights on the cluster"
        )
    common = _common_kwargs(settings)
    if kind == "workload-identity":
        assert settings.tenant_id and settings.client_id and settings.federated_token_file
        return WorkloadIdentityCredential(
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            token_file_path=settings.federated_token_file,
            **_authority_kwargs(settings),
            **common,
        )
    if kind == "client-secret":
        assert settings.tenant_id and settings.client_id and settings.client_secret
        return ClientSecretCredential(
            settings.tenant_id,
            settings.client_id,
            settings.client_secret,
            **_authority_kwargs(settings),
            **common,
        )
    if kind == "managed-identity":
        return ManagedIdentityCredential(client_id=settings.client_id, **common)
    return DefaultAzureCredential(**_authority_kwargs(settings), **common)


__all__ = ["REDACTED", "SecretRedactingFilter", "build_credential", "credential_kind"]
