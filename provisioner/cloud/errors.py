"""One error taxonomy for every cloud provider.

The lifecycle decides what to do from the class alone: try the next instance type
(``InsufficientCapacity``), give up with a clear condition (``InvalidSpec``), retry with backoff
(``Throttled``, ``Transient``) or treat the instance as gone (``NotFound``). The cloud's own
error code and message are kept for events, conditions and metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provisioner.cloud.types import Instance

#: The words Karpenter (and therefore Kaito) use when no candidate instance type could be launched;
#: Kaito recognises a capacity shortage by them. Providers start a combined capacity error with them.
ALL_INSTANCE_TYPES_UNAVAILABLE = "all requested instance types were unavailable during launch"


class CloudError(Exception):
    """Base of all provider errors: the cloud's message and, when it has one, its error code."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class InsufficientCapacity(CloudError):
    """No capacity for this request now: quota exhausted, size not offered, allocation failed.

    Retrying later, or with another instance type, may succeed. The optional fields carry what
    a user needs to act on it (which family, how many vCPUs were needed and how many are free).
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        instance_type: str | None = None,
        family: str | None = None,
        vcpus_needed: int | None = None,
        vcpus_free: int | None = None,
    ) -> None:
        super().__init__(message, code)
        self.instance_type = instance_type
        self.family = family
        self.vcpus_needed = vcpus_needed
        self.vcpus_free = vcpus_free


class InvalidSpec(CloudError):
    """The request can never succeed as written (unknown size, invalid name or label, ...)."""


class InstanceConflict(InvalidSpec):
    """An instance of the requested name exists and is not tagged for any claim of ours.

    ``instance`` is what the cloud has under that name: the lifecycle decides whether it is a
    predecessor's instance for this claim (then it is adopted) or someone else's (never touched).
    """

    def __init__(self, message: str, code: str | None = None, *, instance: Instance) -> None:
        super().__init__(message, code)
        self.instance = instance


class Throttled(CloudError):
    """The cloud asked us to slow down; ``retry_after`` is its hint in seconds, if it gave one."""

    def __init__(self, message: str, code: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


class Transient(CloudError):
    """A temporary failure (server error, conflicting operation in progress); retry with backoff."""


class NotFound(CloudError):
    """The instance does not exist."""


class Deferred(Throttled):
    """The provider held the request back itself (its own rate limit has a backlog): nothing
    reached the cloud and nothing is wrong; try again after ``retry_after`` without telling anyone."""
