"""Retries: azure-core's kept short with a capped Retry-After, ours (tenacity) for idempotent reads.

azure-core by default retries 10 times, honours any Retry-After uncapped and retries every >=400
that carries one (AKS' 409 "another operation is in progress" included). Stacked under our own
retries and the lifecycle's backoff that multiplies; so the SDK gets ``retry_total`` of 1-2 for
408/429/5xx only, and Retry-After is capped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import AsyncRetryPolicy
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from provisioner.cloud.azure.errors import from_exception, parse_retry_after
from provisioner.cloud.errors import Throttled, Transient

log = logging.getLogger(__name__)

_T = TypeVar("_T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class CappedRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """azure-core's retry policy, limited to 408/429/5xx and with Retry-After capped."""

    def __init__(self, *, retry_after_cap: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after_cap = retry_after_cap

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        status = response.http_response.status_code
        if status not in RETRY_STATUSES:
            return False
        return bool(settings["total"]) and self._is_method_retryable(
            settings, response.http_request, response=response.http_response
        )

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        """The answer's Retry-After in seconds, capped; None for a value that is no delay."""
        headers = response.http_response.headers
        value = headers.get("retry-after-ms") or headers.get("x-ms-retry-after-ms")
        if value:
            millis = parse_retry_after(value)
            return None if millis is None else min(millis / 1000, self.retry_after_cap)
        return parse_retry_after(headers.get("Retry-After"), cap=self.retry_after_cap)


class ReadRetry:
    """Retry an idempotent read on ``Throttled``/``Transient`` with backoff honouring Retry-After."""

    def __init__(self, attempts: int, backoff: float, retry_after_cap: float) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.retry_after_cap = retry_after_cap

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Throttled) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_cap)
        delay: float = self.backoff * (2 ** (state.attempt_number - 1))
        return min(delay, self.retry_after_cap)

    async def __call__(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``; SDK exceptions come out classified (``CloudError`` subclasses)."""

        async def classified() -> _T:
            try:
                return await call()
            except Exception as e:
                raise from_exception(e, retry_after_cap=self.retry_after_cap) from e

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "ARM %s failed (attempt %d/%d): %s; retrying", what, state.attempt_number, self.attempts, exc
            )

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception_type((Throttled, Transient)),
            reraise=True,
            before_sleep=before_sleep,
        ):
            with attempt:
                return await classified()
        raise AssertionError("unreachable")  # pragma: no cover
