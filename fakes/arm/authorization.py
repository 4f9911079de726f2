"""Role assignments, reduced to what a test needs: actions the caller is not granted.

Each ARM route the fake serves needs one Azure RBAC action (``Microsoft.Compute/skus/read`` for the
Resource SKUs listing, ``Microsoft.ContainerService/managedClusters/agentPools/write`` for a pool
PUT, ...). An action listed in ``denied_actions`` (config file, or ``/_fake/settings`` at run time)
is answered as ARM answers a caller whose roles do not include it: 403 ``AuthorizationFailed``
naming the client, its object id, the action and the scope.

The identity Kaito's install guide creates (Contributor on the AKS cluster only) is::

    {"denied_actions": ["Microsoft.Compute/skus/read", "Microsoft.Compute/locations/usages/read"]}
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fakes.arm.errors import ArmError

AUTHORIZATION_FAILED = "AuthorizationFailed"
SKUS_READ = "Microsoft.Compute/skus/read"
USAGES_READ = "Microsoft.Compute/locations/usages/read"
#: What a Contributor on the cluster alone may not do (subscription-scope reads).
CLUSTER_SCOPE_ONLY: tuple[str, ...] = (SKUS_READ, USAGES_READ)

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_CLUSTER = _SUB + r"/resourceGroups/[^/]+/providers/Microsoft\.ContainerService/managedClusters/[^/]+"


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    action: str
    #: The scope ARM names for a subscription-level listing is the subscription itself.
    subscription_scope: bool = False


def _route(method: str, path: str, action: str, *, subscription_scope: bool = False) -> _Route:
    return _Route(method, re.compile(f"^{path}/?$", re.IGNORECASE), action, subscription_scope)


_ROUTES: tuple[_Route, ...] = (
    _route("GET", _SUB + r"/providers/Microsoft\.Compute/skus", SKUS_READ, subscription_scope=True),
    _route(
        "GET",
        _SUB + r"/providers/Microsoft\.Compute/locations/[^/]+/usages",
        USAGES_READ,
        subscription_scope=True,
    ),
    _route(
        "GET",
        _CLUSTER + r"/agentPools(/[^/]+)?",
        "Microsoft.ContainerService/managedClusters/agentPools/read",
    ),
    _route(
        "GET",
        _CLUSTER + r"/agentPools/[^/]+/machines(/[^/]+)?",
        "Microsoft.ContainerService/managedClusters/agentPools/machines/read",
    ),
    _route(
        "PUT", _CLUSTER + r"/agentPools/[^/]+", "Microsoft.ContainerService/managedClusters/agentPools/write"
    ),
    _route(
        "POST",
        _CLUSTER + r"/agentPools/[^/]+/deleteMachines",
        "Microsoft.ContainerService/managedClusters/agentPools/deleteMachines/action",
    ),
    _route(
        "DELETE",
        _CLUSTER + r"/agentPools/[^/]+",
        "Microsoft.ContainerService/managedClusters/agentPools/delete",
    ),
    _route("GET", _CLUSTER, "Microsoft.ContainerService/managedClusters/read"),
    _route(
        "GET",
        _SUB + r"/providers/Microsoft\.ContainerService/locations/[^/]+/operation(s|results)/[^/]+",
        "Microsoft.ContainerService/locations/operations/read",
    ),
)


def action_of(method: str, path: str) -> tuple[str, str] | None:
    """(the RBAC action a request needs, the scope ARM names), or None for a route not modelled."""
    for route in _ROUTES:
        if route.method != method.upper():
            continue
        match = route.pattern.match(path)
        if match is not None:
            scope = f"/subscriptions/{match.group('sub')}" if route.subscription_scope else path.rstrip("/")
            return route.action, scope
    return None


def authorization_failed(client_id: str, object_id: str, action: str, scope: str) -> ArmError:
    """ARM's answer to a caller without ``action`` on ``scope``, word for word."""
    return ArmError(
        403,
        AUTHORIZATION_FAILED,
        f"The client '{client_id}' with object id '{object_id}' does not have authorization to perform "
        f"action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
        "please refresh your credentials.",
        headers={"x-ms-failure-cause": "gateway"},
    )


class Authorizer:
    """The actions the caller is denied (case-insensitive, as RBAC compares them)."""

    def __init__(self, denied: Iterable[str] = ()) -> None:
        self.denied: list[str] = []
        self.set_denied(denied)

    def set_denied(self, actions: Iterable[str]) -> None:
        actions = list(actions)
        if not all(isinstance(a, str) and a.count("/") >= 2 for a in actions):
            raise ValueError(f"denied_actions must be RBAC actions like {SKUS_READ!r}, not {actions!r}")
        self.denied = actions

    def check(self, method: str, path: str, client_id: str, object_id: str) -> None:
        """Raise the 403 for a request whose action is denied."""
        if not self.denied:
            return
        needed = action_of(method, path)
        if needed is None:
            return
        action, scope = needed
        if action.lower() in (a.lower() for a in self.denied):
            raise authorization_failed(client_id, object_id, action, scope)
