"""The NodePool reconciler: keeps a static NodePool at ``replicas`` NodeClaims and replaces drifted
ones within its budgets (the decisions are ``nodepools.plan``'s), reports the NodePool's status,
and on deletion deletes its NodeClaims through their normal termination before letting it go.

NodeClaims are created from the template with Karpenter's labels and annotations (the NodePool's
name, the node class, the template hash) and an ownerReference to the NodePool; each is then
provisioned by the claim reconciler like any other. No cloud call is made here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from provisioner.claims.dialects import NODECLAIM, NODECLAIMS
from provisioner.claims.model import NODEPOOL_LABEL, Claim
from provisioner.events import EventTarget
from provisioner.kube import PODS, ConflictError, NotFoundError
from provisioner.lifecycle.result import Event, EventType
from provisioner.nodepools import budgets, conditions
from provisioner.nodepools.conditions import Cond
from provisioner.nodepools.model import (
    DO_NOT_DISRUPT_ANNOTATION,
    DRIFTED,
    NODE_CLASS_HASH_ANNOTATION,
    NODEPOOL_FINALIZER,
    NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_HASH_VERSION,
    NODEPOOL_HASH_VERSION_ANNOTATION,
    NODEPOOLS,
    REPLACES_ANNOTATION,
    NodeClass,
    NodePool,
    node_class_label,
)
from provisioner.nodepools.plan import NodeFacts, Plan, drift_candidates, members, plan, scale_down_candidates
from provisioner.ownership import owner_uids
from provisioner.quantity import parse_quantity
from provisioner.reconcile.apply import Applier
from provisioner.reconcile.context import Context
from provisioner.workqueue import DONE, Outcome

logger = logging.getLogger(__name__)

#: Characters of the random suffix of a NodeClaim's name (those the API server's generateName uses).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
#: A NodeClaim's name is the NodePool's, cut to fit, a dash, and five random characters.
_NAME_PREFIX_MAX = 57


def new_claim_name(nodepool: str) -> str:
    return f"{nodepool[:_NAME_PREFIX_MAX]}-" + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def claim_body(
    nodepool: NodePool, node_class: NodeClass, name: str, replaces: str | None = None
) -> dict[str, Any]:
    """The NodeClaim the NodePool's template makes now."""
    ref = nodepool.node_class_ref
    assert ref is not None, "only NodePools with a node class of ours are served"
    spec = {
        key: value
        for key, value in nodepool.template_spec.items()
        if key
        in (
            "nodeClassRef",
            "requirements",
            "taints",
            "startupTaints",
            "expireAfter",
            "terminationGracePeriod",
        )
    }
    labels = {**nodepool.template_labels, NODEPOOL_LABEL: nodepool.name, node_class_label(ref): ref.name}
    annotations = {
        **nodepool.template_annotations,
        NODEPOOL_HASH_ANNOTATION: nodepool.template_hash(),
        NODEPOOL_HASH_VERSION_ANNOTATION: NODEPOOL_HASH_VERSION,
        NODE_CLASS_HASH_ANNOTATION: node_class.settings_hash(),
    }
    if replaces:
        annotations[REPLACES_ANNOTATION] = replaces
    return {
        "apiVersion": NODECLAIMS.api_version,
        "kind": NODECLAIM.kind,
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [nodepool.owner_reference()],
        },
        "spec": spec,
    }


def nodepool_of(ctx: Context, claim: Claim) -> NodePool | None:
    """The NodePool of ours that made ``claim`` (by its nodepool label and ownerReference)."""
    name = claim.labels.get(NODEPOOL_LABEL)
    if not name or claim.dialect != NODECLAIM.name:
        return None
    nodepool = ctx.store.nodepool(name)
    if (
        nodepool is None
        or nodepool.uid not in owner_uids(claim.raw)
        or not ctx.ownership.serves_node_class(nodepool.node_class_ref)
    ):
        return None
    return nodepool


def target(nodepool: NodePool) -> EventTarget:
    return EventTarget(
        NODEPOOLS.api_version, "NodePool", nodepool.name, nodepool.uid, nodepool.resource_version
    )


def _quantity_text(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value.normalize())


def resources(claims: Sequence[Claim]) -> dict[str, str]:
    """The summed capacity of the NodePool's nodes, and their count (``status.resources``)."""
    total: dict[str, Decimal] = {}
    nodes = 0
    for c in claims:
        if c.deleting or not c.status.node_name:
            continue
        nodes += 1
        for key, value in c.status.capacity.items():
            try:
                total[key] = total.get(key, Decimal(0)) + parse_quantity(str(value))
            except (ValueError, ArithmeticError):
                continue
    out = {k: _quantity_text(v) for k, v in sorted(total.items())}
    out["nodes"] = str(nodes)
    return out


class NodePoolReconciler:
    def __init__(self, ctx: Context, applier: Applier) -> None:
        self.ctx = ctx
        self.applier = applier

    def claims_of(self, nodepool: NodePool) -> list[Claim]:
        """The NodeClaims this NodePool made (by ownerReference UID and the nodepool label)."""
        return [
            c
            for c in self.ctx.store.claims_owned_by(nodepool.uid)
            if c.dialect == NODECLAIM.name and c.labels.get(NODEPOOL_LABEL) == nodepool.name
        ]

    async def reconcile(self, name: str) -> Outcome:
        ctx = self.ctx
        nodepool = ctx.store.nodepool(name)
        if nodepool is None or not ctx.ownership.serves_node_class(nodepool.node_class_ref):
            return DONE
        claims = self.claims_of(nodepool)
        if nodepool.deleting:
            return await self._terminate(nodepool, claims)
        if NODEPOOL_FINALIZER not in nodepool.finalizers:
            nodepool = await self._patch(
                nodepool,
                {
                    "metadata": {
                        "finalizers": [*nodepool.finalizers, NODEPOOL_FINALIZER],
                        "resourceVersion": nodepool.resource_version,
                    }
                },
            )
        if nodepool.replicas is None:
            await self._write_status(
                nodepool,
                claims,
                [
                    Cond(
                        "ValidationSucceeded",
                        False,
                        "ReplicasRequired",
                        "only static NodePools are served: set spec.replicas",
                    )
                ],
            )
            return DONE
        node_class = self._node_class(nodepool)
        class_cond = self._node_class_condition(nodepool, node_class)
        facts = await self._facts(nodepool, claims)
        now = ctx.clock()
        decided = plan(nodepool, claims, facts, now, can_launch=class_cond.status)
        await self._carry_out(nodepool, node_class, decided)
        ctx.metrics.nodepool_allowed_disruptions.labels(nodepool.name, DRIFTED.lower()).set(
            decided.allowed_drift
        )
        await self._write_status(
            nodepool,
            self.claims_of(nodepool),
            [Cond("ValidationSucceeded", True, "ValidationSucceeded"), class_cond],
        )
        wait = budgets.next_change(nodepool.budgets, now)
        return Outcome(requeue_after=wait) if wait is not None else DONE

    # -- reading ----------------------------------------------------------------------------------

    def _node_class(self, nodepool: NodePool) -> NodeClass | None:
        ref = nodepool.node_class_ref
        return self.ctx.store.node_class(ref.name) if ref is not None else None

    @staticmethod
    def _node_class_condition(nodepool: NodePool, node_class: NodeClass | None) -> Cond:
        ref = nodepool.node_class_ref
        name = ref.name if ref else ""
        if node_class is None:
            return Cond("NodeClassReady", False, "NodeClassNotFound", f"KaitoNodeClass {name} does not exist")
        if not node_class.ready or not node_class.current:
            return Cond("NodeClassReady", False, "NodeClassNotReady", f"KaitoNodeClass {name} is not Ready")
        return Cond("NodeClassReady", True, "NodeClassReady")

    async def _facts(self, nodepool: NodePool, claims: list[Claim]) -> dict[str, NodeFacts]:
        """Node facts for the NodeClaims a decision may touch (drifted ones and scale-down
        candidates): a do-not-disrupt annotation on the claim, its Node or its pods, and whether
        the Node runs workload pods. Nothing is read when no decision needs it."""
        m = members(claims)
        needed = {
            c.name: c for c in (*drift_candidates(m), *scale_down_candidates(m, nodepool.replicas or 0))
        }
        facts: dict[str, NodeFacts] = {}
        for name, claim in needed.items():
            facts[name] = await self._node_facts(claim)
        return facts

    async def _node_facts(self, claim: Claim) -> NodeFacts:
        if claim.annotations.get(DO_NOT_DISRUPT_ANNOTATION) == "true":
            return NodeFacts(blocked_by=f"NodeClaim {claim.name} has {DO_NOT_DISRUPT_ANNOTATION}")
        node_name = claim.status.node_name
        if not node_name:
            return NodeFacts(empty=True)
        node = self.ctx.store.node(node_name) or {}
        if ((node.get("metadata") or {}).get("annotations") or {}).get(DO_NOT_DISRUPT_ANNOTATION) == "true":
            return NodeFacts(blocked_by=f"Node {node_name} has {DO_NOT_DISRUPT_ANNOTATION}")
        pods = await self.ctx.kube.list(PODS, field_selector=f"spec.nodeName={node_name}")
        workload = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            if (meta.get("annotations") or {}).get(DO_NOT_DISRUPT_ANNOTATION) == "true" and (
                (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ):
                return NodeFacts(
                    blocked_by=f"pod {meta.get('namespace')}/{meta.get('name')} has {DO_NOT_DISRUPT_ANNOTATION}"
                )
            kinds = {o.get("kind") for o in meta.get("ownerReferences") or ()}
            mirror = "kubernetes.io/config.mirror" in (meta.get("annotations") or {})
            if "DaemonSet" not in kinds and not mirror:
                workload.append(pod)
        return NodeFacts(empty=not workload)

    # -- acting -----------------------------------------------------------------------------------

    async def _carry_out(self, nodepool: NodePool, node_class: NodeClass | None, decided: Plan) -> None:
        ctx = self.ctx
        np_target = target(nodepool)
        if decided.create and node_class is not None:
            have = len(members(self.claims_of(nodepool)).counted)
            for _ in range(decided.create):
                created = await self._create(nodepool, node_class)
                await ctx.publish_for(
                    np_target,
                    (
                        Event(
                            EventType.NORMAL,
                            "Provisioned",
                            f"created NodeClaim {created.name} ({have} of {nodepool.replicas} replicas existed)",
                        ),
                    ),
                )
        for old in decided.replace:
            assert node_class is not None, "replacements are planned only with a Ready node class"
            created = await self._create(nodepool, node_class, replaces=old.name)
            await ctx.publish(
                old,
                (
                    Event(
                        EventType.NORMAL,
                        "DisruptionLaunching",
                        f"Launching NodeClaim {created.name}: Drifted",
                    ),
                ),
            )
        for old, new in decided.waiting:
            await ctx.publish(
                old,
                (
                    Event(
                        EventType.NORMAL,
                        "DisruptionWaitingReadiness",
                        f"Waiting on readiness to continue disruption: replacement {new.name}",
                    ),
                ),
            )
        for claim, why in decided.blocked:
            await ctx.publish(
                claim, (Event(EventType.NORMAL, "DisruptionBlocked", f"Disruption is blocked: {why}"),)
            )
        for d in decided.delete:
            await ctx.publish(d.claim, (Event(EventType.NORMAL, d.reason, d.message),))
            await self.applier.delete_claim(d.claim, d.reason)
        if decided.held:
            logger.info(
                "NodePool %s is not brought to %s replicas: %s",
                nodepool.name,
                nodepool.replicas,
                decided.held,
            )

    async def _create(self, nodepool: NodePool, node_class: NodeClass, replaces: str | None = None) -> Claim:
        ctx = self.ctx
        for _ in range(3):
            body = claim_body(nodepool, node_class, new_claim_name(nodepool.name), replaces)
            try:
                created = await ctx.kube.create(NODECLAIMS, body)
            except ConflictError:
                continue  # the random name is taken: draw another
            stored = ctx.store.put_claim(NODECLAIM, created)
            claim = stored if stored is not None else NODECLAIM.parse(created)
            self.applier.wake(claim)  # its watch event is an echo: nothing else starts its reconcile
            logger.info(
                "NodePool %s: created NodeClaim %s%s",
                nodepool.name,
                body["metadata"]["name"],
                f" to replace {replaces}" if replaces else "",
            )
            return claim
        raise ConflictError(409, "AlreadyExists", f"no free NodeClaim name for NodePool {nodepool.name}")

    async def _terminate(self, nodepool: NodePool, claims: list[Claim]) -> Outcome:
        """A deleted NodePool: its NodeClaims are deleted (each terminates normally: drain, node and
        instance gone); once none is left our finalizer comes off."""
        if NODEPOOL_FINALIZER not in nodepool.finalizers:
            return DONE
        for claim in claims:
            if not claim.deleting:
                await self.ctx.publish(
                    claim,
                    (Event(EventType.NORMAL, "NodePoolDeleted", f"NodePool {nodepool.name} was deleted"),),
                )
                await self.applier.delete_claim(claim, "NodePoolDeleted")
        if claims:
            logger.debug("NodePool %s is deleting; waiting for %d NodeClaims", nodepool.name, len(claims))
            return DONE  # each claim's disappearance brings the NodePool back here
        finalizers = [f for f in nodepool.finalizers if f != NODEPOOL_FINALIZER]
        try:
            await self._patch(
                nodepool,
                {"metadata": {"finalizers": finalizers, "resourceVersion": nodepool.resource_version}},
            )
        except NotFoundError:
            pass
        logger.info("NodePool %s: every NodeClaim is gone; finalizer removed", nodepool.name)
        return DONE

    async def _patch(
        self, nodepool: NodePool, patch: Mapping[str, Any], subresource: str | None = None
    ) -> NodePool:
        body = await self.ctx.kube.patch(NODEPOOLS, nodepool.name, patch, subresource=subresource)
        stored = self.ctx.store.put_nodepool(body)
        return stored if stored is not None else self.ctx.store.nodepool(nodepool.name) or nodepool

    async def _write_status(self, nodepool: NodePool, claims: list[Claim], conds: list[Cond]) -> None:
        res = resources(claims)
        status = {
            "conditions": conditions.body(
                conditions.with_ready(conds),
                nodepool.status.get("conditions") or (),
                nodepool.generation,
                self.ctx.clock(),
            ),
            "nodes": int(res["nodes"]),
            "resources": res,
        }
        if status != {k: nodepool.status.get(k) for k in status}:
            # A merge patch merges maps: resources no node has any more are removed explicitly.
            gone = {k: None for k in nodepool.status.get("resources") or {} if k not in res}
            patch = {**status, "resources": {**res, **gone}}
            await self._patch(nodepool, {"status": patch}, subresource="status")
