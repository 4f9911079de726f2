"""The Microsoft.ContainerService endpoints: managed cluster GET, agent pools, their machines,
deleteMachines, operation status.

Wire behaviour follows ARM's async-operation contract as the SDK's ``AsyncARMPolling`` consumes it:
a write answers at once (PUT 201 new / 200 update, DELETE 202, POST deleteMachines 202) with
``Azure-AsyncOperation`` and ``Location`` headers and, as AKS, ``Retry-After`` (config
``lro_retry_after``, 1 s by default), which the SDK's poller waits between polls; the client polls
the operation status until ``Succeeded``/``Failed`` and, for a PUT, reads the pool again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fakes.arm.errors import ArmError
from fakes.arm.pools import Operation, Pool, PoolStore
from fakes.arm.routing import Params, Router, arm_json, base_url, read_json_body

OPERATIONS_API_VERSION = "2016-03-30"
_CLUSTER = (
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}"
)
_OPERATIONS = "/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{location}"


class AksRoutes:
    def __init__(self, store: PoolStore) -> None:
        self.store = store
        #: Agent pools per list page (the admin endpoint may change it at run time).
        self.page_size = store.config.page_size

    def add_to(self, router: Router) -> None:
        router.add("GET", _CLUSTER, self.get_cluster)
        router.add("GET", f"{_CLUSTER}/agentPools", self.list_pools)
        router.add("GET", f"{_CLUSTER}/agentPools/{{pool}}", self.get_pool)
        router.add("PUT", f"{_CLUSTER}/agentPools/{{pool}}", self.put_pool)
        router.add("DELETE", f"{_CLUSTER}/agentPools/{{pool}}", self.delete_pool)
        router.add("POST", f"{_CLUSTER}/agentPools/{{pool}}/deleteMachines", self.delete_machines)
        router.add("GET", f"{_CLUSTER}/agentPools/{{pool}}/machines", self.list_machines)
        router.add("GET", f"{_CLUSTER}/agentPools/{{pool}}/machines/{{machine}}", self.get_machine)
        router.add("GET", f"{_OPERATIONS}/operations/{{op}}", self.operation_status)
        router.add("GET", f"{_OPERATIONS}/operationresults/{{op}}", self.operation_result)

    # -- helpers ---------------------------------------------------------------------------------

    def _lro_headers(self, request: web.Request, op: Operation) -> dict[str, str]:
        root = f"{base_url(request)}/subscriptions/{op.subscription_id}/providers/Microsoft.ContainerService"
        query = f"?api-version={OPERATIONS_API_VERSION}"
        headers = {
            "Azure-AsyncOperation": f"{root}/locations/{op.location}/operations/{op.id}{query}",
            "Location": f"{root}/locations/{op.location}/operationresults/{op.id}{query}",
        }
        if self.store.config.lro_retry_after is not None:
            headers["Retry-After"] = str(self.store.config.lro_retry_after)
        return headers

    @staticmethod
    def _pool_response(pool: Pool, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        all_headers = {"ETag": f'"{pool.etag}"', **(headers or {})}
        return arm_json(pool.to_json(), status=status, headers=all_headers)

    def _cluster(self, params: Params) -> Any:
        return self.store.cluster(params["sub"], params["rg"], params["cluster"])

    def _operation(self, params: Params) -> Operation:
        op = self.store.operations.get(params["op"])
        if op is None or op.subscription_id.lower() != params["sub"].lower():
            raise ArmError(404, "NotFound", f"The operation '{params['op']}' was not found.")
        return op

    # -- handlers --------------------------------------------------------------------------------

    async def get_cluster(self, request: web.Request, params: Params) -> web.StreamResponse:
        return arm_json(self.store.cluster_json(self._cluster(params)))

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        """One page of a listing; the next is reached through ``nextLink`` (``$skiptoken``)."""
        token = request.query.get("$skiptoken") or request.query.get("$skipToken") or "0"
        try:
            start = int(token)
        except ValueError:
            raise ArmError(
                400, "InvalidParameter", f"The value '{token}' of $skiptoken is invalid."
            ) from None
        body: dict[str, Any] = {"value": items[start : start + self.page_size]}
        if start + self.page_size < len(items):
            body["nextLink"] = (
                f"{base_url(request)}{request.path}?api-version={request.query.get('api-version', '')}"
                f"&$skiptoken={start + self.page_size}"
            )
        return arm_json(body)

    async def list_pools(self, request: web.Request, params: Params) -> web.StreamResponse:
        pools = self.store.list(self._cluster(params))
        return self._page(request, [p.to_json() for p in pools])

    async def get_pool(self, request: web.Request, params: Params) -> web.StreamResponse:
        pool = self.store.get(self._cluster(params), params["pool"])
        return self._pool_response(pool)

    async def put_pool(self, request: web.Request, params: Params) -> web.StreamResponse:
        cluster = self._cluster(params)
        body = await read_json_body(request)
        result = self.store.put(
            cluster,
            params["pool"],
            body,
            if_match=request.headers.get("If-Match"),
            if_none_match=request.headers.get("If-None-Match"),
        )
        assert result.pool is not None and result.operation is not None
        return self._pool_response(result.pool, result.status, self._lro_headers(request, result.operation))

    async def delete_pool(self, request: web.Request, params: Params) -> web.StreamResponse:
        cluster = self._cluster(params)
        result = self.store.delete(cluster, params["pool"], if_match=request.headers.get("If-Match"))
        if result.operation is None:
            return web.Response(status=204)
        return web.Response(status=202, headers=self._lro_headers(request, result.operation))

    async def delete_machines(self, request: web.Request, params: Params) -> web.StreamResponse:
        cluster = self._cluster(params)
        body = await read_json_body(request)
        result = self.store.delete_machines(cluster, params["pool"], body)
        assert result.operation is not None
        return web.Response(status=202, headers=self._lro_headers(request, result.operation))

    async def list_machines(self, request: web.Request, params: Params) -> web.StreamResponse:
        machines = self.store.machines(self._cluster(params), params["pool"])
        return self._page(request, machines)

    async def get_machine(self, request: web.Request, params: Params) -> web.StreamResponse:
        return arm_json(self.store.machine(self._cluster(params), params["pool"], params["machine"]))

    async def operation_status(self, request: web.Request, params: Params) -> web.StreamResponse:
        op = self._operation(params)
        headers: dict[str, str] = {}
        if op.status == "InProgress" and self.store.config.lro_retry_after is not None:
            headers["Retry-After"] = str(self.store.config.lro_retry_after)
        return arm_json(op.status_body(), headers=headers)

    async def operation_result(self, request: web.Request, params: Params) -> web.StreamResponse:
        op = self._operation(params)
        if op.status == "InProgress":
            return web.Response(status=202, headers=self._lro_headers(request, op))
        if op.status in ("Failed", "Canceled"):
            error = op.error or {"code": "OperationCanceled", "message": "The operation was canceled."}
            return arm_json({"error": error}, status=400)
        pool = self.store.pools.get(op.pool_key)
        if op.kind in ("delete", "deleteMachines") or pool is None:
            return web.Response(status=204)
        return self._pool_response(pool)
