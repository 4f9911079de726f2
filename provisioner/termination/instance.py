"""One step of deleting an instance that termination has judged ours to delete."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from provisioner.cloud.errors import CloudError, Deferred, NotFound, Throttled
from provisioner.cloud.types import Instance, InstanceState
from provisioner.lifecycle import termination
from provisioner.lifecycle.result import Event
from provisioner.reconcile.context import Context
from provisioner.workqueue import Outcome

#: What a step found: the instance is gone (None), or how to go on.
Step = Outcome | None


async def delete_step(
    ctx: Context, instance: Instance, poll: float, report: Callable[[tuple[Event, ...]], Awaitable[None]]
) -> Step:
    """Send the delete once the instance is not being created or updated (the cloud refuses deletes
    meanwhile) or deleted already; guarded by the version it was read at. None once gone; a refusal
    is reported (``FailedTerminatingInstance`` with the cloud's code) and retried with backoff."""
    if instance.state == InstanceState.CREATING or instance.busy:
        return Outcome(requeue_after=poll)
    if instance.state != InstanceState.DELETING:
        try:
            await ctx.cloud_call(
                "delete", functools.partial(ctx.cloud.delete, instance.name, version=instance.version)
            )
        except NotFound:
            return None
        except Deferred as e:
            return Outcome(requeue_after=e.retry_after)  # held back by our own rate limit: quietly
        except CloudError as e:
            await report((termination.delete_refused(instance.name, e),))
            return Outcome(failed=True, retry_after=e.retry_after if isinstance(e, Throttled) else None)
        await report((termination.delete_started(instance.name),))
    return Outcome(requeue_after=poll)


async def read(ctx: Context, name: str) -> Instance | None:
    try:
        instance: Instance = await ctx.cloud_call("get", functools.partial(ctx.cloud.get, name))
    except NotFound:
        return None
    return instance
