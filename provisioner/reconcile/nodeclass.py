"""The node class reconciler: a ``KaitoNodeClass`` is Ready when the cloud offers its image family.

Kaito creates its node classes at start-up and waits (up to two minutes) for the default one to be
Ready before it makes any NodePool. The API server's schema checks the fields; the cloud resolves
the image family to what new nodes get (on AKS the osSKU) and, where it can tell, the image
version. That resolution is repeated every ``NODE_CLASS_REFRESH_SECONDS``: a new image version
changes the node class's hash, and the NodeClaims made with the old one drift.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from provisioner.cloud.errors import InvalidSpec
from provisioner.cloud.provider import SupportsNodeImages
from provisioner.cloud.types import ResolvedImage
from provisioner.events import EventTarget
from provisioner.lifecycle.result import Event, EventType
from provisioner.nodepools import conditions
from provisioner.nodepools.conditions import Cond
from provisioner.nodepools.model import KAITO_NODE_CLASSES, NODE_CLASS_KIND, NodeClass
from provisioner.reconcile.context import Context
from provisioner.workqueue import DONE, Outcome

logger = logging.getLogger(__name__)

IMAGE_RESOLVED = "ImageResolved"


def target(node_class: NodeClass) -> EventTarget:
    return EventTarget(
        KAITO_NODE_CLASSES.api_version,
        NODE_CLASS_KIND,
        node_class.name,
        node_class.uid,
        node_class.resource_version,
    )


class NodeClassReconciler:
    def __init__(self, ctx: Context, changed: Callable[[str], None]) -> None:
        """``changed`` is told when a status was written (the watch brings it back only as an
        echo, which wakes nothing): the NodePools using the class look again."""
        self.ctx = ctx
        self.changed = changed

    async def reconcile(self, name: str) -> Outcome:
        ctx = self.ctx
        node_class = ctx.store.node_class(name)
        if node_class is None:
            return DONE
        image, problem = await self._resolve(node_class)
        if problem is None and image is not None:
            cond = Cond(
                IMAGE_RESOLVED, True, IMAGE_RESOLVED, f"image family {image.family} resolves to {image.name}"
            )
        else:
            cond = Cond(IMAGE_RESOLVED, False, "ImageFamilyNotSupported", problem or "")
        status: dict[str, Any] = {
            "conditions": conditions.body(
                conditions.with_ready([cond]),
                node_class.status.get("conditions") or (),
                node_class.generation,
                ctx.clock(),
            ),
            "observedGeneration": node_class.generation,
        }
        if image is not None:
            status["resolvedImage"] = {"family": image.family, "name": image.name, "version": image.version}
        if status != {k: node_class.status.get(k) for k in status}:
            body = await ctx.kube.patch(KAITO_NODE_CLASSES, name, {"status": status}, subresource="status")
            ctx.store.put_node_class(body)
            self.changed(name)
            if problem is not None:
                await ctx.publish_for(
                    target(node_class), (Event(EventType.WARNING, "NodeClassNotReady", problem),)
                )
            else:
                logger.info("node class %s is Ready (%s)", name, cond.message)
        return Outcome(requeue_after=ctx.settings.node_class_refresh)

    async def _resolve(self, node_class: NodeClass) -> tuple[ResolvedImage | None, str | None]:
        """(What the image family resolves to, or why it cannot be used)."""
        cloud = self.ctx.cloud
        family = node_class.image_family
        if not isinstance(cloud, SupportsNodeImages):
            return ResolvedImage(family or "", family or "", ""), None
        try:
            image = await self.ctx.cloud_call("resolve_image", functools.partial(cloud.resolve_image, family))
        except InvalidSpec as e:
            return None, f"spec.imageFamily: {e}"
        # Other cloud errors propagate: the status keeps what was resolved, the queue retries.
        return image, None
