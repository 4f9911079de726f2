"""Runtime plumbing: credentials refreshed off the event loop, and an exit code that tells a crash
from a clean stop."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from provisioner import operator
from provisioner.kube import KubeClient
from provisioner.settings import Settings, StartupError

EXEC_PLUGIN = """
import json, sys, time
time.sleep(1.0)  # a slow credential helper (a cloud CLI, a vault round trip)
json.dump({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": "token-from-exec", "expirationTimestamp": "2000-01-01T00:00:00Z"},
}, sys.stdout)
"""


def _kubeconfig(tmp_path: Path, user: dict[str, Any], server: str = "https://127.0.0.1:1") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


async def _max_gap_while(work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work`` while a ticker measures the longest the event loop went without running it."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        result = await work()
    finally:
        done.set()
        await ticker
    return result, max(gaps, default=0.0)


async def test_an_exec_credential_plugin_never_blocks_the_event_loop(tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(EXEC_PLUGIN)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }
    client = await asyncio.to_thread(KubeClient.from_config, str(_kubeconfig(tmp_path, user)))
    try:
        # The token is expired, so getting headers runs the (one-second) plugin again.
        headers, gap = await _max_gap_while(client._headers)
        assert headers["Authorization"] == "Bearer token-from-exec"
        assert gap < 0.5, f"the event loop stalled for {gap:.2f}s while the plugin ran"
        # And within a few seconds the refreshed credential is reused: no plugin run per request.
        started = time.monotonic()
        await client._headers()
        assert time.monotonic() - started < 0.5
    finally:
        await client.close()


@pytest.fixture
async def quiet_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Settings, str]]:
    """Settings and a kubeconfig for ``operator.run`` whose API server answers only ``/version``
    (start-up waits for it; kopf itself is replaced by each test)."""
    monkeypatch.setenv("FAKE_CLOUD_SIMULATE_NODES", "false")

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"gitVersion": "v1.34.0"})

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    kubeconfig = _kubeconfig(tmp_path, {"token": "t"}, server=f"http://127.0.0.1:{port}")
    settings = Settings(cloud="fake", leader_elect=False, metrics_port=0, health_port=0)
    try:
        yield settings, str(kubeconfig)
    finally:
        await runner.cleanup()


async def test_an_unreachable_api_server_fails_the_start_after_a_bounded_wait(tmp_path: Path) -> None:
    settings = Settings(cloud="fake", leader_elect=False, metrics_port=0, health_port=0, api_server_wait=1.0)
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"cannot reach the API server https://127\.0\.0\.1:1 within 1s"):
        await operator.run(settings, kubeconfig=str(_kubeconfig(tmp_path, {"token": "t"})))
    assert time.monotonic() - started < 10


async def test_a_crashed_operator_exits_non_zero(
    quiet_runtime: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(**_: Any) -> None:
        raise RuntimeError("watch stream broke for good")

    monkeypatch.setattr(operator.kopf, "operator", crash)
    settings, kubeconfig = quiet_runtime
    assert await operator.run(settings, kubeconfig=kubeconfig) == 1


async def test_an_operator_that_stopped_on_a_signal_exits_zero(
    quiet_runtime: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stopped(**_: Any) -> None:
        return None  # what kopf does once it handled SIGTERM itself

    monkeypatch.setattr(operator.kopf, "operator", stopped)
    settings, kubeconfig = quiet_runtime
    assert await operator.run(settings, kubeconfig=kubeconfig) == 0
