"""Instance names derived from claim names.

AKS agent pool names must match ``^[a-z][a-z0-9]{0,11}$``. Kaito names its claims ``ws`` + 9 hex
characters, which already fit and are used as they are; any other name maps to a stable hash so
that the instance can always be found again from the claim name alone (after a crash, too).
"""

from __future__ import annotations

import hashlib
import re

POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_HASH_PREFIX = "g"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_BASE36[r])
    return "".join(reversed(out)) or "0"


def pool_name(claim_name: str) -> str:
    """The claim name when it is a valid pool name, else ``g`` + 11 base-36 chars of its SHA-256.

    The hash is itself a valid pool name (about 57 bits), and the same claim always maps to it.
    """
    if POOL_NAME.match(claim_name):
        return claim_name
    digest = int.from_bytes(hashlib.sha256(claim_name.encode()).digest(), "big")
    return _HASH_PREFIX + base36(digest).rjust(11, "0")[:11]
