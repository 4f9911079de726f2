"""Masking of credentials in text we emit: log records, condition messages and Events.

Cloud errors can quote a token request (a bearer token, a client secret, a client assertion JWT).
Every message written to the API server or a log goes through :func:`redact` first; secret values
known at start-up (e.g. ``AZURE_CLIENT_SECRET``) are registered with :func:`register_secret`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"
#: Shorter values are too likely to occur in ordinary text to be masked by value.
MIN_SECRET_LENGTH = 4

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|client_assertion)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"
    ),
)
_secrets: list[str] = []


def register_secret(secret: str) -> None:
    """Mask this value wherever it appears from now on."""
    if secret and len(secret) >= MIN_SECRET_LENGTH and secret not in _secrets:
        _secrets.append(secret)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with tokens, JWTs, OAuth form fields and registered (and ``extra``) secrets masked."""
    for secret in (*_secrets, *extra):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text
