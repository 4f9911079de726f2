"""The shared pools' task over a scripted ARM: what it sends, and what it remembers while a write
is on its way (asks and removals keep arriving during every await)."""

from __future__ import annotations

import asyncio
from typing import Any

from azure.mgmt.containerservice.models import AgentPool

from provisioner.cloud.azure.cache import PoolNames
from provisioner.cloud.azure.shared import SharedPools, is_shared_pool, pool_name, shape_of


class ScriptedArm:
    """Answers as AKS would for one pool; ``hold`` keeps the next deleteMachines answer back."""

    def __init__(self, machines: list[str]) -> None:
        self.machines = set(machines)
        self.state = "Succeeded"
        self.sent: list[tuple[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.in_flight = asyncio.Event()

    async def get_pool(self, name: str) -> AgentPool:
        return AgentPool(
            {"name": name, "properties": {"count": len(self.machines), "provisioningState": self.state}}
        )

    async def machine_names(self, pool: str) -> set[str]:
        return set(self.machines)

    async def delete_machines(self, pool: str, names: list[str]) -> None:
        self.sent.append(("deleteMachines", sorted(names)))
        self.in_flight.set()
        if self.hold is not None:
            await self.hold.wait()
        self.machines -= set(names)

    async def put_pool(self, name: str, pool: AgentPool, **kw: Any) -> None:
        assert pool.properties is not None
        self.sent.append(("PUT", pool.properties.count))


async def until(condition: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


def test_shared_pool_names_are_told_apart_from_claim_pool_names() -> None:
    body = {"properties": {"vmSize": "Standard_NC24ads_A100_v4", "count": 3, "tags": {"a": "b"}}}
    name = pool_name(shape_of(body), 7)
    assert is_shared_pool(name) and len(name) <= 12 and name.endswith("07")
    same_shape = {"properties": {"vmSize": "Standard_NC24ads_A100_v4", "count": 9, "nodeLabels": {"x": "y"}}}
    assert shape_of(same_shape) == shape_of(body), "count, tags and labels are no part of the shape"
    assert shape_of({"properties": {"vmSize": "Standard_NC40ads_H100_v5"}}) != shape_of(body)
    assert not is_shared_pool("ws1a2b3c4d5") and not is_shared_pool("g0123456789a")


async def test_a_removal_asked_while_a_deletemachines_is_on_its_way_is_sent_next_not_lost() -> None:
    arm = ScriptedArm(["m0", "m1", "m2", "m3"])
    pools = SharedPools(arm, PoolNames(), max_nodes=100, batch=0)  # type: ignore[arg-type]
    try:
        arm.hold = asyncio.Event()
        assert not pools.remove("s0000000000", ["m0"])
        await asyncio.wait_for(arm.in_flight.wait(), 5)
        assert not pools.remove("s0000000000", ["m1"])  # arrives during the first call
        arm.hold.set()
        await until(lambda: pools.remove("s0000000000", ["m0", "m1"]))
        assert arm.sent == [("deleteMachines", ["m0"]), ("deleteMachines", ["m1"])]
        assert arm.machines == {"m2", "m3"}
    finally:
        await pools.close()


async def test_an_ask_made_before_a_removal_is_lowered_by_it() -> None:
    arm = ScriptedArm(["m0", "m1", "m2"])
    pools = SharedPools(arm, PoolNames(), max_nodes=100, batch=0.05)  # type: ignore[arg-type]
    try:
        pools.listed([await arm.get_pool("s0000000000")])
        pools.want("s0000000000", 4)  # three claims on their nodes, one more waiting
        pools.remove("s0000000000", ["m2"])  # one of the three is deleted: three are needed
        await until(lambda: pools.remove("s0000000000", ["m2"]))
        await until(lambda: ("PUT", 3) in arm.sent)
        assert arm.sent == [("deleteMachines", ["m2"]), ("PUT", 3)]
    finally:
        await pools.close()
