"""What /metrics exposes: every series name with its family and label names, read from the text
the endpoint serves after every metric has been given a sample."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from fakes.kaito import kaito_machine, kaito_nodeclaim
from provisioner.claims.dialects import MACHINE, NODECLAIM
from provisioner.cloud.errors import InsufficientCapacity, NotFound, Transient
from provisioner.metrics import Metrics, UnsuffixedCounter


@dataclass(frozen=True)
class Series:
    #: The metric as a query names it: the series name, or a histogram's or summary's base name.
    family: str
    type: str
    labels: frozenset[str]


async def _fail(error: Exception) -> None:
    raise error


async def _ok() -> None:
    return None


def exercise(metrics: Metrics) -> None:
    """Record one sample of every metric: the claim lifecycle of a Machine and a NodeClaim and
    cloud calls through the real recording methods, any other labelled metric with placeholders."""
    machine = MACHINE.parse({**kaito_machine("ws0123456ab"), "status": {}})
    nodeclaim = NODECLAIM.parse({**kaito_nodeclaim("ws0123456cd"), "status": {}})
    for claim in (machine, nodeclaim):
        metrics.claim_created(claim)
        for phase in ("launched", "registered", "initialized"):
            metrics.claim_phase(claim, phase)
        metrics.node_created(claim)
        metrics.claim_disrupted(claim, "RegistrationTimeout")
        metrics.node_terminated(claim)
        metrics.claim_terminated(claim)

    async def calls() -> None:
        with Metrics.controller("nodeclaim.lifecycle"):
            await metrics.timed_cloud_call("azure", "create", _ok)
            for error in (
                InsufficientCapacity("no capacity", "SkuNotAvailable"),
                NotFound("gone"),
                Transient("x"),
            ):
                try:
                    await metrics.timed_cloud_call("azure", "create", lambda e=error: _fail(e))  # type: ignore[misc]
                except type(error):
                    pass

    asyncio.run(calls())
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("x" for _ in value._labelnames))
        elif isinstance(value, UnsuffixedCounter) and not value.value(*("x" for _ in value.labelnames)):
            value.inc(*("x" for _ in value.labelnames), amount=0)


def exposed(metrics: Metrics | None = None) -> dict[str, Series]:
    """Series name -> its metric, type and label names (``le`` on buckets), as /metrics serves them."""
    metrics = metrics or Metrics()
    exercise(metrics)
    text = generate_latest(metrics.registry).decode()
    series: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(sample.labels)
            known = series.get(sample.name)
            merged = labels | (known.labels if known else frozenset())
            name = family.name if family.type in ("histogram", "summary") else sample.name
            series[sample.name] = Series(name, family.type, merged)
    return series
