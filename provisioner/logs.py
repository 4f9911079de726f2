"""Logging setup: JSON lines for clusters, readable text for terminals.

Structured fields (``claim``, ``pool``, ``node``, ``kind``, ``reason``) passed through ``extra=``, or
set for everything a reconcile logs with :func:`fields`, become JSON keys, or ``key=value`` suffixes
in text mode. JSON lines look like Karpenter's (``level`` in capitals, ``time`` in UTC).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar

from provisioner.redact import MIN_SECRET_LENGTH, redact, register_secret

FIELDS = ("claim", "kind", "pool", "node", "reason")
#: Karpenter's (zap's) names of the levels.
_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_context: ContextVar[Mapping[str, str] | None] = ContextVar("log_fields", default=None)


@contextlib.contextmanager
def fields(**values: str) -> Iterator[None]:
    """Add these fields to every record logged in this context (e.g. one reconcile)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in values.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFieldsFilter(logging.Filter):
    """Fills a record's missing structured fields from the current :func:`fields` context."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not getattr(record, key, None):
                setattr(record, key, value)
        return True


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class SecretRedactingFilter(logging.Filter):
    """Masks bearer tokens, JWTs, OAuth form fields and the given secret values in log records.

    Attach it to a handler (it then sees every record that reaches that handler). The provider
    itself never logs tokens and leaves azure-core's header logging at its redacting default; this
    filter is defence in depth for the operator's log handler.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]

    def add_secret(self, secret: str) -> None:
        if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in self._secrets:
            self._secrets.append(secret)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        if record.exc_info:
            # Tracebacks can quote request bodies and headers too: render and mask them here.
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "level": _LEVELS.get(record.levelname, record.levelname),
            "time": _utc(record),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(utc)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.utc = _utc(record)
        text = super().format(record)
        extras = [f"{key}={getattr(record, key)}" for key in FIELDS if getattr(record, key, None)]
        return f"{text} [{' '.join(extras)}]" if extras else text


def configure(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Log to stderr in ``fmt``; tokens and the given secret values are masked in every record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for secret in secrets:
        register_secret(secret)  # masked in condition messages and Events too
    handler.addFilter(ContextFieldsFilter())
    handler.addFilter(SecretRedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that are chatty at INFO: keep their warnings only.
    for noisy in ("kopf.objects", "azure", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # The Azure SDK logs a traceback when an error answer cannot be read; the provider classifies
    # that answer itself and logs one line for it.
    for sdk in ("azure.mgmt.containerservice._utils.model_base", "azure.mgmt.compute._utils.model_base"):
        logging.getLogger(sdk).setLevel(logging.ERROR)
