"""The admin API under ``/_fake/`` (no auth, not logged, not subject to faults).

==========================================  ====================================================
``GET /_fake/health``                        endpoint and CA path
``GET /_fake/requests``                      request log; filters ``method``, ``path`` (regex),
                                             ``status``, ``since`` (sequence number)
``DELETE /_fake/requests``                   clear the request log
``GET|POST|DELETE /_fake/faults``            list / add (one rule, a list, or ``{"faults": [...]}``)
                                             / remove all fault rules; a ``corrupt`` rule lists
                                             ``kinds_applied`` (see ``fakes.arm.corruption``)
``DELETE /_fake/faults/{id}``                remove one rule
``GET /_fake/quota?location=&subscription=`` limits and usage per quota family
``POST /_fake/quota``                        ``{"location", "limits": {family: n}, "baseline": {...}}``
                                             or ``{"location", "family", "limit"}``
``GET|POST /_fake/settings``                 ``latency`` {create, update, delete}, ``page_size``,
                                             ``lro_retry_after`` (seconds or null),
                                             ``max_pools_per_cluster``,
                                             ``serialize_pool_operations``,
                                             ``auto_create_clusters``,
                                             ``denied_actions`` (RBAC actions answered 403)
``GET /_fake/pools``                         every pool with its state and running operation
``POST /_fake/operations/{id}``              finish a running operation now: ``{"status":
                                             "Succeeded"}`` or ``{"status": "Failed", "error":
                                             {"code", "message"}}``
``POST /_fake/clusters``                     add a managed cluster (ClusterConfig fields)
``POST /_fake/tokens``                       issue a bearer token ``{"tenant_id", "client_id"}``
``POST /_fake/reset``                        back to the configured state (pools, operations,
                                             faults, quota, settings, request log)
==========================================  ====================================================
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fakes.arm.config import ClusterConfig, ConfigError, Latency
from fakes.arm.faults import FaultSpecError
from fakes.arm.routing import base_url

if TYPE_CHECKING:
    from fakes.arm.server import FakeArm

PREFIX = "/_fake"


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"invalid JSON: {e}"}), content_type="application/json"
        ) from None


class AdminRoutes:
    def __init__(self, arm: FakeArm) -> None:
        self.arm = arm

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{PREFIX}/health", self.health)
        r.add_get(f"{PREFIX}/requests", self.get_requests)
        r.add_delete(f"{PREFIX}/requests", self.clear_requests)
        r.add_get(f"{PREFIX}/faults", self.get_faults)
        r.add_post(f"{PREFIX}/faults", self.add_faults)
        r.add_delete(f"{PREFIX}/faults", self.clear_faults)
        r.add_delete(f"{PREFIX}/faults/{{id}}", self.delete_fault)
        r.add_get(f"{PREFIX}/quota", self.get_quota)
        r.add_post(f"{PREFIX}/quota", self.set_quota)
        r.add_get(f"{PREFIX}/settings", self.get_settings)
        r.add_post(f"{PREFIX}/settings", self.set_settings)
        r.add_get(f"{PREFIX}/pools", self.get_pools)
        r.add_post(f"{PREFIX}/operations/{{id}}", self.finish_operation)
        r.add_post(f"{PREFIX}/clusters", self.add_cluster)
        r.add_post(f"{PREFIX}/tokens", self.issue_token)
        r.add_post(f"{PREFIX}/reset", self.reset)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "endpoint": self.arm.endpoint, "ca_bundle": str(self.arm.ca_path)}
        )

    async def get_requests(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            records = self.arm.requests(
                method=q.get("method"),
                path=q.get("path"),
                status=int(q["status"]) if "status" in q else None,
                since=int(q.get("since", "0")),
            )
        except ValueError as e:
            return _bad_request(str(e))
        return web.json_response(
            {"requests": [r.to_dict() for r in records], "last_seq": self.arm.log.last_seq}
        )

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.arm.log.clear()
        return web.json_response({"ok": True})

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.to_dict() for f in self.arm.faults]})

    async def add_faults(self, request: web.Request) -> web.Response:
        body = await _json(request)
        specs = body.get("faults", [body]) if isinstance(body, dict) else body
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            return _bad_request('expected a fault object, a list of them, or {"faults": [...]}')
        try:
            added = [self.arm.add_fault(spec) for spec in specs]
        except (FaultSpecError, TypeError) as e:
            return _bad_request(str(e))
        return web.json_response({"faults": [f.to_dict() for f in added]}, status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.arm.faults.clear()
        return web.json_response({"ok": True})

    async def delete_fault(self, request: web.Request) -> web.Response:
        if not self.arm.faults.remove(request.match_info["id"]):
            return web.json_response({"error": "no such fault"}, status=404)
        return web.json_response({"ok": True})

    async def get_quota(self, request: web.Request) -> web.Response:
        location = request.query.get("location") or self.arm.config.clusters[0].location
        subscription = request.query.get("subscription") or self.arm.config.clusters[0].subscription_id
        return web.json_response(
            {"location": location, "quotas": self.arm.quota_report(subscription, location)}
        )

    async def set_quota(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict):
            return _bad_request("expected an object")
        location = str(body.get("location") or self.arm.config.clusters[0].location)
        limits = dict(body.get("limits") or {})
        if "family" in body:
            limits[str(body["family"])] = body.get("limit")
        try:
            for family, limit in limits.items():
                self.arm.set_quota(family, int(limit), location=location)
            for family, used in dict(body.get("baseline") or {}).items():
                self.arm.quota.set_baseline(location, family, int(used))
        except (TypeError, ValueError) as e:
            return _bad_request(str(e))
        return web.json_response({"location": location, "quotas": self.arm.quota_report(None, location)})

    def _settings(self) -> dict[str, Any]:
        return {
            "latency": dataclasses.asdict(self.arm.store.latency),
            "page_size": self.arm.aks.page_size,
            "lro_retry_after": self.arm.config.lro_retry_after,
            "max_pools_per_cluster": self.arm.config.max_pools_per_cluster,
            "serialize_pool_operations": self.arm.config.serialize_pool_operations,
            "auto_create_clusters": self.arm.config.auto_create_clusters,
            "denied_actions": list(self.arm.authorizer.denied),
        }

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings())

    async def set_settings(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict):
            return _bad_request("expected an object")
        unknown = set(body) - {
            "latency",
            "page_size",
            "lro_retry_after",
            "max_pools_per_cluster",
            "serialize_pool_operations",
            "auto_create_clusters",
            "denied_actions",
        }
        if unknown:
            return _bad_request(f"unknown setting(s) {sorted(unknown)}")
        try:
            if "latency" in body:
                merged = {**dataclasses.asdict(self.arm.store.latency), **body["latency"]}
                self.arm.store.latency = Latency.from_dict(merged)
            if "page_size" in body:
                size = int(body["page_size"])
                if size < 1:
                    raise ValueError("page_size must be at least 1")
                self.arm.aks.page_size = size
            if "lro_retry_after" in body:
                value = body["lro_retry_after"]
                if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                    raise ValueError("lro_retry_after must be a whole number of seconds (0 or more) or null")
                self.arm.config.lro_retry_after = None if value is None else int(value)
            if "max_pools_per_cluster" in body:
                limit = body["max_pools_per_cluster"]
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                    raise ValueError("max_pools_per_cluster must be a whole number, at least 1")
                self.arm.config.max_pools_per_cluster = limit
            if "serialize_pool_operations" in body:
                serialize = body["serialize_pool_operations"]
                if not isinstance(serialize, bool):
                    raise ValueError("serialize_pool_operations must be true or false")
                self.arm.config.serialize_pool_operations = serialize
            if "auto_create_clusters" in body:
                self.arm.config.auto_create_clusters = bool(body["auto_create_clusters"])
            if "denied_actions" in body:
                denied = body["denied_actions"]
                if not isinstance(denied, list):
                    raise ValueError("denied_actions must be a list of RBAC actions")
                self.arm.deny(*denied)
        except (ConfigError, TypeError, ValueError) as e:
            return _bad_request(str(e))
        return web.json_response(self._settings())

    async def get_pools(self, request: web.Request) -> web.Response:
        pools = []
        for pool in self.arm.store.pools.values():
            entry = pool.to_json()
            entry["cluster"] = pool.cluster.id
            op = pool.operation
            entry["operation"] = None if op is None else {"id": op.id, "kind": op.kind, "status": op.status}
            pools.append(entry)
        return web.json_response({"pools": pools})

    async def finish_operation(self, request: web.Request) -> web.Response:
        body = await _json(request)
        body = body if isinstance(body, dict) else {}
        requested = body.get("status", "Succeeded")
        if requested not in ("Succeeded", "Failed"):
            return _bad_request("status must be Succeeded or Failed")
        error = body.get("error")
        if error is not None and not isinstance(error, dict):
            return _bad_request("error must be an object with code and message")
        try:
            op = self.arm.store.finish(
                request.match_info["id"], "Succeeded" if requested == "Succeeded" else "Failed", error
            )
        except KeyError:
            return web.json_response({"error": "no running operation with that id"}, status=404)
        return web.json_response(op.status_body())

    async def add_cluster(self, request: web.Request) -> web.Response:
        body = await _json(request)
        try:
            cluster = self.arm.store.add_cluster(ClusterConfig.from_dict(body))
        except (ConfigError, TypeError) as e:
            return _bad_request(str(e))
        return web.json_response(self.arm.store.cluster_json(cluster), status=201)

    async def issue_token(self, request: web.Request) -> web.Response:
        body = await _json(request)
        tenant = str(body.get("tenant_id") or "fake-tenant")
        client = str(body.get("client_id") or "fake-client")
        token = self.arm.issuer.issue(base_url(request), tenant, client)
        return web.json_response({"access_token": token, "token_type": "Bearer"})

    async def reset(self, request: web.Request) -> web.Response:
        self.arm.reset()
        return web.json_response({"ok": True})
