"""The fake ARM's ``corrupt`` fault: each of its fourteen kinds of malformed answer, as a plain HTTPS
client receives it, and the ratio/seed/cycle that make a corrupted run reproducible."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakes.arm import FakeArm, FakeArmConfig
from fakes.arm.corruption import HUGE_BYTES, KINDS
from fakes.arm.faults import FaultSpecError, HttpFault
from tests.integration.conftest import CLUSTER, FAST, RESOURCE_GROUP, SUBSCRIPTION

POOLS = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerService/managedClusters/{CLUSTER}/agentPools"
API = "?api-version=2026-08-01"
POOL_BODY = {
    "properties": {"vmSize": "Standard_NC4as_T4_v3", "count": 1, "mode": "User", "availabilityZones": ["1"]}
}

Answer = tuple[int, dict[str, str], bytes]


@pytest.fixture
async def send(arm: FakeArm, http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Awaitable[Answer]]]:
    """A raw ARM call: (status, headers, body bytes); status 0 when the connection was reset."""
    auth = {"Authorization": f"Bearer {arm.issue_token()}"}

    async def call(method: str, path: str, body: Any = None) -> Answer:
        try:
            async with http.request(method, path + API, json=body, headers=auth) as resp:
                return resp.status, dict(resp.headers), await resp.read()
        except aiohttp.ClientError:
            return 0, {}, b""

    await call("PUT", f"{POOLS}/wsa", POOL_BODY)
    yield call


def corrupt(kind: str, **extra: Any) -> dict[str, Any]:
    return {"action": "corrupt", "kinds": [kind], "method": "GET", "path": r"/agentPools/wsa$", **extra}


def parses(body: bytes) -> Any:
    return json.loads(body.decode("utf-8"))


async def test_each_kind_breaks_an_agent_pool_answer_its_own_way(
    arm: FakeArm, send: Callable[..., Awaitable[Answer]]
) -> None:
    pool_path = f"{POOLS}/wsa"
    good_status, _, good = await send("GET", pool_path)
    pool = parses(good)
    assert good_status == 200 and pool["name"] == "wsa"

    def answer_to(kind: str) -> Awaitable[Answer]:
        arm.clear_faults()
        arm.add_fault(corrupt(kind))
        return send("GET", pool_path)

    status, _, body = await answer_to("list_body")
    assert status == 200 and parses(body) == [pool]
    status, _, body = await answer_to("string_body")
    assert isinstance(parses(body), str) and json.loads(parses(body)) == pool
    assert parses((await answer_to("null_body"))[2]) is None
    status, _, body = await answer_to("empty_200")
    assert (status, body) == (200, b"")
    with pytest.raises(UnicodeDecodeError):
        (await answer_to("non_utf8"))[2].decode("utf-8")
    body = (await answer_to("truncated"))[2]
    assert good.startswith(body) and len(body) < len(good)
    with pytest.raises(ValueError):
        parses(body)
    body = (await answer_to("huge"))[2]
    assert len(body) > HUGE_BYTES and parses(body)["name"] == "wsa"
    status, headers, body = await answer_to("html")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"502 Bad Gateway" in body
    nested = parses((await answer_to("nested_not_object"))[2])
    assert nested["properties"] == [pool["properties"]]
    typed = parses((await answer_to("wrong_field_types"))[2])
    assert typed["name"] == len("wsa") and isinstance(typed["properties"]["count"], str)
    assert isinstance(typed["properties"]["availabilityZones"], str)
    status, headers, body = await answer_to("bad_retry_after")
    retry_after = headers["Retry-After"]
    assert not retry_after.isdigit()
    assert status in (200, 429, 503)
    status, _, body = await answer_to("error_message_not_string")
    error = parses(body)["error"]
    assert status in (400, 500) and not isinstance(error["message"], str)
    status, _, body = await answer_to("error_not_object")
    assert status >= 400 and not isinstance(parses(body)["error"], dict)
    assert (await answer_to("reset"))[0] == 0

    # aiohttp resends an idempotent request once when the connection dies: two resets at the end.
    records = arm.requests("GET", r"/agentPools/wsa$")
    assert [r.corruption for r in records[1:]] == [*KINDS, "reset"]
    assert records[-1].dropped and records[-2].dropped


async def test_listings_get_entries_that_are_not_objects(
    arm: FakeArm, send: Callable[..., Awaitable[Answer]]
) -> None:
    arm.add_fault({"action": "corrupt", "kinds": ["nested_not_object"], "path": r"/agentPools$"})
    page = parses((await send("GET", POOLS))[2])
    assert [json.loads(entry)["name"] for entry in page["value"]] == ["wsa"]


async def test_a_corrupted_write_answer_still_served_the_write(
    arm: FakeArm, send: Callable[..., Awaitable[Answer]]
) -> None:
    arm.add_fault({"action": "corrupt", "kinds": ["truncated"], "method": "PUT", "path": POOLS})
    status, _, _ = await send("PUT", f"{POOLS}/wsb", POOL_BODY)
    assert status == 201 and arm.pool("wsb") is not None
    arm.clear_faults()
    arm.add_fault({"action": "corrupt", "kinds": ["error_not_object"], "method": "PUT", "path": POOLS})
    assert (await send("PUT", f"{POOLS}/wsc", POOL_BODY))[0] >= 400
    assert arm.pool("wsc") is None  # an error answer means nothing was done


def test_a_cycle_holds_every_kind_once_and_a_seed_repeats_the_run() -> None:
    def run(seed: int) -> list[str | None]:
        rule = HttpFault(action="corrupt", ratio=0.2, seed=seed)
        return [rule.next_kind() if rule.take() else None for _ in range(2000)]

    first = run(7)
    assert first == run(7) and first != run(8)
    fired = [k for k in first if k is not None]
    assert 300 < len(fired) < 500  # about a fifth
    for start in range(0, len(fired) - len(KINDS), len(KINDS)):
        assert sorted(fired[start : start + len(KINDS)]) == sorted(KINDS)


@pytest.mark.parametrize(
    "spec",
    [
        {"action": "corrupt", "kinds": ["no_such_kind"]},
        {"action": "corrupt", "kinds": []},
        {"action": "corrupt", "ratio": 1.5},
        {"action": "corrupt", "ratio": "often"},
        {"action": "throttle", "kinds": ["reset"]},
    ],
)
def test_unusable_corruption_rules_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(FaultSpecError):
        HttpFault(**spec)


async def test_admin_api_takes_corruption_rules_and_reports_the_kinds_applied(
    arm: FakeArm, http: aiohttp.ClientSession, send: Callable[..., Awaitable[Answer]]
) -> None:
    resp = await http.post(
        "/_fake/faults", json={"action": "corrupt", "path": r"/agentPools/wsa$", "ratio": 0.5, "seed": 3}
    )
    assert resp.status == 201
    rule = (await resp.json())["faults"][0]
    assert (rule["kinds"], rule["ratio"], rule["seed"]) == (list(KINDS), 0.5, 3)
    assert (await http.post("/_fake/faults", json={"action": "corrupt", "kinds": ["x"]})).status == 400
    for _ in range(40):
        await send("GET", f"{POOLS}/wsa")
    listed = (await (await http.get("/_fake/faults")).json())["faults"][0]
    records = arm.requests("GET", r"/agentPools/wsa$")  # a reset answer is sent again by aiohttp
    assert 0 < listed["applied"] < listed["matched"] == len(records)
    assert sum(listed["kinds_applied"].values()) == listed["applied"]
    assert len([r for r in records if r.corruption]) == listed["applied"]


async def test_corruption_rules_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "arm.json"
    rule = {
        "action": "corrupt",
        "kinds": ["html", "reset"],
        "ratio": 0.2,
        "seed": 1,
        "path": "^/subscriptions/",
    }
    config.write_text(json.dumps({"faults": [rule]}))
    async with FakeArm(FakeArmConfig.from_file(config), state_dir=tmp_path / "arm") as server:
        (loaded,) = list(server.faults)
        assert isinstance(loaded, HttpFault)
        assert (loaded.kinds, loaded.ratio, loaded.seed) == (["html", "reset"], 0.2, 1)


@pytest.fixture
def arm_config() -> FakeArmConfig:
    return FakeArmConfig(latency=FAST)
