"""What a static NodePool needs now: pure decisions over (NodePool, its NodeClaims, facts about their
nodes), carried out by ``provisioner.reconcile.nodepool``.

* **Size.** ``replicas`` NodeClaims count, not those being replaced (their replacement counts).
  Too few: create from the template, never more than ``limits.nodes`` NodeClaims at once. Too many:
  delete the least useful first — not launched, then not Ready, then without workload pods, then
  the youngest. Scaling is the user's decision: it ignores disruption budgets (drains still honour
  PodDisruptionBudgets).
* **Drift.** Only while the size is right. A Drifted NodeClaim gets a replacement from the current
  template (recorded on the replacement, so a restart picks the pairing up again); once the
  replacement is Ready the drifted one is deleted. How many are replaced at once is what the
  NodePool's budgets for ``Drifted`` allow, minus what is already being disrupted. A NodeClaim whose
  Node or pods say ``karpenter.sh/do-not-disrupt`` is left alone.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from provisioner.claims.model import Claim, ConditionType
from provisioner.nodepools.budgets import UNLIMITED, allowed_disruptions
from provisioner.nodepools.model import DRIFTED, REPLACES_ANNOTATION, NodePool


@dataclass(frozen=True)
class NodeFacts:
    """What the reconciler learned about a NodeClaim's Node (only where a decision needs it)."""

    #: Why it must not be disrupted (a do-not-disrupt annotation on the claim, its Node or a pod).
    blocked_by: str | None = None
    #: Whether it runs no pods but DaemonSet and mirror pods (None: not known).
    empty: bool | None = None


@dataclass(frozen=True)
class Deletion:
    claim: Claim
    #: The reason of the event that says why (also the metric label, see ``metrics.DISRUPTION_REASONS``).
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    #: NodeClaims to create from the template.
    create: int = 0
    #: Drifted NodeClaims to launch one replacement each for.
    replace: tuple[Claim, ...] = ()
    delete: tuple[Deletion, ...] = ()
    #: Drifted NodeClaims waiting for their replacement to become Ready.
    waiting: tuple[tuple[Claim, Claim], ...] = ()
    #: Drifted NodeClaims a do-not-disrupt annotation keeps, and why.
    blocked: tuple[tuple[Claim, str], ...] = ()
    #: How many more drifted NodeClaims the budgets would let us replace now.
    allowed_drift: int = 0
    #: Why the NodePool is not brought to its size (None: it is, or will be).
    held: str | None = None


@dataclass(frozen=True)
class Members:
    """A NodePool's NodeClaims, by role."""

    live: tuple[Claim, ...]
    deleting: tuple[Claim, ...]
    #: Drifted NodeClaim name → its replacement (both live).
    replaced: Mapping[str, Claim]

    @property
    def counted(self) -> tuple[Claim, ...]:
        """The NodeClaims that make up the NodePool's size (a replacement counts, not what it replaces)."""
        return tuple(c for c in self.live if c.name not in self.replaced)

    def replacing(self, claim: Claim) -> bool:
        """Whether ``claim`` is itself a replacement still waiting to take over."""
        return any(r.name == claim.name for r in self.replaced.values())


def members(claims: Sequence[Claim]) -> Members:
    live = tuple(c for c in claims if not c.deleting)
    names = {c.name for c in live}
    replaced: dict[str, Claim] = {}
    for c in live:
        old = c.annotations.get(REPLACES_ANNOTATION)
        if old and old in names and old != c.name:
            replaced[old] = c
    return Members(live, tuple(c for c in claims if c.deleting), replaced)


def ready(claim: Claim) -> bool:
    return not claim.deleting and claim.status.is_true(ConditionType.READY)


def drifted(claim: Claim) -> bool:
    return claim.status.is_true(ConditionType.DRIFTED)


def _age_key(claim: Claim) -> float:
    t = claim.creation_timestamp
    return t.timestamp() if t else 0.0


def _usefulness(claim: Claim, facts: Mapping[str, NodeFacts]) -> tuple[int, float]:
    """Sort key, least useful first: not launched, not Ready, empty, busy; then the youngest."""
    if not claim.status.is_true(ConditionType.LAUNCHED):
        rank = 0
    elif not ready(claim):
        rank = 1
    elif (f := facts.get(claim.name)) is not None and f.empty:
        rank = 2
    else:
        rank = 3
    return rank, -_age_key(claim)


def scale_down_candidates(m: Members, replicas: int) -> tuple[Claim, ...]:
    """Claims a scale-down may remove (those whose facts the reconciler should gather)."""
    return m.counted if len(m.counted) > replicas else ()


def drift_candidates(m: Members) -> tuple[Claim, ...]:
    """Drifted NodeClaims that could get a replacement, oldest first."""
    out = [
        c for c in m.counted if drifted(c) and c.status.is_true(ConditionType.LAUNCHED) and not m.replacing(c)
    ]
    return tuple(sorted(out, key=_age_key))


def plan(
    nodepool: NodePool,
    claims: Sequence[Claim],
    facts: Mapping[str, NodeFacts],
    now: datetime.datetime,
    *,
    can_launch: bool,
) -> Plan:
    """``can_launch``: whether new NodeClaims may be made now (the node class is Ready)."""
    replicas = nodepool.replicas or 0
    m = members(claims)
    room = UNLIMITED if nodepool.node_limit is None else max(0, nodepool.node_limit - len(m.live))

    deletions: list[Deletion] = []
    waiting: list[tuple[Claim, Claim]] = []
    live = {c.name: c for c in m.live}
    for old_name, new in m.replaced.items():
        if ready(new):
            deletions.append(
                Deletion(
                    live[old_name],
                    "DisruptionTerminating",
                    f"Disrupting NodeClaim: Drifted; its replacement {new.name} is Ready",
                )
            )
        else:
            waiting.append((live[old_name], new))

    counted = m.counted
    create = 0
    held = None
    replace: tuple[Claim, ...] = ()
    blocked: list[tuple[Claim, str]] = []
    allowed = 0
    if len(counted) < replicas:
        want = replicas - len(counted)
        if not can_launch:
            held = "the node class is not Ready"
        else:
            create = min(want, room)
            if create < want:
                held = f"limits.nodes={nodepool.node_limit} reached ({len(m.live)} NodeClaims)"
    elif len(counted) > replicas:
        excess = len(counted) - replicas
        for c in sorted(counted, key=lambda c: _usefulness(c, facts))[:excess]:
            deletions.append(
                Deletion(c, "ScaledDown", f"NodePool {nodepool.name} scaled to {replicas} replicas")
            )
    else:
        disrupting = len(m.replaced) + len(m.deleting)
        allowed = allowed_disruptions(
            nodepool.budgets, DRIFTED, total=len(m.live), disrupting=disrupting, now=now
        )
        candidates = []
        for c in drift_candidates(m):
            why = (facts.get(c.name) or NodeFacts()).blocked_by
            if why:
                blocked.append((c, why))
            else:
                candidates.append(c)
        if can_launch:
            replace = tuple(candidates[: min(allowed, room, len(candidates))])
    return Plan(
        create=create,
        replace=replace,
        delete=tuple(deletions),
        waiting=tuple(waiting),
        blocked=tuple(blocked),
        allowed_drift=allowed,
        held=held,
    )
