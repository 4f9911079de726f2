"""A small case-insensitive router for ARM paths (ARM treats path segments case-insensitively,
aiohttp's router does not) and the response helpers shared by the API modules."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from fakes.arm.errors import ArmError

Params = dict[str, str]
Handler = Callable[[web.Request, Params], Awaitable[web.StreamResponse]]

_SEGMENT = r"[^/]+"


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        """``template`` uses ``{name}`` placeholders for one path segment each."""
        pattern = re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{_SEGMENT})", template)
        self._routes.append((method.upper(), re.compile(f"^{pattern}/?$", re.IGNORECASE), handler))

    def resolve(self, method: str, path: str) -> tuple[Handler, Params]:
        allowed: list[str] = []
        for route_method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method == method.upper():
                return handler, match.groupdict()
            allowed.append(route_method)
        if allowed:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The requested method '{method}' is not allowed for '{path}'; allowed: {', '.join(allowed)}.",
            )
        raise ArmError(
            404,
            "InvalidResourceType",
            f"The resource type of '{path}' could not be found; the fake ARM server does not serve it.",
        )


def arm_json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        charset="utf-8",
        headers=dict(headers or {}),
    )


async def read_json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {e}.",
        ) from None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
