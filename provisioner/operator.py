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
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import kopf

from provisioner import __version__
from provisioner.claims.dialects import DIALECTS, Dialect
from provisioner.cloud.provider import CloudProvider, ProviderContext
from provisioner.cloud.registry import load_provider
from provisioner.controller import Controller
from provisioner.endpoints import ReadinessProbe, Servers
from provisioner.events import EventRecorder
from provisioner.fencing import WriteGate, watch_for_stalls
from provisioner.gc import GarbageCollector
from provisioner.kube import NODES, ApiError, KubeClient, NotFoundError
from provisioner.leader import LeaderElector
from provisioner.metrics import Metrics
from provisioner.nodepools.model import KAITO_NODE_CLASSES, NODEPOOLS
from provisioner.settings import Settings, StartupError

logger = logging.getLogger(__name__)

#: How long the operator's own tasks get to finish once cancelled at exit.
SHUTDOWN_GRACE_SECONDS = 10.0


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


async def _on_nodepool(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    if memo.controller is not None:
        memo.controller.on_nodepool_event(event.get("type"), dict(event["object"]))


async def _on_node_class(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    if memo.controller is not None:
        memo.controller.on_node_class_event(event.get("type"), dict(event["object"]))


async def _login(memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    """kopf's built-in logins do not understand every kubeconfig; reuse the one our client loaded."""
    assert memo.kube is not None
    return kopf.ConnectionInfo(**await memo.kube.credentials())


async def _startup(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    settings.peering.standalone = True  # leader election is ours (Lease), not kopf's peering
    settings.posting.enabled = False  # we post our own, deduplicated events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 0.1  # react to watch events promptly

    s = memo.settings
    kube, cloud = memo.kube, memo.cloud
    assert kube is not None and cloud is not None, "run() creates the clients before the operator starts"
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
    # Likewise claims, NodePools and node classes: a NodePool must count its NodeClaims before it
    # decides that one is missing (else a restart would create extras).
    for dialect in DIALECTS.values():
        try:
            for body in await kube.list(dialect.resource):
                controller.on_claim_event(dialect, None, body)
        except NotFoundError:
            pass  # the CRD is not installed; kopf watches for it
    if s.nodepools:
        for resource, feed in (
            (KAITO_NODE_CLASSES, controller.on_node_class_event),
            (NODEPOOLS, controller.on_nodepool_event),
        ):
            try:
                for body in await kube.list(resource):
                    feed(None, body)
            except NotFoundError:
                logger.info("%s are not served (CRD not installed); they are watched for", resource.plural)
            except ApiError as e:
                # A CRD installed a moment ago answers 429 until its storage is ready: the watch
                # delivers them instead.
                logger.warning(
                    "could not list %s at start-up (%s); the watch will deliver them", resource.plural, e
                )
    controller.start()
    gc = GarbageCollector(controller, cloud, memo.metrics, s.cloud, s.gc_interval, s.gc_orphan_grace)
    gc.start()
    memo.controller, memo.gc = controller, gc
    logger.info("controller started (cloud=%s, workers=%d)", s.cloud, s.workers)


async def _stop_controller(memo: Runtime, **_: Any) -> None:
    if memo.gc is not None:
        await memo.gc.stop()
    if memo.controller is not None:
        await memo.controller.stop()
        logger.info("controller stopped")


async def _cleanup(memo: Runtime) -> None:
    await _stop_controller(memo)
    if memo.cloud is not None:
        await memo.cloud.close()
    if memo.kube is not None:
        await memo.kube.close()


def make_registry(*, nodepools: bool = True) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry, id="login")(_login)
    kopf.on.startup(registry=registry, id="startup")(_startup)
    kopf.on.cleanup(registry=registry, id="cleanup")(_stop_controller)
    for dialect in DIALECTS.values():
        res = dialect.resource
        kopf.on.event(res.group, res.version, res.plural, registry=registry, id=f"watch-{dialect.name}")(
            _on_claim(dialect)
        )
    kopf.on.event("", "v1", "nodes", registry=registry, id="watch-nodes")(_on_node)
    if nodepools:
        for res, handler in ((NODEPOOLS, _on_nodepool), (KAITO_NODE_CLASSES, _on_node_class)):
            kopf.on.event(res.group, res.version, res.plural, registry=registry, id=f"watch-{res.plural}")(
                handler
            )
    return registry


def _failed(operator: asyncio.Task[Any]) -> bool:
    """Whether kopf ended by an error. It returns normally only when it stops on SIGTERM/SIGINT
    (once running it handles those signals itself); an exception is a crash, never a clean stop."""
    return operator.cancelled() or operator.exception() is not None


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """kopf leaves a watch stream's generator open when the operator stops in the middle of a
    stream; asyncio closes it at exit and reports kopf's failure to close it. Nothing is lost then:
    one line instead of a traceback. Everything else goes to asyncio's default handler."""
    asyncgen = context.get("asyncgen")
    if asyncgen is not None and getattr(asyncgen, "__qualname__", "") == "infinite_watch":
        logger.debug("a kopf watch stream did not close cleanly at exit: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


async def _watch_for_stalls(
    gate: WriteGate, elector: LeaderElector, settings: Settings, metrics: Metrics
) -> None:
    await watch_for_stalls(
        gate,
        elector.reread,
        threshold=settings.retry_period,
        tick=min(0.5, settings.retry_period / 2),
        on_stall=lambda _: metrics.stalls.inc(),
    )


async def _kube_client(kubeconfig: str | None) -> KubeClient:
    """The API client, or a StartupError saying which kubeconfig could not be used and why."""
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config (or in-cluster credentials)"
    try:
        # Loading a kubeconfig may run an exec credential plugin: not on the event loop.
        return await asyncio.to_thread(KubeClient.from_config, kubeconfig)
    except Exception as e:
        raise StartupError(
            f"cannot load the kubeconfig {where}: {str(e).strip() or type(e).__name__}; "
            "pass --kubeconfig (or set KUBECONFIG) to a valid file, or run in a pod with a service account"
        ) from e


async def _wait_for_api_server(kube: KubeClient, wait_seconds: float) -> None:
    """Wait (bounded) until the API server answers; a StartupError naming it and the last error."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while True:
        try:
            await kube.request("GET", "/version")
            return
        except ApiError as e:
            if e.status in (401, 403):
                raise StartupError(
                    f"the API server {kube.server} refused our credentials ({e.status} {e.reason}); "
                    "check the kubeconfig's user or the service account token"
                ) from e
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"cannot reach the API server {kube.server} within {wait_seconds:g}s ({e.message}); "
                    "check the kubeconfig's server address and the network, or raise API_SERVER_WAIT_SECONDS"
                ) from e
            logger.warning("waiting for the API server %s: %s", kube.server, e.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _lease_namespace(settings: Settings) -> str:
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "kube-system"
    except OSError:
        return os.environ.get("POD_NAMESPACE") or "kube-system"


async def run(settings: Settings, *, kubeconfig: str | None = None) -> int:
    """Run until SIGTERM/SIGINT (0), until leadership is lost (1) or until the operator fails (1)."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own machinery reads it
    runtime = Runtime(settings=settings, kubeconfig=kubeconfig)
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    fenced = asyncio.Event()
    gate = WriteGate(
        settings.renew_deadline if settings.leader_elect else None,
        on_closed=lambda _: fenced.set(),
        on_refused=lambda target: runtime.metrics.writes_refused.labels(target).inc(),
    )
    kube = runtime.kube = await _kube_client(kubeconfig)
    kube.write_gate = gate.check
    kube.user_agent = f"gpu-provisioner/{__version__} ({identity})"
    context = ProviderContext(
        env=dict(os.environ),
        cluster_name=settings.cluster_name,
        kubeconfig=kubeconfig or os.environ.get("KUBECONFIG") or None,
        write_gate=gate.check,
        identity=identity,
    )
    servers = Servers()
    try:
        cloud = runtime.cloud = load_provider(settings.cloud, context)
        await _wait_for_api_server(kube, settings.api_server_wait)
        await servers.start(
            bind=settings.bind_address,
            metrics_port=settings.metrics_port,
            health_port=settings.health_port,
            metrics=runtime.metrics,
            readiness=ReadinessProbe(kube, getattr(cloud, "check", None)),
        )
    except BaseException:
        await servers.stop()
        await _cleanup(runtime)
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_exception_handler)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    elector: LeaderElector | None = None
    try:
        if settings.leader_elect:
            elector = LeaderElector(
                kube,
                namespace=_lease_namespace(settings),
                name=settings.leader_election_name,
                identity=identity,
                lease_duration=settings.lease_duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                on_change=lambda leader: runtime.metrics.leader.set(1 if leader else 0),
                gate=gate,
            )
            if not await elector.acquire(stop):
                return 0
        else:
            runtime.metrics.leader.set(1)
        # kopf installs its own SIGTERM/SIGINT handlers once running; it then stops by itself.
        # ``kopf_stop`` stops it gracefully (its watch streams closed) when we decide to exit.
        kopf_stop = asyncio.Event()
        operator = asyncio.create_task(
            kopf.operator(
                registry=make_registry(nodepools=settings.nodepools),
                clusterwide=True,
                standalone=True,
                memo=runtime,
                stop_flag=kopf_stop,
            ),
            name="kopf",
        )
        waiters = [
            operator,
            asyncio.create_task(fenced.wait(), name="fence"),
            asyncio.create_task(stop.wait()),
        ]
        holder = stalls = None
        if elector is not None:
            holder = asyncio.create_task(elector.hold(), name="lease")
            stalls = asyncio.create_task(
                _watch_for_stalls(gate, elector, settings, runtime.metrics), name="stalls"
            )
            waiters += [holder, stalls]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        lost = fenced.is_set() or (holder is not None and holder in done)
        if lost and elector is not None:
            elector.abandon()
        # kopf returns only after a signal; the stall watcher never returns.
        failed = next((t for t in (operator, stalls) if t in done and (t is stalls or _failed(t))), None)
        crashed = failed is not None
        if lost or crashed:
            # Stop acting at once: nothing may be written by a replica that is no longer the leader,
            # or by one whose watches are gone.
            await _stop_controller(runtime)
        if failed is not None:
            error = failed.exception() if not failed.cancelled() else None
            logger.error(
                "%s stopped unexpectedly: %s; exiting",
                failed.get_name(),
                error or "it returned",
                exc_info=error,
            )
        kopf_stop.set()
        for task in waiters:
            if task is not operator:
                task.cancel()
        # Bounded: a task that ignores its stop must not keep a deposed leader alive.
        _, stuck = await asyncio.wait(waiters, timeout=SHUTDOWN_GRACE_SECONDS)
        if stuck:
            logger.warning("tasks still running at exit: %s", ", ".join(t.get_name() for t in stuck))
            for task in stuck:
                task.cancel()
        return 1 if lost or crashed else 0
    finally:
        if elector is not None:
            await elector.release()
        await servers.stop()
        await _cleanup(runtime)
