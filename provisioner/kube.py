"""A small async Kubernetes REST client.

The official ``kubernetes`` package is synchronous; calling it from kopf's event loop would block
every handler. We keep it only for what it does well — reading kubeconfig files and in-cluster
service-account settings (including exec plugins and token rotation) — and send requests with
aiohttp on the operator's loop. The surface is exactly what the controller needs: get, list,
create, patch, delete, and the Eviction subresource, on plain dict objects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

logger = logging.getLogger(__name__)

Body = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason and message.

    Transport failures (connection refused, timeouts) are ApiErrors too, with status 0.
    """

    def __init__(self, status: int, reason: str, message: str, body: Body | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class TooManyRequestsError(ApiError):
    """429: for evictions this means a PodDisruptionBudget does not allow it now."""


def _error_for(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    message = str(body.get("message", text)) if isinstance(body, dict) else text
    cls: type[ApiError] = {404: NotFoundError, 409: ConflictError, 429: TooManyRequestsError}.get(
        status, ApiError
    )
    return cls(status, reason, message, body if isinstance(body, dict) else None)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str
    version: str
    plural: str
    namespaced: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, name: str | None = None, namespace: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


NODES = Resource("", "v1", "nodes")
PODS = Resource("", "v1", "pods", namespaced=True)
EVENTS = Resource("", "v1", "events", namespaced=True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", namespaced=True)
VOLUME_ATTACHMENTS = Resource("storage.k8s.io", "v1", "volumeattachments")
PERSISTENT_VOLUMES = Resource("", "v1", "persistentvolumes")

#: How often a GET answered 429 (with its Retry-After) is repeated before the 429 is raised.
GET_RETRIES_ON_429 = 5
#: How long a credential refreshed from the kubeconfig (token file, exec plugin) is reused.
CREDENTIAL_REFRESH_SECONDS = 10.0


class KubeClient:
    """One aiohttp session to the API server; create with :meth:`from_config`, then ``close()``."""

    def __init__(self, configuration: k8s_client.Configuration, *, timeout: float = 30.0) -> None:
        self._config = configuration
        self._base = str(configuration.host).rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = self._ssl_context(configuration)
        self._session: aiohttp.ClientSession | None = None
        self._auth: dict[str, str] = {}
        self._auth_at: float | None = None
        self._auth_lock = asyncio.Lock()
        #: Called with "kube" immediately before every write is sent; raises to refuse it (fencing).
        self.write_gate: Callable[[str], None] | None = None
        #: Names this replica in the API server's audit log.
        self.user_agent = "gpu-provisioner"

    @property
    def server(self) -> str:
        return self._base

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, *, timeout: float = 30.0) -> KubeClient:
        """In-cluster settings when running in a pod (and no kubeconfig given), else the kubeconfig."""
        configuration = k8s_client.Configuration()
        if (
            kubeconfig is None
            and "KUBERNETES_SERVICE_HOST" in os.environ
            and not os.environ.get("KUBECONFIG")
        ):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(configuration, timeout=timeout)

    async def credentials(self) -> dict[str, Any]:
        """Server, TLS files and token of this client (for kopf's own login)."""
        c = self._config
        token = (await self._headers()).get("Authorization", "")
        scheme, _, value = token.partition(" ")
        return {
            "server": self._base,
            "ca_path": c.ssl_ca_cert or None,
            "insecure": not c.verify_ssl,
            "certificate_path": c.cert_file or None,
            "private_key_path": c.key_file or None,
            "scheme": scheme or None,
            "token": value or None,
        }

    @staticmethod
    def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
        if not configuration.host.startswith("https"):
            return False
        if not configuration.verify_ssl:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file and configuration.key_file:
            ctx.load_cert_chain(configuration.cert_file, configuration.key_file)
        return ctx

    async def _headers(self) -> dict[str, str]:
        """Request headers with a current credential.

        The kubeconfig loader's refresh hook re-reads a rotated service-account token, or runs an
        exec plugin (a subprocess, possibly slow) when its token expired. It is synchronous, so it
        runs in a thread — never on the event loop — and at most every few seconds.
        """
        now = time.monotonic()
        if self._auth_at is None or now - self._auth_at >= CREDENTIAL_REFRESH_SECONDS:
            async with self._auth_lock:
                if self._auth_at is None or time.monotonic() - self._auth_at >= CREDENTIAL_REFRESH_SECONDS:
                    self._auth = await asyncio.to_thread(self._refresh_auth)
                    self._auth_at = time.monotonic()
        return {"Accept": "application/json", "User-Agent": self.user_agent, **self._auth}

    def _refresh_auth(self) -> dict[str, str]:
        hook = self._config.refresh_api_key_hook
        if hook is not None:
            hook(self._config)
        token = self._config.get_api_key_with_prefix("authorization") or self._config.get_api_key_with_prefix(
            "BearerToken"
        )
        return {"Authorization": str(token)} if token else {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        fenced: bool = True,
    ) -> Body:
        """One request. Writes (anything but GET) pass the write gate last, unless ``fenced`` is
        False (the Lease itself)."""
        headers = await self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        if fenced and method != "GET" and self.write_gate is not None:
            self.write_gate("kube")
        for attempt in range(GET_RETRIES_ON_429 + 1):
            status, text, retry_after = await self._send(method, path, data, params, headers)
            # A read the server asks to repeat (a custom resource's storage still initializing,
            # API priority and fairness): repeated after its Retry-After, as client-go does.
            if status != 429 or method != "GET" or attempt == GET_RETRIES_ON_429:
                break
            await asyncio.sleep(min(retry_after, 5.0))
        if status >= 400:
            raise _error_for(status, text)
        return cast(Body, json.loads(text)) if text else {}

    async def _send(
        self,
        method: str,
        path: str,
        data: str | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
    ) -> tuple[int, str, float]:
        """(status, body text, Retry-After seconds or 1)."""
        try:
            async with self.session.request(
                method, self._base + path, data=data, params=params, headers=headers, ssl=self._ssl
            ) as resp:
                text = await resp.text()
                try:
                    retry_after = float(resp.headers.get("Retry-After", "1"))
                except ValueError:
                    retry_after = 1.0
                return resp.status, text, max(0.0, retry_after)
        except aiohttp.ClientConnectorError as e:
            why = e.os_error.strerror or str(e.os_error)
            raise ApiError(
                0, "Unreachable", f"{method} {path}: cannot connect to {e.host}:{e.port}: {why}"
            ) from e
        except (TimeoutError, aiohttp.ClientError) as e:
            raise ApiError(0, "Unreachable", f"{method} {path}: {type(e).__name__}: {e}") from e

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long-lived GET (a watch): the response, for reading its body incrementally.

        The client's total timeout does not apply; the stream ends when no byte arrives for
        ``read_timeout`` seconds. Errors (status >= 400) are raised as ApiError before yielding.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        async with self.session.get(
            self._base + path, params=params, headers=await self._headers(), ssl=self._ssl, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                raise _error_for(resp.status, await resp.text())
            yield resp

    # -- verbs ----------------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> Body:
        return await self.request("GET", res.path(name, namespace))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Body]:
        items, _ = await self.list_with_version(
            res, namespace, label_selector=label_selector, field_selector=field_selector
        )
        return items

    async def list_with_version(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[Body], str]:
        """Every item (all pages) and the resourceVersion the list was served at."""
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        items: builtins.list[Body] = []
        version = ""
        while True:
            page = await self.request("GET", res.path(namespace=namespace), params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            cont = meta.get("continue")
            if not cont:
                return items, version
            params["continue"] = cont

    async def create(
        self, res: Resource, body: Body, namespace: str | None = None, *, fenced: bool = True
    ) -> Body:
        return await self.request("POST", res.path(namespace=namespace), body=body, fenced=fenced)

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
        fenced: bool = True,
    ) -> Body:
        return await self.request(
            "PATCH",
            res.path(name, namespace, subresource),
            body=patch,
            content_type=content_type,
            fenced=fenced,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        grace_period_seconds: int | None = None,
        preconditions_uid: str | None = None,
    ) -> Body:
        options: Body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions_uid:
            options["preconditions"] = {"uid": preconditions_uid}
        return await self.request("DELETE", res.path(name, namespace), body=options)

    async def evict(self, name: str, namespace: str) -> None:
        """Ask to evict a pod through the Eviction API (honours PodDisruptionBudgets: 429 when not allowed)."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        await self.request("POST", PODS.path(name, namespace, "eviction"), body=body)
