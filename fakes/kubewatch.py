"""Streaming watches for the fakes, on top of ``provisioner.kube.KubeClient``.

``KubeClient`` answers whole requests; a watch is one long response of newline-separated JSON
events. ``watch_events`` streams one such response; ``list_and_watch`` is the informer loop: list,
then watch from the list's resourceVersion, resume after the server closes the stream, and list
again when the resourceVersion expired (410 Gone).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from provisioner.kube import ApiError, Body, KubeClient, Resource, _error_for

log = logging.getLogger(__name__)

#: Event type ``list_and_watch`` uses for the objects of each (re)list.
SYNC = "SYNC"

_RETRY_SECONDS = 0.5


class WatchExpired(Exception):
    """The resourceVersion a watch started from is too old (410 Gone): list again."""


async def watch_events(
    kube: KubeClient,
    res: Resource,
    *,
    namespace: str | None = None,
    resource_version: str | None = None,
    field_selector: str | None = None,
    label_selector: str | None = None,
    timeout_seconds: int = 300,
) -> AsyncIterator[tuple[str, Body]]:
    """Yield ``(type, object)`` of one watch request until the server ends it.

    Bookmarks are yielded too (type ``BOOKMARK``, only ``metadata.resourceVersion`` is meaningful).
    Raises ``WatchExpired`` on 410 and ``provisioner.kube.ApiError`` on other failures.
    """
    params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
    if resource_version:
        params["resourceVersion"] = resource_version
    if field_selector:
        params["fieldSelector"] = field_selector
    if label_selector:
        params["labelSelector"] = label_selector
    try:
        async with kube.stream(
            res.path(namespace=namespace), params, read_timeout=timeout_seconds + 30
        ) as resp:
            async for event in _events(resp):
                yield event
    except ApiError as e:
        if e.status == 410:
            raise WatchExpired(e.message) from e
        raise


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Body]]:
    buffer = b""
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield _parse(line)
    if buffer.strip():
        yield _parse(buffer)


def _parse(line: bytes) -> tuple[str, Body]:
    event: dict[str, Any] = json.loads(line)
    kind, obj = str(event.get("type", "")), event.get("object") or {}
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise WatchExpired(str(obj.get("message", "")))
        raise _error_for(int(obj.get("code") or 500), json.dumps(obj))
    return kind, obj


async def list_and_watch(
    kube: KubeClient,
    res: Resource,
    *,
    namespace: str | None = None,
    field_selector: str | None = None,
    label_selector: str | None = None,
    timeout_seconds: int = 300,
) -> AsyncIterator[tuple[str, Body]]:
    """Yield every existing object as ``(SYNC, obj)``, then watch events, forever.

    After a relist (410 Gone) the existing objects are yielded as ``SYNC`` again; consumers must be
    level-triggered. Connection errors are retried after a short pause. Stop by cancelling the task
    that iterates (or by closing the generator).
    """
    resource_version: str | None = None
    while True:
        try:
            if resource_version is None:
                page = await kube.request(
                    "GET",
                    res.path(namespace=namespace),
                    params={
                        k: v
                        for k, v in (("fieldSelector", field_selector), ("labelSelector", label_selector))
                        if v
                    },
                )
                resource_version = str((page.get("metadata") or {}).get("resourceVersion") or "") or None
                for obj in page.get("items") or []:
                    yield SYNC, obj
            async for kind, obj in watch_events(
                kube,
                res,
                namespace=namespace,
                resource_version=resource_version,
                field_selector=field_selector,
                label_selector=label_selector,
                timeout_seconds=timeout_seconds,
            ):
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    resource_version = str(rv)
                if kind != "BOOKMARK":
                    yield kind, obj
        except WatchExpired:
            log.debug("watch of %s expired; listing again", res.plural)
            resource_version = None
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            log.debug("watch of %s interrupted (%s); resuming", res.plural, e)
            await asyncio.sleep(_RETRY_SECONDS)
