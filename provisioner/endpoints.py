"""HTTP endpoints: ``/healthz`` and ``/readyz`` for probes, ``/metrics`` for Prometheus.

Ready means: the API server answers, and the cloud accepts our credentials (providers that can
check that expose an async ``check() -> (ok, reason)``). Both are checked at most every few seconds
and the result is cached, so probes cost neither API server nor cloud much. A standby replica is
ready too (it could take over at any time); the leader gauge tells which one acts. A cloud that is
usable but degraded (e.g. an optional permission denied) answers ok with a reason: ``/readyz``
stays 200 and shows it, ``ok (cloud: degraded: ...)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from provisioner.kube import ApiError, KubeClient
from provisioner.metrics import Metrics
from provisioner.settings import StartupError

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]


class ReadinessProbe:
    def __init__(self, kube: KubeClient, cloud_check: Check | None, *, cache_seconds: float = 5.0) -> None:
        self.kube = kube
        self.cloud_check = cloud_check
        self.cache_seconds = cache_seconds
        self._last: tuple[float, bool, str] | None = None

    async def check(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self.cache_seconds:
            return self._last[1], self._last[2]
        ok, reason = await self._check()
        if not ok and (self._last is None or self._last[1]):
            logger.warning("not ready: %s", reason)
        self._last = (now, ok, reason)
        return ok, reason

    async def _check(self) -> tuple[bool, str]:
        try:
            await self.kube.request("GET", "/version")
        except ApiError as e:
            return False, f"API server: {e}"
        if self.cloud_check is not None:
            try:
                ok, reason = await self.cloud_check()
            except Exception as e:  # a provider's check must never take the probe down
                ok, reason = False, f"{type(e).__name__}: {e}"
            if not ok:
                return False, f"cloud: {reason}"
            if reason and reason != "ok":
                return True, f"ok (cloud: {reason})"
        return True, "ok"


def build_app(*, metrics: Metrics | None, readiness: ReadinessProbe | None) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if readiness is None:
            return web.Response(text="ok\n")
        ok, reason = await readiness.check()
        return web.Response(status=200 if ok else 503, text=f"{reason}\n")

    async def metrics_handler(_: web.Request) -> web.Response:
        assert metrics is not None
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    if readiness is not None:
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
    if metrics is not None:
        app.router.add_get("/metrics", metrics_handler)
    return app


class Servers:
    """The metrics and health servers (one listener when both use the same port)."""

    def __init__(self) -> None:
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}

    async def start(
        self, *, bind: str, metrics_port: int, health_port: int, metrics: Metrics, readiness: ReadinessProbe
    ) -> None:
        plan: list[tuple[str, int, web.Application]] = []
        if metrics_port and metrics_port == health_port:
            plan.append(("metrics+health", metrics_port, build_app(metrics=metrics, readiness=readiness)))
        else:
            if metrics_port:
                plan.append(("metrics", metrics_port, build_app(metrics=metrics, readiness=None)))
            if health_port:
                plan.append(("health", health_port, build_app(metrics=None, readiness=readiness)))
        for name, port, app in plan:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            try:
                await web.TCPSite(runner, bind, port).start()
            except OSError as e:
                setting = "METRICS_PORT" if name.startswith("metrics") else "HEALTH_PORT"
                raise StartupError(
                    f"cannot serve {name} on {bind}:{port}: {e.strerror or e}; "
                    f"set {setting} (or BIND_ADDRESS) to a free port (0 turns it off)"
                ) from e
            self.ports[name] = port
            logger.info("serving %s on %s:%d", name, bind, port)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
