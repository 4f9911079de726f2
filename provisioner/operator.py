"""kopf wiring: watches feed the controller; nothing else.

Only ``@kopf.on.event`` handlers are used. They never patch, annotate or add finalizers to what
they observe — kopf writes progress annotations and manages its own finalizers only for
change-detecting handlers (create/update/delete/resume), which we do not register. That keeps kopf
away from Nodes and from claims that are not ours, and keeps our progress out of the CRD status
(which the API server would prune anyway). The controller decides and writes everything itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import kopf

from provisioner.claims.dialects import DIALECTS, Dialect
from provisioner.cloud.provider import CloudProvider, ProviderContext
from provisioner.cloud.registry import load_provider
from provisioner.controller import Controller
from provisioner.events import EventRecorder
from provisioner.gc import GarbageCollector
from provisioner.kube import NODES, KubeClient
from provisioner.metrics import Metrics
from provisioner.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything the handlers share (kopf's memo)."""

    settings: Settings
    kubeconfig: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    kube: KubeClient | None = None
    cloud: CloudProvider | None = None
    controller: Controller | None = None
    gc: GarbageCollector | None = None


def _on_claim(dialect: Dialect) -> Any:
    async def handler(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
        if memo.controller is not None:
            memo.controller.on_claim_event(dialect, event.get("type"), dict(event["object"]))

    return handler


async def _on_node(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    if memo.controller is not None:
        memo.controller.on_node_event(event.get("type"), dict(event["object"]))


async def _login(memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    """kopf's built-in logins do not understand every kubeconfig; reuse the one our client loaded."""
    kube = memo.kube or KubeClient.from_config(memo.kubeconfig)
    memo.kube = kube
    return kopf.ConnectionInfo(**kube.credentials())


async def _startup(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    settings.peering.standalone = True  # leader election is ours (Lease), not kopf's peering
    settings.posting.enabled = False  # we post our own, deduplicated events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 0.1  # react to watch events promptly

    s = memo.settings
    kube = memo.kube or KubeClient.from_config(memo.kubeconfig)
    context = ProviderContext(env=dict(os.environ), cluster_name=s.cluster_name, kubeconfig=memo.kubeconfig)
    cloud = load_provider(s.cloud, context)
    controller = Controller(
        kube,
        cloud,
        s,
        metrics=memo.metrics,
        events=EventRecorder(kube, host=socket.gethostname()),
        cloud_name=s.cloud,
    )
    # Prime the Node store before any claim is reconciled, so a restart never mistakes an existing
    # node for a missing one (which would flap Ready claims).
    for node in await kube.list(NODES):
        controller.on_node_event(None, node)
    controller.start()
    gc = GarbageCollector(controller, s.gc_interval, s.gc_orphan_grace)
    gc.start()
    memo.kube, memo.cloud, memo.controller, memo.gc = kube, cloud, controller, gc
    logger.info("controller started (cloud=%s, workers=%d)", s.cloud, s.workers)


async def _cleanup(memo: Runtime, **_: Any) -> None:
    if memo.gc is not None:
        await memo.gc.stop()
    if memo.controller is not None:
        await memo.controller.stop()
    if memo.cloud is not None:
        await memo.cloud.close()
    if memo.kube is not None:
        await memo.kube.close()
    logger.info("controller stopped")


def make_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry, id="login")(_login)
    kopf.on.startup(registry=registry, id="startup")(_startup)
    kopf.on.cleanup(registry=registry, id="cleanup")(_cleanup)
    for dialect in DIALECTS.values():
        res = dialect.resource
        kopf.on.event(res.group, res.version, res.plural, registry=registry, id=f"watch-{dialect.name}")(
            _on_claim(dialect)
        )
    kopf.on.event("", "v1", "nodes", registry=registry, id="watch-nodes")(_on_node)
    return registry


async def run(
    settings: Settings, *, kubeconfig: str | None = None, stop_flag: asyncio.Event | None = None
) -> None:
    """Run the operator until ``stop_flag`` is set (or the process is signalled)."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it
    runtime = Runtime(settings=settings, kubeconfig=kubeconfig)
    await kopf.operator(
        registry=make_registry(),
        clusterwide=True,
        standalone=True,
        memo=runtime,
        stop_flag=stop_flag,
    )
