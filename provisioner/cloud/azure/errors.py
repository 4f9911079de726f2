"""Turn ARM errors into the cloud error taxonomy.

Classification is by ARM ``error.code`` (and the codes nested in ``details`` or quoted in the
message, where AKS wraps a Compute error in its own code), never by HTTP status alone: a failed
long-running operation arrives with status 200 and a pool's ``provisioningError`` has no status at
all. The status is only a fallback for bodies without a known code, and only a recognised code
makes an error final: a 400 we cannot place is retried like any other unclassified error.

An error answer that is not an ARM error object (not JSON, a list or a string where the object
belongs, a code or message that is not a string) decides nothing: it is
``Transient("MalformedResponse")``, or ``Throttled`` when its status is 429.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    DeserializationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from provisioner.cloud.azure.answers import MALFORMED, describe, malformed
from provisioner.cloud.errors import (
    ALL_INSTANCE_TYPES_UNAVAILABLE,
    CloudError,
    InsufficientCapacity,
    InvalidSpec,
    NotFound,
    Throttled,
    Transient,
)

SKU_UNAVAILABLE_CODES = frozenset(
    {
        "SkuNotAvailable",
        "VMSizeNotSupported",
        "SkuNotSupported",
        "NotAvailableForSubscription",
        "AvailabilityZoneNotSupported",
    }
)
ALLOCATION_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
    }
)
CAPACITY_CODES = SKU_UNAVAILABLE_CODES | ALLOCATION_CODES | frozenset({"QuotaExceeded"})
INVALID_SPEC_CODES = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidAgentPoolName",
        "AgentPoolNameInvalid",
        "InvalidRequestFormat",
        "InvalidRequestContent",
        "InvalidTag",
        "InvalidTagName",
        "InvalidNodeLabel",
        "InvalidNodeTaint",
        "InvalidOSSKU",
        "InvalidOSDiskSize",
    }
)
THROTTLE_CODES = frozenset(
    {
        "TooManyRequests",
        "Throttled",
        "SubscriptionRequestsThrottled",
        "TenantRequestsThrottled",
        "ResourceRequestsThrottled",
        "OperationThrottled",
    }
)
POOL_NOT_FOUND_CODES = frozenset({"NotFound", "AgentPoolNotFound"})
#: A missing cluster or resource group is a configuration problem, never "the pool is gone".
PARENT_NOT_FOUND_CODES = frozenset({"ResourceGroupNotFound", "ParentResourceNotFound"})
IN_PROGRESS_TEXT = re.compile(
    r"another (agentpool |agent pool )?operation .*in progress|operation is in progress", re.I
)
QUOTA_TEXT = re.compile(r"exceeding (the )?approved .*quota", re.I)
#: AKS refuses a pool past the cluster's agent pool limit (100) as an invalid parameter; room comes
#: back when a pool is deleted, so it is a capacity shortage (retried), named by this code.
POOL_LIMIT_CODE = "AgentPoolLimitReached"
POOL_LIMIT_TEXT = re.compile(
    r"number of (agent|node) ?pools\b.*\b(cannot exceed|exceeds?|limit|reached)|(agent|node) ?pool limit",
    re.I,
)

_KNOWN_CODES = CAPACITY_CODES | INVALID_SPEC_CODES | THROTTLE_CODES
_CODE_IN_MESSAGE = re.compile(r"\b(" + "|".join(sorted(_KNOWN_CODES, key=len, reverse=True)) + r")\b")
_QUOTA_FAMILY = re.compile(r"exceeding (?:the )?approved (?P<family>.+?) (?:Cores )?quota", re.I)
_QUOTA_NUMBERS = re.compile(
    r"Current Limit:\s*(?P<limit>\d+).*?Current Usage:\s*(?P<usage>\d+).*?Additional Required:\s*(?P<req>\d+)",
    re.I | re.S,
)


@dataclass(frozen=True)
class ArmError:
    """The parts of an ARM error body we act on."""

    code: str
    message: str
    status: int | None = None
    retry_after: float | None = None
    inner_codes: tuple[str, ...] = field(default_factory=tuple)
    #: Why the answer is no ARM error object (None: it is one).
    malformed: str | None = None
    #: The call answered, e.g. ``GET ws1a2b3c4d5`` (for messages).
    request: str | None = None

    @classmethod
    def from_body(cls, body: object, status: int | None = None, retry_after: float | None = None) -> ArmError:
        """From an ARM error object (``{"code", "message", "details"}``) or a body wrapping one."""

        def bad(why: str) -> ArmError:
            return cls(code="", message="", status=status, retry_after=retry_after, malformed=why)

        if not isinstance(body, Mapping):
            return bad(f"the error body is {describe(body)}, not an object")
        obj: Mapping[str, Any] = body
        if "error" in body:
            if not isinstance(body["error"], Mapping):
                return bad(f"'error' is {describe(body['error'])}, not an object")
            obj = body["error"]
        code, message = obj.get("code"), obj.get("message")
        if not isinstance(code, str) or not code:
            return bad(f"the error code is {describe(code)}, not a word")
        if message is not None and not isinstance(message, str):
            return bad(f"the error message is {describe(message)}, not a string")
        return cls(
            code=code,
            message=message or "",
            status=status,
            retry_after=retry_after,
            inner_codes=tuple(_detail_codes(obj.get("details"))),
        )


def _detail_codes(details: Any) -> Iterable[str]:
    if not isinstance(details, list):
        return
    for d in details:
        if isinstance(d, Mapping):
            if d.get("code"):
                yield str(d["code"])
            yield from _detail_codes(d.get("details"))


def is_operation_in_progress(err: ArmError) -> bool:
    """AKS' 409 for a write while another operation on the pool runs (``OperationNotAllowed``)."""
    return (err.status == 409 or err.code in ("OperationNotAllowed", "Conflict")) and bool(
        IN_PROGRESS_TEXT.search(err.message)
    )


def _quota_error(code: str, message: str) -> InsufficientCapacity:
    family = None
    needed = free = None
    m = _QUOTA_FAMILY.search(message)
    if m:
        family = m.group("family").strip()
        family = {"total regional": "cores", "low priority": "lowPriorityCores"}.get(family.lower(), family)
    n = _QUOTA_NUMBERS.search(message)
    if n:
        limit, usage, needed = int(n.group("limit")), int(n.group("usage")), int(n.group("req"))
        free = max(limit - usage, 0)
    return InsufficientCapacity(message, code, family=family, vcpus_needed=needed, vcpus_free=free)


def classify(err: ArmError) -> CloudError:
    """The taxonomy class for one ARM error; the ARM code and message are kept on it."""
    if err.malformed is not None:
        if err.status == 429:
            return Throttled(
                f"too many requests ({err.malformed})", "TooManyRequests", retry_after=err.retry_after
            )
        what = err.request or "a request"
        return malformed(f"{what} (HTTP {err.status})" if err.status else what, err.malformed)
    code, message = err.code, err.message
    codes = [c for c in (code, *err.inner_codes) if c]
    codes += [m.group(1) for m in _CODE_IN_MESSAGE.finditer(message) if m.group(1) not in codes]

    def kept(inner: str) -> str:
        # Keep the outer code visible when a nested code decided the class.
        return message if inner == code or not code else f"{code}: {message}"

    if "QuotaExceeded" in codes or QUOTA_TEXT.search(message):
        return _quota_error("QuotaExceeded", kept("QuotaExceeded"))
    for c in codes:
        if c in SKU_UNAVAILABLE_CODES or c in ALLOCATION_CODES:
            return InsufficientCapacity(kept(c), c)
    if POOL_LIMIT_TEXT.search(message):
        return InsufficientCapacity(kept(POOL_LIMIT_CODE), POOL_LIMIT_CODE)
    for c in codes:
        if c in THROTTLE_CODES:
            return Throttled(kept(c), c, retry_after=err.retry_after)
    if err.status == 429:
        return Throttled(
            message or "too many requests", code or "TooManyRequests", retry_after=err.retry_after
        )
    if is_operation_in_progress(err):
        return Transient(message, code or "OperationNotAllowed")
    if code in PARENT_NOT_FOUND_CODES or (code == "ResourceNotFound" and "agentpools" not in message.lower()):
        return Transient(message, code)  # cluster or group missing: configuration, not a vanished pool
    if code in POOL_NOT_FOUND_CODES or code == "ResourceNotFound":
        return NotFound(message, code)
    for c in codes:
        if c in INVALID_SPEC_CODES:
            return InvalidSpec(kept(c), c)
    if err.status == 404:
        return NotFound(message or "not found", code or "NotFound")
    if err.status == 400:  # no recognised invalid-input code: retried, never final
        return Transient(message or "bad request", code or "BadRequest")
    return Transient(
        message or f"ARM error {code or err.status}", code or (str(err.status) if err.status else None)
    )


def from_exception(exc: BaseException, *, retry_after_cap: float | None = None) -> CloudError:
    """Classify an exception raised by the Azure SDK (or its transport)."""
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None:
        return Transient(f"cannot get an Azure AD token: {_first_line(exc)}", "CredentialUnavailable")
    if isinstance(exc, DecodeError | DeserializationError):
        return Transient(f"malformed ARM answer: {_first_line(exc)}", MALFORMED)
    if isinstance(exc, HttpResponseError):
        arm = arm_error_from_http(exc, retry_after_cap=retry_after_cap)
        return classify(arm)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | TimeoutError | ConnectionError | OSError):
        return Transient(f"cannot reach ARM: {type(exc).__name__}: {_first_line(exc)}", "ConnectionError")
    if isinstance(exc, ValueError | TypeError | AttributeError | KeyError | RecursionError):
        # What the SDK raises while reading an answer it could not make sense of.
        return Transient(f"malformed ARM answer: {type(exc).__name__}: {_first_line(exc)}", MALFORMED)
    return Transient(f"{type(exc).__name__}: {_first_line(exc)}", None)


def arm_error_from_http(exc: HttpResponseError, *, retry_after_cap: float | None = None) -> ArmError:
    """The ARM error of an SDK exception, read from the answer's body itself (the SDK's error model
    keeps whatever types the body had)."""
    status = exc.status_code
    response: Any = exc.response
    if response is None:
        return arm_error_from_detail(exc.error, status=status, fallback=_first_line(exc))
    retry_after = parse_retry_after(response.headers.get("Retry-After"), cap=retry_after_cap)
    err = _read_error(_body(response), status, retry_after)
    if err.malformed is None and not err.message:
        err = replace(err, message=_first_line(exc))
    return replace(err, request=_request_of(response))


def _read_error(body: bytes | None, status: int | None, retry_after: float | None) -> ArmError:
    if body is None:
        return ArmError("", "", status, retry_after, malformed="the error answer has no body")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return ArmError("", "", status, retry_after, malformed="the error answer is not UTF-8 JSON")
    return ArmError.from_body(doc, status, retry_after)


def _request_of(response: Any) -> str | None:
    request = getattr(response, "request", None)
    if request is None:
        return None
    try:
        return f"{request.method} {urlsplit(request.url).path.rsplit('/', 1)[-1]}"
    except (AttributeError, TypeError, ValueError):
        return None


def _body(response: Any) -> bytes | None:
    try:
        content = response.body()
    except Exception:  # not read (a streamed answer whose connection died)
        return None
    return bytes(content) if isinstance(content, bytes | bytearray) and content.strip() else None


def _odata_detail_codes(model: Any) -> Iterable[str]:
    for d in getattr(model, "details", None) or []:
        c = getattr(d, "code", None)
        if c:
            yield str(c)
        yield from _odata_detail_codes(d)


def parse_retry_after(value: str | None, *, cap: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta seconds; HTTP dates are treated as 'soon').

    Anything else (negative, not finite, not a number or a date) is no hint at all: None.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 1.0 if _is_http_date(value) else math.nan
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap) if cap is not None else seconds


def _is_http_date(value: str) -> bool:
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def arm_error_from_detail(detail: Any, *, status: int | None = None, fallback: str = "") -> ArmError:
    """From an SDK ``ErrorDetail`` model (e.g. an agent pool's ``status.provisioningError``)."""
    code, message = getattr(detail, "code", None), getattr(detail, "message", None)
    if not isinstance(code, str | None) or not isinstance(message, str | None):
        return ArmError("", "", status, malformed="the error code or message is not a string")
    return ArmError(
        code=code or "",
        message=message or fallback,
        status=status,
        inner_codes=tuple(_odata_detail_codes(detail)),
    )


def all_failed(failures: list[tuple[str, CloudError]]) -> CloudError:
    """One error for a create where no candidate could be used."""
    if len(failures) == 1:
        return failures[0][1]
    capacity = [e for _, e in failures if isinstance(e, InsufficientCapacity)]
    quota = next((e for e in capacity if e.family), None)
    details = "; ".join(f"{size}: {err}" for size, err in failures)
    return InsufficientCapacity(
        f"{ALL_INSTANCE_TYPES_UNAVAILABLE}: {details}",
        capacity[0].code,
        instance_type=capacity[0].instance_type,
        family=quota.family if quota else None,
        vcpus_needed=quota.vcpus_needed if quota else None,
        vcpus_free=quota.vcpus_free if quota else None,
    )
