"""ARM error bodies and the message texts Azure uses for the errors the fake can produce.

Bodies follow the ARM RPC error contract, ``{"error": {"code", "message", "target"?, "details": [...]}}``,
which the SDK parses into ``HttpResponseError.error`` (``ARMErrorFormat``). Message texts are
modelled on what Azure returns, so code that logs or matches them sees realistic input; callers
must classify by ``code`` (a failed LRO arrives with HTTP 200, the code is in the body).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

JSON_TYPE = "application/json; charset=utf-8"

# Codes the fake knows how to word; any other code is accepted with a generic message.
QUOTA_EXCEEDED = "QuotaExceeded"
SKU_NOT_AVAILABLE = "SkuNotAvailable"
ALLOCATION_FAILED = "AllocationFailed"
ZONAL_ALLOCATION_FAILED = "ZonalAllocationFailed"
OVERCONSTRAINED_ALLOCATION = "OverconstrainedAllocationRequest"
OVERCONSTRAINED_ZONAL_ALLOCATION = "OverconstrainedZonalAllocationRequest"
INVALID_PARAMETER = "InvalidParameter"
NOT_FOUND = "NotFound"
RESOURCE_NOT_FOUND = "ResourceNotFound"
OPERATION_NOT_ALLOWED = "OperationNotAllowed"
THROTTLED = "SubscriptionRequestsThrottled"
INTERNAL_SERVER_ERROR = "InternalServerError"
SERVICE_UNAVAILABLE = "ServiceUnavailable"

_ALLOCATION_GUIDANCE = (
    "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
)


@dataclass(eq=False)
class ArmError(Exception):
    """An error answered in ARM's shape. Raise it from a handler; the middleware renders it."""

    status: int
    code: str
    message: str
    target: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.code}: {self.message}")

    def body(self) -> dict[str, Any]:
        return {"error": error_object(self.code, self.message, self.target, self.details)}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body()),
            content_type="application/json",
            charset="utf-8",
            headers=self.headers,
        )


def error_object(
    code: str, message: str, target: str | None = None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    obj: dict[str, Any] = {"code": code, "message": message}
    if target:
        obj["target"] = target
    obj["details"] = list(details or [])
    return obj


@dataclass(frozen=True)
class ErrorContext:
    """What a message template may mention."""

    subscription_id: str = ""
    resource_group: str = ""
    cluster: str = ""
    node_resource_group: str = ""
    location: str = ""
    pool: str = ""
    vm_size: str = ""
    zones: tuple[str, ...] = ()
    family: str = ""
    limit: int = 0
    usage: int = 0
    required: int = 0


def quota_message(ctx: ErrorContext) -> str:
    """AKS' preflight wording for a vCPU quota shortfall, with Compute's quota sentence inside."""
    family_label = "Total Regional" if ctx.family == "cores" else ctx.family
    quota_blade = (
        "https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView/Parameters/"
        f"%7B%22subscriptionId%22:%22{ctx.subscription_id}%22,%22command%22:%22openQuotaApprovalBlade%22,"
        f"%22quotas%22:[%7B%22location%22:%22{ctx.location}%22,%22providerId%22:%22Microsoft.Compute%22,"
        f"%22resourceName%22:%22{ctx.family}%22,%22quotaRequest%22:%7B%22properties%22:%7B%22limit%22:"
        f"{ctx.usage + ctx.required},%22unit%22:%22Count%22,%22name%22:%7B%22value%22:%22{ctx.family}%22"
        "%7D%7D%7D%7D]%7D"
    )
    return (
        f"Preflight validation check for resource(s) for container service {ctx.cluster} in resource group "
        f"{ctx.node_resource_group} failed. Message: Operation could not be completed as it results in "
        f"exceeding approved {family_label} Cores quota. Additional details - Deployment Model: Resource "
        f"Manager, Location: {ctx.location}, Current Limit: {ctx.limit}, Current Usage: {ctx.usage}, "
        f"Additional Required: {ctx.required}, (Minimum) New Limit Required: {ctx.usage + ctx.required}. "
        f"Submit a request for Quota increase at {quota_blade} by specifying parameters listed in the "
        "\u2018Details\u2019 section for deployment to succeed. Please read more about quota limits at "
        "https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests. Details: "
    )


def default_message(code: str, ctx: ErrorContext) -> str:
    """Azure's wording for ``code``; a generic sentence for codes the fake has no text for."""
    zones = ",".join(ctx.zones)
    if code == QUOTA_EXCEEDED:
        return quota_message(ctx)
    if code == SKU_NOT_AVAILABLE:
        return (
            f"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
            f"{ctx.vm_size}' is currently not available in location '{ctx.location}'. Please try another "
            "size or deploy to a different location or different zone. See https://aka.ms/azureskunotavailable "
            "for details."
        )
    if code == ALLOCATION_FAILED:
        return (
            "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
            f"{_ALLOCATION_GUIDANCE}"
        )
    if code == ZONAL_ALLOCATION_FAILED:
        return (
            "Allocation failed. We do not have sufficient capacity for the requested VM size in this zone. "
            f"{_ALLOCATION_GUIDANCE}. Please note that allocation failures can also arise if a proximity "
            "placement group is associated with this VMSS. See https://learn.microsoft.com/troubleshoot/azure/"
            "azure-kubernetes/error-code-zonalallocationfailed-allocationfailed for more details. This is not "
            "AKS controlled behavior, please ask help to VMSS team for allocation failure."
        )
    if code in (OVERCONSTRAINED_ALLOCATION, OVERCONSTRAINED_ZONAL_ALLOCATION):
        constraints = "\n  - VM Size\n" if not zones else "\n  - Availability Zone\n  - VM Size\n"
        return (
            "Allocation failed. VM(s) with the following constraints cannot be allocated, because the "
            "condition is too restrictive. Please remove some constraints and try again. Constraints applied "
            f"are:{constraints}"
        )
    if code == INTERNAL_SERVER_ERROR:
        return (
            "Encountered internal server error. Diagnostic information: timestamp "
            f"'{_timestamp()}', subscription id '{ctx.subscription_id}', tracking id '{uuid.uuid4()}', "
            f"request correlation id '{uuid.uuid4()}'."
        )
    if code == SERVICE_UNAVAILABLE:
        return "The service is currently unavailable. Please retry the request later."
    return f"The operation failed with error code '{code}'."


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def operation_not_allowed(pool: str, running: str) -> ArmError:
    """AKS' 409 for a write (PUT, DELETE, deleteMachines) while another operation on the same pool
    is in progress; ``running`` is the pool's provisioningState (Creating, Updating, Scaling,
    Deleting). The wording is AKS' own, as its CLI and SDK users report it."""
    return ArmError(
        409,
        OPERATION_NOT_ALLOWED,
        f"Operation is not allowed: Another agentpool operation ({pool} - {running}) is in progress, please "
        "wait for it to finish before starting a new operation. See https://aka.ms/aks-pending-operation "
        "for more details",
    )


def pool_limit_exceeded(cluster: str, limit: int) -> ArmError:
    """A create that would take a managed cluster past its agent pool limit (AKS: 100 per cluster,
    the ``maxAgentPools`` the cluster reports). AKS refuses it up front as an invalid parameter."""
    return ArmError(
        400,
        INVALID_PARAMETER,
        f"The number of agent pools in managed cluster '{cluster}' cannot exceed {limit}: the cluster "
        f"already has {limit}. Delete an agent pool first. See https://aka.ms/aks/quotas-skus-regions "
        "for the limits of AKS.",
    )


def machines_not_found(pool: str, names: list[str]) -> ArmError:
    """deleteMachines named machines the agent pool does not have."""
    quoted = ", ".join(f"'{n}'" for n in names)
    return invalid_parameter(
        "machineNames",
        f"The machine(s) {quoted} could not be found in agent pool '{pool}'. Use the machines API "
        "(GET .../agentPools/{agentPoolName}/machines) to list the machines of an agent pool.",
    )


def machine_not_found(machine: str, pool: str) -> ArmError:
    return ArmError(404, NOT_FOUND, f"Could not find machine '{machine}' in agent pool '{pool}'.")


def invalid_parameter(target: str, message: str) -> ArmError:
    return ArmError(400, INVALID_PARAMETER, message, target=target)


def pool_not_found(pool: str, cluster: str) -> ArmError:
    return ArmError(404, NOT_FOUND, f"Could not find agent pool '{pool}' in managed cluster '{cluster}'.")


def resource_not_found(resource_type: str, name: str, resource_group: str) -> ArmError:
    """ARM's own 404 for a tracked resource (e.g. the managed cluster) that does not exist."""
    return ArmError(
        404,
        RESOURCE_NOT_FOUND,
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )
