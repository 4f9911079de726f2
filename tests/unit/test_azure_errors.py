"""ARM error classification: by error code (and nested/quoted codes), never by HTTP status alone."""

from __future__ import annotations

import pytest
from azure.core.exceptions import DecodeError, DeserializationError

from fakes.arm.errors import ErrorContext, default_message, operation_not_allowed
from provisioner.cloud.azure.errors import ArmError, classify, from_exception, parse_retry_after
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


@pytest.mark.parametrize(
    "message",
    [
        "The number of agent pools in managed cluster 'c1' cannot exceed 100: the cluster already has 100.",
        "Cannot add agent pool: the maximum number of agent pools (100) for this cluster is reached.",
        "The managed cluster has reached its node pool limit of 100.",
    ],
)
def test_the_clusters_pool_limit_is_a_capacity_shortage_not_an_invalid_spec(message: str) -> None:
    """Room comes back when a pool is deleted: the claim must be retried, never marked unlaunchable."""
    err = classify(ArmError("InvalidParameter", message, 400))
    assert isinstance(err, InsufficientCapacity)
    assert err.code == "AgentPoolLimitReached"
    assert message in err.message


def test_a_node_count_range_is_not_the_pool_limit() -> None:
    err = classify(
        ArmError("InvalidParameter", "AgentPoolProfile count needs to be in the range [1,100]", 400)
    )
    assert isinstance(err, InvalidSpec)


@pytest.mark.parametrize("code", ["InvalidParameter", "InvalidAgentPoolName", "InvalidNodeLabel"])
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
    assert isinstance(classify(ArmError("Whatever", "x", 404)), NotFound)
    assert isinstance(classify(ArmError("Whatever", "x", 200)), Transient)
    assert isinstance(classify(ArmError("Whatever", "x", None)), Transient)


@pytest.mark.parametrize(("code", "message"), [("BadRequest", "Bad request."), ("Whatever", "x"), ("", "")])
def test_a_bad_request_without_a_recognised_code_is_retried_and_keeps_the_arm_words(
    code: str, message: str
) -> None:
    err = classify(ArmError(code, message, 400))
    assert isinstance(err, Transient)
    assert err.code == (code or "BadRequest")
    assert (message or "bad request") in str(err)


def test_a_recognised_code_in_a_bad_requests_message_still_decides() -> None:
    err = classify(ArmError("BadRequest", 'Code="InvalidParameter" the node label is invalid', 400))
    assert isinstance(err, InvalidSpec) and err.code == "InvalidParameter"


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


@pytest.mark.parametrize("value", ["soon", "-30", "NaN", "inf", "1e400", "", "5 seconds", "Wed, 99 Foo 2024"])
def test_a_retry_after_that_is_no_delay_is_no_hint(value: str) -> None:
    assert parse_retry_after(value, cap=30) is None
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        ["error"],
        "Something went wrong.",
        42,
        {"error": "Something went wrong."},
        {"error": ["Something", "went", "wrong"]},
        {"error": {"code": "InternalServerError", "message": {"text": "went wrong"}}},
        {"error": {"code": "QuotaExceeded", "message": ["went", "wrong"]}},
        {"error": {"code": 500, "message": "went wrong"}},
        {"error": {"message": "no code"}},
        {},
    ],
)
@pytest.mark.parametrize("status", [400, 404, 409, 500, 200])
def test_a_malformed_error_body_decides_nothing(body: object, status: int) -> None:
    err = ArmError.from_body(body, status)
    assert err.malformed
    classified = classify(err)
    assert type(classified) is Transient and classified.code == "MalformedResponse"
    assert f"HTTP {status}" in classified.message


def test_a_malformed_throttling_answer_is_still_throttling() -> None:
    err = classify(ArmError.from_body({"error": 7}, 429, retry_after=3.0))
    assert isinstance(err, Throttled) and err.retry_after == 3.0


def test_sdk_read_errors_are_malformed_answers() -> None:
    for exc in (
        DecodeError("JSON is invalid: Unterminated string"),
        DeserializationError("Cannot deserialize"),
        AttributeError("'list' object has no attribute 'get'"),
        TypeError("expected string or bytes-like object"),
        ValueError("Expecting value: line 1 column 1 (char 0)"),
    ):
        err = from_exception(exc)
        assert isinstance(err, Transient) and err.code == "MalformedResponse", exc
