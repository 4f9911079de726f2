"""Fixtures for the integration suite: a fake ARM server per test and real Azure SDK clients on it.

Clients authenticate with ``WorkloadIdentityCredential`` (federated token file in ``tmp_path``,
authority from ``AZURE_AUTHORITY_HOST``) and verify TLS against the fake's CA.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.identity.aio import WorkloadIdentityCredential
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.containerservice.aio import ContainerServiceClient

from fakes.arm import FakeArm, FakeArmConfig, Latency
from fakes.arm.config import DEFAULT_CLUSTER, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from provisioner.cloud import ProviderContext, load_provider
from provisioner.cloud.azure import AzureCloud

SUBSCRIPTION = DEFAULT_SUBSCRIPTION
RESOURCE_GROUP = DEFAULT_RESOURCE_GROUP
CLUSTER = DEFAULT_CLUSTER
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "5f1b8c7e-1111-4c1d-9e6a-6b0d3c2a9f00"
FAST = Latency(create=0.2, update=0.2, delete=0.2)


def service_account_token() -> str:
    """A JWT shaped like a projected Kubernetes service-account token (the federated credential)."""

    def seg(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "aud": ["api://AzureADTokenExchange"],
        "iss": "https://oidc.example.invalid/",
        "sub": "system:serviceaccount:gpu-provisioner:gpu-provisioner",
        "iat": now,
        "exp": now + 3600,
    }
    return f"{seg({'alg': 'RS256', 'kid': 'test'})}.{seg(claims)}.c2lnbmF0dXJl"


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], within: float = 5.0, interval: float = 0.02
) -> None:
    """Wait until ``condition()`` is true; fail the test after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


@pytest.fixture
def arm_config() -> FakeArmConfig:
    """Override in a test module (or parametrize indirectly) to change the server's settings."""
    return FakeArmConfig(latency=FAST, page_size=2)


@pytest.fixture
async def arm(arm_config: FakeArmConfig, tmp_path: Path) -> AsyncIterator[FakeArm]:
    async with FakeArm(arm_config, state_dir=tmp_path / "arm") as server:
        yield server


@pytest.fixture
async def credential(
    arm: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[WorkloadIdentityCredential]:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(service_account_token())
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", arm.authority_host)
    cred = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        token_file_path=str(token_file),
        disable_instance_discovery=True,
        connection_verify=str(arm.ca_path),
    )
    async with cred:
        yield cred


def make_aks_client(arm: FakeArm, credential: Any, retry_total: int = 2) -> ContainerServiceClient:
    return ContainerServiceClient(
        credential,
        SUBSCRIPTION,
        base_url=arm.endpoint,
        connection_verify=str(arm.ca_path),
        retry_total=retry_total,
        retry_backoff_factor=0.05,
        polling_interval=0.05,
    )


@pytest.fixture
async def aks(arm: FakeArm, credential: WorkloadIdentityCredential) -> AsyncIterator[ContainerServiceClient]:
    async with make_aks_client(arm, credential) as client:
        yield client


@pytest.fixture
async def compute(
    arm: FakeArm, credential: WorkloadIdentityCredential
) -> AsyncIterator[ComputeManagementClient]:
    async with ComputeManagementClient(
        credential, SUBSCRIPTION, base_url=arm.endpoint, connection_verify=str(arm.ca_path), retry_total=1
    ) as client:
        yield client


@pytest.fixture
async def http(arm: FakeArm) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTPS client that trusts the fake's CA (admin endpoint, raw ARM calls)."""
    connector = aiohttp.TCPConnector(ssl=arm.client_ssl_context())
    async with aiohttp.ClientSession(base_url=arm.endpoint, connector=connector) as session:
        yield session


# --- the AKS provider on the fake, built as the operator builds it -----------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "azure-identity-token"
    path.write_text(service_account_token())
    return path


@pytest.fixture
def federated_token(token_file: Path) -> str:
    return token_file.read_text()


@pytest.fixture
def make_env(arm: FakeArm, token_file: Path) -> Callable[..., dict[str, str]]:
    def make(**extra: str) -> dict[str, str]:
        return {
            "ARM_SUBSCRIPTION_ID": SUBSCRIPTION,
            "ARM_RESOURCE_GROUP": RESOURCE_GROUP,
            "AZURE_CLUSTER_NAME": CLUSTER,
            "LOCATION": "eastus",
            **arm.env(),  # ARM_ENDPOINT, ARM_CA_BUNDLE, AZURE_AUTHORITY_HOST
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_RETRY_BACKOFF_SECONDS": "0.02",
            "AZURE_RETRY_AFTER_MAX_SECONDS": "1",
            **extra,
        }

    return make


@pytest.fixture
async def providers(make_env: Callable[..., dict[str, str]]) -> AsyncIterator[Callable[..., AzureCloud]]:
    """Build providers (through the entry point, as the operator does); all are closed at the end."""
    made: list[AzureCloud] = []

    def build(**extra: str) -> AzureCloud:
        provider = load_provider("azure", ProviderContext(env=make_env(**extra)))
        assert isinstance(provider, AzureCloud)
        made.append(provider)
        return provider

    yield build
    for p in made:
        await p.close()
