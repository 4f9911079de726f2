"""How other fakes follow the agent pools of the fake ARM server (the node simulator plugs in here).

An observer is any object with two coroutines::

    class MySimulator:
        async def on_pool_running(self, pool: PoolInfo) -> None: ...   # pool reached Succeeded
        async def on_pool_deleted(self, pool: PoolInfo) -> None: ...   # pool is gone

``on_pool_running`` is called each time an operation leaves a pool in ``Succeeded`` (after the
create, and again after an update such as a count change or a deleteMachines); the pool's
``instance_ids`` then say which scale set VMs exist, so an observer adds the new ones and removes
the ones gone. ``on_pool_deleted`` is called once the delete finished and the pool no longer exists. Calls run as background tasks of the server's event loop:
they never delay an HTTP answer, and an exception is logged, not propagated.

Register observers with ``FakeArm(observers=[...])`` / ``FakeArm.add_observer``, or from the command
line: ``python -m fakes.arm --kubeconfig PATH`` loads ``--observer MODULE:FACTORY`` (default
``fakes.simulator:create_observer``) and calls ``FACTORY(kubeconfig=PATH)`` to get one; an
observer with an async ``close()`` is closed when the server stops.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEFAULT_OBSERVER_FACTORY = "fakes.simulator:create_observer"

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The AKS default node subnet; a node's InternalIP (and its machine's IP) is in it.
NODE_SUBNET_PREFIX = "10.224"


def node_internal_ip(node_name: str) -> str:
    """A stable address in the AKS node subnet 10.224.0.0/16 (never .0-.3 or .255)."""
    h = zlib.crc32(node_name.encode())
    return f"{NODE_SUBNET_PREFIX}.{(h >> 8) & 0xFF}.{4 + h % 250}"


@dataclass(frozen=True)
class PoolInfo:
    """A snapshot of one agent pool, with the names AKS gives to what it creates for it."""

    subscription_id: str
    resource_group: str
    cluster_name: str
    node_resource_group: str
    location: str
    name: str
    id: str
    provisioning_state: str
    vm_size: str
    count: int
    mode: str
    os_type: str
    os_sku: str
    os_disk_size_gb: int
    scale_set_priority: str
    orchestrator_version: str
    node_image_version: str
    availability_zones: tuple[str, ...] = ()
    node_labels: dict[str, str] = field(default_factory=dict)
    node_taints: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    #: The agent pool's ``properties`` exactly as a GET returns them.
    properties: dict[str, Any] = field(default_factory=dict)
    #: Scale set instance ids of the pool's VMs. A scale-out adds ids never used in the pool before
    #: (VMSS does not reuse them), a scale-in removes the highest, deleteMachines exactly the ones
    #: named. None: ``0 .. count-1`` (a pool that never changed size).
    instance_ids: tuple[int, ...] | None = None

    def instances(self) -> Sequence[int]:
        """The instance ids of the pool's VMs, lowest first."""
        return self.instance_ids if self.instance_ids is not None else range(self.count)

    @property
    def vmss_id(self) -> str:
        """The 8-digit number AKS puts in scale set and node names; stable per cluster."""
        digest = hashlib.sha256(
            f"{self.subscription_id}/{self.resource_group}/{self.cluster_name}".lower().encode()
        ).hexdigest()
        return f"{int(digest, 16) % 10**8:08d}"

    @property
    def vmss_name(self) -> str:
        return f"aks-{self.name}-{self.vmss_id}-vmss"

    def node_name(self, index: int = 0) -> str:
        """The Kubernetes node name of scale set instance ``index`` (``aks-<pool>-<id>-vmss000000``)."""
        return f"{self.vmss_name}{_base36(index, 6)}"

    def machine_names(self) -> list[str]:
        """The AKS machine names of the pool's VMs (the same as their node names)."""
        return [self.node_name(i) for i in self.instances()]

    def vm_resource_id(self, index: int = 0) -> str:
        """The ARM id of scale set instance ``index`` (a machine's ``properties.resourceId``)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.node_resource_group}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.vmss_name}/virtualMachines/{index}"
        )

    def provider_id(self, index: int = 0) -> str:
        """The node's ``spec.providerID``; AKS lowercases the node resource group in it."""
        return (
            f"azure:///subscriptions/{self.subscription_id}/resourceGroups/{self.node_resource_group.lower()}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{self.vmss_name}/virtualMachines/{index}"
        )

    def zone_of(self, index: int = 0) -> str | None:
        """The zone instance ``index`` lands in (round-robin over the pool's zones), as ``eastus-1``."""
        if not self.availability_zones:
            return None
        return f"{self.location}-{self.availability_zones[index % len(self.availability_zones)]}"


def _base36(n: int, width: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 36)
        digits = _BASE36[r] + digits
        if n == 0:
            break
    return digits.rjust(width, "0")


@runtime_checkable
class PoolObserver(Protocol):
    async def on_pool_running(self, pool: PoolInfo) -> None: ...

    async def on_pool_deleted(self, pool: PoolInfo) -> None: ...
