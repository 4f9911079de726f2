"""What a sound ARM answer looks like, checked before the Azure SDK reads it.

The SDK's deserializer is lenient: a list where an object belongs surfaces later as an
``AttributeError`` in our code, a number where a string belongs comes back as the string ``"7"``,
an empty 200 reads as "no pool", and a listing with one unreadable entry as a shorter listing. So
every successful answer to a read or write we make is checked against the shape of what we use
from it: JSON in UTF-8, objects, strings, whole numbers and lists where they belong, an agent pool
named as asked. Anything else is ``Transient("MalformedResponse")``: retried, never a decision.
Fields we do not read are not checked; ``null`` counts as absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import ResponseNotReadError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

from provisioner.cloud.errors import Transient

MALFORMED = "MalformedResponse"

#: Checks ``value`` found at ``where``; raises ``Malformed`` saying what is wrong.
Check = Callable[[Any, str], None]


class Malformed(ValueError):
    """An answer that is not what the API promises."""


def malformed(what: str, why: str) -> Transient:
    return Transient(f"malformed ARM answer to {what}: {why}", MALFORMED)


_KINDS: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def describe(value: Any) -> str:
    """What a JSON value is, for a message: "a list", "null", ..."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def text(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise Malformed(f"{where} is {describe(value)}, not a string")


def whole(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{where} is {describe(value)}, not a whole number")


_WORD = re.compile(r"^[A-Za-z]+$")


def word(value: Any, where: str) -> None:
    """A state such as ``Succeeded``: letters only."""
    text(value, where)
    if not _WORD.match(value):
        raise Malformed(f"{where} is {value!r}, not a state")


def obj(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{where} is {describe(value)}, not an object")
        for name in required:
            if value.get(name) is None:
                raise Malformed(f"{where} has no {name!r}")
        for name, field_check in fields.items():
            if value.get(name) is not None:
                field_check(value[name], f"{where}.{name}")

    return check


def list_of(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Malformed(f"{where} is {describe(value)}, not a list")
        for i, entry in enumerate(value):
            item(entry, f"{where}[{i}]")

    return check


def map_of(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(f"{where} is {describe(value)}, not an object")
        for key, entry in value.items():
            item(entry, f"{where}[{key!r}]")

    return check


def page_of(item: Check) -> Check:
    return obj({"value": list_of(item), "nextLink": text}, required=("value",))


_ERROR_DETAIL = obj({"code": text, "message": text, "details": list_of(obj({"code": text}))})
_POOL_PROPERTIES = obj(
    {
        "vmSize": text,
        "count": whole,
        "provisioningState": word,
        "tags": map_of(text),
        "nodeLabels": map_of(text),
        "nodeTaints": list_of(text),
        "availabilityZones": list_of(text),
        "eTag": text,
        "nodeImageVersion": text,
        "scaleSetPriority": text,
        "maxPods": whole,
        "status": obj({"provisioningError": _ERROR_DETAIL}),
    }
)
POOL = obj({"name": text, "properties": _POOL_PROPERTIES}, required=("name", "properties"))
SKU = obj(
    {
        "resourceType": text,
        "name": text,
        "family": text,
        "locations": list_of(text),
        "locationInfo": list_of(obj({"location": text, "zones": list_of(text)})),
        "capabilities": list_of(obj({"name": text, "value": text})),
        "restrictions": list_of(
            obj(
                {
                    "type": text,
                    "values": list_of(text),
                    "reasonCode": text,
                    "restrictionInfo": obj({"locations": list_of(text), "zones": list_of(text)}),
                }
            )
        ),
    }
)
USAGE = obj(
    {"name": obj({"value": text, "localizedValue": text}), "currentValue": whole, "limit": whole},
    required=("name",),
)

_POOL_PATH = re.compile(r"/managedClusters/[^/]+/agentPools/(?P<name>[^/]+)$", re.I)
_POOLS_PATH = re.compile(r"/managedClusters/[^/]+/agentPools$", re.I)
_SKUS_PATH = re.compile(r"/providers/Microsoft\.Compute/skus$", re.I)
_USAGES_PATH = re.compile(r"/providers/Microsoft\.Compute/locations/[^/]+/usages$", re.I)


def named(name: str) -> Check:
    """An agent pool called ``name`` (ARM names are case-insensitive)."""

    def check(value: Any, where: str) -> None:
        POOL(value, where)
        if value["name"].lower() != name.lower():
            raise Malformed(f"{where} is agent pool {value['name']!r}, not {name!r}")

    return check


def expected(method: str, url: str) -> Check | None:
    """The shape of a successful answer to ``method url`` (None: we read nothing of it)."""
    path = unquote(urlsplit(url).path).rstrip("/")
    method = method.upper()
    pool = _POOL_PATH.search(path)
    if pool and method in ("GET", "PUT"):
        return named(pool.group("name"))
    if method != "GET":
        return None
    if _POOLS_PATH.search(path):
        return page_of(POOL)
    if _SKUS_PATH.search(path):
        return page_of(SKU)
    if _USAGES_PATH.search(path):
        return page_of(USAGE)
    return None


def check_answer(check: Check, body: bytes) -> None:
    """Raise ``Malformed`` unless ``body`` is UTF-8 JSON of the ``check``-ed shape."""
    if not body.strip():
        raise Malformed("the body is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Malformed(f"the body is not UTF-8 ({e.reason} at byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise Malformed(f"the body is not JSON ({str(e).splitlines()[0][:80]})") from None
    check(doc, "answer")


class AnswerShapePolicy(AsyncHTTPPolicy[Any, Any]):
    """Checks each successful answer before the SDK reads it (see the module docstring)."""

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        response = await self.next.send(request)
        http_request, http_response = request.http_request, response.http_response
        if not 200 <= http_response.status_code < 300:
            return response  # errors are read by ``errors.arm_error_from_http``
        check = expected(http_request.method, http_request.url)
        if check is None:
            return response
        what = f"{http_request.method} {urlsplit(http_request.url).path.rsplit('/', 1)[-1]}"
        try:
            check_answer(check, await _content(http_response))
        except Malformed as e:
            raise malformed(f"{what} (HTTP {http_response.status_code})", str(e)) from None
        return response


async def _content(response: Any) -> bytes:
    """The answer's body, read now if the SDK asked for it as a stream."""
    try:
        content = response.content
    except ResponseNotReadError:
        content = await response.read()
    return bytes(content)
