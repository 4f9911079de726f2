"""The fake ARM server: assembly, middleware (request log, faults, auth) and the Python API.

In-process use (tests)::

    async with FakeArm(FakeArmConfig(latency=Latency(0.2, 0.2, 0.2))) as arm:
        client = ContainerServiceClient(cred, sub, base_url=arm.endpoint, connection_verify=str(arm.ca_path))
        ...
        assert len(arm.requests("PUT", "/agentPools/")) == 1

From synchronous code (another thread runs the event loop)::

    with FakeArmThread(config) as arm:   # arm.endpoint, arm.ca_path, arm.call(lambda a: a.add_fault(...))
        ...
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from aiohttp import web

from fakes.arm import corruption
from fakes.arm.admin import PREFIX as ADMIN_PREFIX
from fakes.arm.admin import AdminRoutes
from fakes.arm.aks_api import AksRoutes
from fakes.arm.authorization import Authorizer
from fakes.arm.config import FakeArmConfig, Latency
from fakes.arm.errors import (
    INTERNAL_SERVER_ERROR,
    SERVICE_UNAVAILABLE,
    THROTTLED,
    ArmError,
    ErrorContext,
    default_message,
)
from fakes.arm.faults import Fault, FaultSet, HttpFault, RequestLog, RequestRecord
from fakes.arm.hooks import PoolInfo, PoolObserver
from fakes.arm.identity import IdentityRoutes, TokenError, TokenIssuer, check_bearer, unauthorized
from fakes.arm.pools import PoolStore
from fakes.arm.quota import QuotaBook
from fakes.arm.routing import Router
from fakes.arm.skus_api import ComputeRoutes
from fakes.arm.tls import TlsMaterial, ensure_tls

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINT_FILE = "endpoint.env"
_API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta)?$")


class _Dropped(Exception):
    """The connection was closed on purpose (a ``drop`` fault); nothing is sent."""


class FakeArm:
    """One fake ARM server (with its token endpoint) on 127.0.0.1, HTTPS with a private CA."""

    def __init__(
        self,
        config: FakeArmConfig | None = None,
        *,
        port: int = 0,
        state_dir: str | Path | None = None,
        observers: Iterable[PoolObserver] = (),
    ) -> None:
        self.config = copy.deepcopy(config) if config is not None else FakeArmConfig()
        self.config.validate()
        self._initial = copy.deepcopy(self.config)
        self._port = port
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._own_state_dir = False
        self.observers: list[PoolObserver] = list(observers)
        self.faults = FaultSet()
        self.faults.extend(self.config.faults)
        self.log = RequestLog()
        self.quota = QuotaBook(self.config.quota, self.config.baseline_usage)
        self.issuer = TokenIssuer(self.config.token_lifetime, self.config.clients)
        self.authorizer = Authorizer(self.config.denied_actions)
        self.store = PoolStore(self.config, self.faults, self.quota, self._notify)
        self.aks = AksRoutes(self.store)
        self.router = Router()
        self.aks.add_to(self.router)
        ComputeRoutes(self.store).add_to(self.router)
        self._runner: web.AppRunner | None = None
        self._tls: TlsMaterial | None = None
        self._endpoint: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FakeArm:
        if self._runner is not None:
            return self
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="fake-arm-"))
            self._own_state_dir = True
        self._tls = ensure_tls(self._state_dir)
        app = web.Application(middlewares=[self._middleware])
        IdentityRoutes(self.issuer).add_to(app)
        AdminRoutes(self).add_to(app)
        app.router.add_route("*", "/subscriptions/{tail:.*}", self._dispatch_arm)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.setblocking(False)
        site = web.SockSite(runner, sock, ssl_context=self._tls.server_context())
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]
        self._endpoint = f"https://127.0.0.1:{self._port}"
        self._write_endpoint_file()
        log.info("fake ARM listening on %s (CA %s)", self._endpoint, self._tls.ca_cert)
        return self

    async def stop(self) -> None:
        self.store.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None
            self._own_state_dir = False

    async def __aenter__(self) -> FakeArm:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _write_endpoint_file(self) -> None:
        assert self._state_dir is not None
        lines = [f"{key}={value}" for key, value in self.env().items()]
        (self._state_dir / ENDPOINT_FILE).write_text("\n".join(lines) + "\n")

    # -- where it is ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:PORT``: ARM base URL and Entra authority host at once."""
        if self._endpoint is None:
            raise RuntimeError("the fake ARM server is not started")
        return self._endpoint

    @property
    def authority_host(self) -> str:
        return self.endpoint

    @property
    def port(self) -> int:
        return self._port

    @property
    def ca_path(self) -> Path:
        if self._tls is None:
            raise RuntimeError("the fake ARM server is not started")
        return self._tls.ca_cert

    @property
    def state_dir(self) -> Path:
        if self._state_dir is None:
            raise RuntimeError("the fake ARM server is not started")
        return self._state_dir

    def env(self) -> dict[str, str]:
        """Environment a client process needs to reach this server."""
        return {
            "ARM_ENDPOINT": self.endpoint,
            "ARM_CA_BUNDLE": str(self.ca_path),
            "AZURE_AUTHORITY_HOST": self.authority_host,
        }

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting only this server's CA, for plain HTTP clients (aiohttp, urllib)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an Azure management client talking to this server."""
        return {"base_url": self.endpoint, "connection_verify": str(self.ca_path)}

    # -- test and benchmark API ------------------------------------------------------------------

    def requests(
        self, method: str | None = None, path: str | None = None, status: int | None = None, since: int = 0
    ) -> list[RequestRecord]:
        """Logged requests (admin calls excluded); ``path`` is a regex searched in the URL path."""
        return self.log.query(method=method, path=path, status=status, since=since)

    def add_fault(self, spec: Fault | Mapping[str, Any]) -> Fault:
        return self.faults.add(spec)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_quota(self, family: str, limit: int, location: str | None = None) -> None:
        self.quota.set_limit(location or self.config.clusters[0].location, family, limit)

    def set_latency(
        self, create: float | None = None, update: float | None = None, delete: float | None = None
    ) -> None:
        cur = self.store.latency
        self.store.latency = Latency(
            create=cur.create if create is None else create,
            update=cur.update if update is None else update,
            delete=cur.delete if delete is None else delete,
        )

    def quota_report(self, subscription_id: str | None, location: str) -> list[dict[str, Any]]:
        sub = subscription_id or self.config.clusters[0].subscription_id
        used = self.store.usage(sub, location)
        return [
            {
                "family": family,
                "limit": self.quota.limit(location, family),
                "used": used.get(family, 0) + self.quota.baseline(location, family),
            }
            for family in self.quota.families(location)
        ]

    def pools(self) -> list[PoolInfo]:
        return [p.info() for p in sorted(self.store.pools.values(), key=lambda p: (p.cluster.id, p.name))]

    def pool(self, name: str) -> PoolInfo | None:
        """The pool called ``name`` in any cluster (pool names are unique in practice)."""
        for pool in self.store.pools.values():
            if pool.name == name:
                return pool.info()
        return None

    def deny(self, *actions: str) -> None:
        """From now on answer requests needing any of ``actions`` with 403 AuthorizationFailed
        (replaces the denied list; no arguments: every action is granted again)."""
        self.authorizer.set_denied(actions)
        self.config.denied_actions = list(actions)

    def issue_token(self, tenant_id: str = "fake-tenant", client_id: str = "fake-client") -> str:
        return self.issuer.issue(self.endpoint, tenant_id, client_id)

    def add_observer(self, observer: PoolObserver) -> None:
        self.observers.append(observer)

    def reset(self) -> None:
        """Back to the configured state: no pools or operations, configured faults/quota/settings."""
        initial = self._initial
        self.config.lro_retry_after = initial.lro_retry_after
        self.config.max_pools_per_cluster = initial.max_pools_per_cluster
        self.config.serialize_pool_operations = initial.serialize_pool_operations
        self.config.auto_create_clusters = initial.auto_create_clusters
        self.deny(*initial.denied_actions)
        self.store.reset()
        self.aks.page_size = initial.page_size
        self.faults.clear()
        self.faults.extend(initial.faults)
        self.quota.reset()
        self.log.clear()

    # -- observers -------------------------------------------------------------------------------

    def _notify(self, event: str, info: PoolInfo) -> None:
        for observer in list(self.observers):
            method = observer.on_pool_running if event == "running" else observer.on_pool_deleted
            task = asyncio.get_running_loop().create_task(self._call_observer(method, info))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _call_observer(method: Callable[[PoolInfo], Awaitable[None]], info: PoolInfo) -> None:
        try:
            await method(info)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pool observer %r failed for pool %s", method, info.name)

    # -- HTTP ------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX + "/"):
            return await handler(request)
        started = time.time()
        status = 0
        fault_id: str | None = None
        kind: str | None = None
        try:
            fault = self.faults.take_http(request.method, request.path)
            response: web.StreamResponse | None = None
            if fault is not None:
                fault_id = fault.id
                if fault.action == "corrupt":
                    kind = fault.next_kind()
                    response = corruption.instead_of_request(kind, fault.rng)
                else:
                    response = await self._apply_http_fault(fault, request)
            if response is None:
                response = await self._serve(request, handler)
                if fault is not None and kind is not None:
                    response = self._corrupt(request, kind, response, fault)
            _add_arm_headers(request, response)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        except _Dropped:
            status = 0
            raise web.HTTPServiceUnavailable() from None  # never sent: the transport is gone
        finally:
            self.log.record(
                request.method,
                request.path,
                request.query_string,
                status,
                started,
                fault=fault_id,
                client_request_id=request.headers.get("x-ms-client-request-id"),
                corruption=kind,
                user_agent=request.headers.get("User-Agent"),
            )

    @staticmethod
    async def _serve(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ArmError as e:
            return e.response()
        except web.HTTPException:
            raise
        except Exception:
            log.exception("fake ARM handler failed: %s %s", request.method, request.path_qs)
            return ArmError(500, INTERNAL_SERVER_ERROR, "The fake ARM server failed.").response()

    @staticmethod
    def _corrupt(
        request: web.Request, kind: str, response: web.StreamResponse, fault: HttpFault
    ) -> web.Response:
        """The served request's answer, broken as ``kind`` says (``reset``: no answer at all)."""
        if kind == corruption.RESET:
            _abort(request)
        if not isinstance(response, web.Response):
            raise TypeError(f"cannot corrupt a streamed answer to {request.method} {request.path}")
        return corruption.corrupt_answer(kind, response, fault.rng)

    async def _apply_http_fault(self, fault: HttpFault, request: web.Request) -> web.StreamResponse | None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.action == "delay":
            return None
        if fault.action == "drop":
            _abort(request)
        sub = request.match_info.get("tail", "").split("/", 1)[0]
        ctx = ErrorContext(subscription_id=sub)
        headers: dict[str, str] = {}
        if fault.action == "throttle":
            retry_after = 1 if fault.retry_after is None else fault.retry_after
            headers["Retry-After"] = _format_seconds(retry_after)
            kind = "reads" if request.method == "GET" else "writes"
            headers[f"x-ms-ratelimit-remaining-subscription-{kind}"] = "0"
            code = fault.code or THROTTLED
            message = fault.message or (
                f"Number of '{kind[:-1]}' requests for subscription '{sub}' actor "
                f"'{uuid.uuid4()}' exceeded. Please try again after '{_format_seconds(retry_after)}' seconds "
                "after the first request. The throttled policy is 'subscription'."
            )
            return ArmError(fault.status or 429, code, message, headers=headers).response()
        status = fault.status or 500
        if fault.retry_after is not None:
            headers["Retry-After"] = _format_seconds(fault.retry_after)
        code = fault.code or (SERVICE_UNAVAILABLE if status == 503 else INTERNAL_SERVER_ERROR)
        return ArmError(status, code, fault.message or default_message(code, ctx), headers=headers).response()

    async def _dispatch_arm(self, request: web.Request) -> web.StreamResponse:
        client_id, object_id = "", ""
        if self.config.require_auth:
            try:
                claims = check_bearer(request, self.issuer)
            except TokenError as e:
                return unauthorized(request, e)
            client_id, object_id = claims.client_id, claims.object_id
        self.authorizer.check(
            request.method, request.path, client_id or "fake-client", object_id or client_id
        )
        api_version = request.query.get("api-version")
        if not api_version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if not _API_VERSION_RE.match(api_version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. The supported versions are dates like '2026-08-01'.",
            )
        handler, params = self.router.resolve(request.method, request.path)
        return await handler(request, params)


def _abort(request: web.Request) -> NoReturn:
    """Reset the connection: the client sees it close without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise _Dropped()


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _add_arm_headers(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/subscriptions/") or response.prepared:
        return
    response.headers.setdefault("x-ms-request-id", str(uuid.uuid4()))
    response.headers.setdefault(
        "x-ms-correlation-request-id", request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
    )
    client_id = request.headers.get("x-ms-client-request-id")
    if client_id:
        response.headers.setdefault("x-ms-client-request-id", client_id)


class FakeArmThread:
    """Runs a FakeArm on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, config: FakeArmConfig | None = None, **kwargs: Any) -> None:
        self._config = config
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._arm: FakeArm | None = None

    def start(self, timeout: float = 30) -> FakeArmThread:
        started: Future[FakeArm] = Future()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                arm = loop.run_until_complete(FakeArm(self._config, **self._kwargs).start())
            except BaseException as e:
                started.set_exception(e)
                return
            started.set_result(arm)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-arm", daemon=True)
        self._thread.start()
        self._arm = started.result(timeout=timeout)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._loop is None or self._arm is None:
            return
        asyncio.run_coroutine_threadsafe(self._arm.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        self._loop.close()
        self._loop = None
        self._arm = None

    def __enter__(self) -> FakeArmThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def arm(self) -> FakeArm:
        if self._arm is None:
            raise RuntimeError("not started")
        return self._arm

    @property
    def endpoint(self) -> str:
        return self.arm.endpoint

    @property
    def ca_path(self) -> Path:
        return self.arm.ca_path

    def call(self, fn: Callable[[FakeArm], T], timeout: float = 30) -> T:
        """Run ``fn(arm)`` on the server's loop (its state is not thread-safe) and return the result."""
        if self._loop is None:
            raise RuntimeError("not started")

        async def run() -> T:
            return fn(self.arm)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)
