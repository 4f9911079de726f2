"""ARM error classification: by error code (and nested/quoted codes), never by HTTP status alone."""

from __future__ import annotations

import pytest

from fakes.arm.errors import ErrorContext, default_message, operation_not_allowed
from provisioner.cloud.azure.errors import ArmError, classify, parse_retry_after
from provisioner.cloud.errors import InsufficientCapacity, InvalidSpec, NotFound, Throttled, Transient

CTX = ErrorContext(
    subscription_id="00000000-0000-0000-0000-000000000000",
    cluster="aks",
    node_resource_group="MC_rg_aks_eastus",
    location="eastus",
    vm_size="Standard_NC24ads_A100_v4",
    family="standardNCADSA100v4Family",
    limit=48,
    usage=48,
    required=24,
)


@pytest.mark.parametrize(
    "code",
    [
        "QuotaExceeded",
        "SkuNotAvailable",
        "VMSizeNotSupported",
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    ],
)
@pytest.mark.parametrize("status", [400, 409, 200, None])
def test_capacity_codes_are_insufficient_capacity_whatever_the_status(code: str, status: int | None) -> None:
    message = default_message(code, CTX)
    err = classify(ArmError(code, message, status))
    assert isinstance(err, InsufficientCapacity)
    assert err.code == code
    assert err.message == message


def test_quota_message_is_parsed_for_family_needed_and_free() -> None:
    err = classify(ArmError("QuotaExceeded", default_message("QuotaExceeded", CTX), 400))
    assert isinstance(err, InsufficientCapacity)
    assert (err.family, err.vcpus_needed, err.vcpus_free) == ("standardNCADSA100v4Family", 24, 0)


def test_compute_quota_text_under_another_code_is_quota() -> None:
    message = (
        "Operation could not be completed as it results in exceeding approved Total Regional Cores quota. "
        "Additional details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 100, "
        "Current Usage: 96, Additional Required: 24, (Minimum) New Limit Required: 120."
    )
    err = classify(ArmError("OperationNotAllowed", message, 409))
    assert isinstance(err, InsufficientCapacity)
    assert err.code == "QuotaExceeded"
    assert (err.family, err.vcpus_needed, err.vcpus_free) == ("cores", 24, 4)


def test_wrapped_codes_decide_and_the_outer_code_is_kept() -> None:
    err = classify(
        ArmError(
            "ReconcileVMSSAgentPoolFailed",
            'Code="ZonalAllocationFailed" Message="Allocation failed."',
            200,
        )
    )
    assert isinstance(err, InsufficientCapacity) and err.code == "ZonalAllocationFailed"
    assert err.message.startswith("ReconcileVMSSAgentPoolFailed: ")
    nested = classify(
        ArmError("VMExtensionProvisioningError", "failed", None, inner_codes=("SkuNotAvailable",))
    )
    assert isinstance(nested, InsufficientCapacity) and nested.code == "SkuNotAvailable"


@pytest.mark.parametrize("code", ["InvalidParameter", "BadRequest", "InvalidAgentPoolName"])
def test_invalid_spec(code: str) -> None:
    err = classify(ArmError(code, "The value of parameter agentPoolProfile.name is invalid.", 400))
    assert isinstance(err, InvalidSpec) and err.code == code and "agentPoolProfile.name" in err.message


def test_a_failed_operation_with_status_200_is_not_success_or_transient_by_status() -> None:
    assert isinstance(classify(ArmError("InvalidParameter", "bad", 200)), InvalidSpec)


def test_throttling_keeps_retry_after() -> None:
    err = classify(ArmError("SubscriptionRequestsThrottled", "slow down", 429, retry_after=7.0))
    assert isinstance(err, Throttled) and err.retry_after == 7.0
    bare = classify(ArmError("", "", 429, retry_after=2.0))
    assert isinstance(bare, Throttled) and bare.retry_after == 2.0


@pytest.mark.parametrize(
    ("code", "status"), [("InternalServerError", 500), ("ServiceUnavailable", 503), ("", 502)]
)
def test_server_errors_are_transient(code: str, status: int) -> None:
    assert isinstance(classify(ArmError(code, "boom", status)), Transient)


def test_operation_in_progress_is_transient_with_its_code() -> None:
    fake = operation_not_allowed("ws1", "Creating")
    err = classify(ArmError(fake.code, fake.message, 409))
    assert isinstance(err, Transient) and err.code == "OperationNotAllowed"


def test_missing_pool_is_not_found_but_missing_cluster_is_not() -> None:
    pool = classify(ArmError("NotFound", "Could not find agent pool 'ws1' in managed cluster 'aks'.", 404))
    assert isinstance(pool, NotFound)
    cluster = classify(
        ArmError(
            "ResourceNotFound",
            "The Resource 'Microsoft.ContainerService/managedClusters/aks' under resource group 'rg' was not found.",
            404,
        )
    )
    assert isinstance(cluster, Transient)
    assert isinstance(
        classify(ArmError("ResourceGroupNotFound", "Resource group 'rg' could not be found.", 404)), Transient
    )


def test_unknown_codes_fall_back_on_status() -> None:
    assert isinstance(classify(ArmError("Whatever", "x", 400)), InvalidSpec)
    assert isinstance(classify(ArmError("Whatever", "x", 200)), Transient)
    assert isinstance(classify(ArmError("Whatever", "x", None)), Transient)


def test_from_body() -> None:
    body = {
        "error": {"code": "Outer", "message": "m", "details": [{"code": "AllocationFailed", "message": "x"}]}
    }
    err = ArmError.from_body(body, 200)
    assert err.code == "Outer" and err.inner_codes == ("AllocationFailed",)
    assert isinstance(classify(err), InsufficientCapacity)


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("500", cap=30) == 30
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
