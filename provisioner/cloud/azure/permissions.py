"""The optional subscription-scope reads, and what the provider does while Azure denies them.

Creating and deleting agent pools needs rights on the AKS cluster only (Contributor on the cluster,
as Kaito's install guide grants). Two reads before a create need more, at subscription scope:

* ``Microsoft.Compute/skus/read`` (Resource SKUs): VM size facts, zones and restrictions;
* ``Microsoft.Compute/locations/usages/read`` (compute usages): the vCPU quota pre-flight.

Both come with the built-in Reader role on the subscription (or a custom role with just these two
actions). When Azure answers either with 403 ``AuthorizationFailed``, the provider does without
it instead of retrying forever: the VM size is taken on trust and AKS validates it on the PUT,
the quota is left to AKS's own check. Each denial is asked again every ``recheck`` seconds, so a
role granted later takes effect without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.cloud.azure.cache import Clock
from provisioner.cloud.errors import CloudError
from provisioner.cloud.types import Degradation

log = logging.getLogger(__name__)

#: ARM error codes of a caller whose roles do not include the action.
DENIED_CODES = frozenset({"AuthorizationFailed"})
#: A denied read is asked again after at most this many seconds (or its cache TTL, if shorter).
RECHECK_SECONDS = 300.0
_ROLE = "Reader on the subscription (or a custom role with {action})"


@dataclass(frozen=True)
class OptionalRead:
    """One subscription-scope read the provider can do without."""

    #: Degradation reason while denied (metric label, event reason).
    reason: str
    action: str
    #: What the provider does without it.
    without: str


SKUS_READ = OptionalRead(
    "SkuReadDenied",
    "Microsoft.Compute/skus/read",
    "VM sizes are taken on trust and AKS validates them on create; vCPUs, memory and GPUs come "
    "from the built-in table of GPU sizes (for other sizes from the Node once it joins), zones "
    "and restrictions are not checked before the PUT",
)
USAGES_READ = OptionalRead(
    "UsageReadDenied",
    "Microsoft.Compute/locations/usages/read",
    "the vCPU quota pre-flight is skipped: a create beyond the quota is refused by AKS "
    "(QuotaExceeded) and retried with backoff (AZURE_QUOTA_PREFLIGHT=false stops asking)",
)
OPTIONAL_READS: tuple[OptionalRead, ...] = (SKUS_READ, USAGES_READ)


def is_denied(err: CloudError) -> bool:
    """Whether Azure refused the call for lack of a role assignment."""
    return (err.code or "") in DENIED_CODES


class Permissions:
    """Which optional reads Azure currently denies, as the last answer to each said.

    ``recheck`` maps each read to how long a denial stands before the read is tried again (the
    caller passes the shorter of its cache TTL and ``RECHECK_SECONDS``).
    """

    def __init__(
        self,
        subscription_id: str,
        recheck: Mapping[OptionalRead, float],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._scope = f"/subscriptions/{subscription_id}"
        self._recheck = dict(recheck)
        self._clock = clock
        self._denied: dict[OptionalRead, float] = {}

    def denied(self, read: OptionalRead) -> bool:
        return read in self._denied

    def max_age(self, read: OptionalRead) -> float | None:
        """How old a cached answer to ``read`` may be: a denial only ``recheck`` seconds."""
        return self._recheck.get(read, RECHECK_SECONDS) if self.denied(read) else None

    def due(self, read: OptionalRead) -> bool:
        """Whether ``read`` is denied and the denial is old enough to ask again."""
        since = self._denied.get(read)
        return since is not None and self._clock() - since >= self._recheck.get(read, RECHECK_SECONDS)

    def deny(self, read: OptionalRead, err: CloudError) -> None:
        if not self.denied(read):
            log.info("Azure denies %s (%s); working without it until it is granted", read.action, err.code)
        self._denied[read] = self._clock()

    def allow(self, read: OptionalRead) -> None:
        if self._denied.pop(read, None) is not None:
            log.info("Azure allows %s again; its pre-flight is back", read.action)

    def degradations(self) -> tuple[Degradation, ...]:
        """Every optional read, active while it is denied."""
        return tuple(self._degradation(read) for read in OPTIONAL_READS)

    def _degradation(self, read: OptionalRead) -> Degradation:
        role = _ROLE.format(action=read.action)
        every = self._recheck.get(read, RECHECK_SECONDS)
        message = (
            f"Azure denies {read.action} at scope {self._scope} (AuthorizationFailed); grant {role} to the "
            f"controller's identity to restore the pre-flight. Until then {read.without}. Asked again every "
            f"{every:g}s, no restart needed."
        )
        detail = f"{read.reason}: Azure denies {read.action} at {self._scope}; grant {role}"
        return Degradation(reason=read.reason, active=self.denied(read), message=message, detail=detail)
