"""The cloud's degraded modes, made visible: a gauge, and one Warning event per mode.

A provider that can run with less (``SupportsDegradation``: on AKS, without the subscription-scope
SKU and usage reads) says which modes it has and which are active. Each mode is exported as
``gpu_provisioner_cloud_degraded{reason}``, read from the provider when scraped, so it follows the
provider's state (a role granted later turns it back to 0) with no loop of its own.

When a mode turns active, the first claim launched while it is gets one Warning event (reason =
the mode's reason) with what is missing and how to grant it; the event is logged like every event.
No other claim gets it while the mode stays active: it is about the controller, not the claim, and
a fleet of claims must not repeat it. If the mode clears and comes back, it is announced again.
"""

from __future__ import annotations

from collections.abc import Callable

from provisioner.claims.model import Claim
from provisioner.cloud.provider import SupportsDegradation
from provisioner.lifecycle.result import Event, EventType
from provisioner.reconcile.context import Context


class DegradationReporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._announced: set[str] = set()
        cloud = ctx.cloud
        if isinstance(cloud, SupportsDegradation):
            for mode in cloud.degradations():
                ctx.metrics.cloud_degraded.labels(mode.reason).set_function(_reading(cloud, mode.reason))

    async def announce(self, claim: Claim) -> None:
        """Post the event of every mode that turned active since it was last announced, on ``claim``."""
        cloud = self.ctx.cloud
        if not isinstance(cloud, SupportsDegradation):
            return
        fresh: list[Event] = []
        for mode in cloud.degradations():
            if not mode.active:
                self._announced.discard(mode.reason)
            elif mode.reason not in self._announced:
                self._announced.add(mode.reason)
                fresh.append(Event(EventType.WARNING, mode.reason, mode.message))
        if fresh:
            await self.ctx.publish(claim, fresh)


def _reading(cloud: SupportsDegradation, reason: str) -> Callable[[], float]:
    """The gauge's value for ``reason``, read from the provider at each scrape."""

    def value() -> float:
        return float(any(mode.active for mode in cloud.degradations() if mode.reason == reason))

    return value
