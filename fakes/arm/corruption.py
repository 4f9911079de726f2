"""Malformed answers: the ``corrupt`` fault's fourteen ways of breaking an ARM response.

A client must survive anything a proxy, a half-deployed service or a flaky network can send it. A
``corrupt`` rule (see ``faults``) picks one of ``KINDS`` per answer it corrupts, in a seeded order that
cycles through the rule's kinds, so a run with a given seed is reproducible and every kind shows up
once per cycle.

Three groups, by when they act:

* **instead of the request** (nothing is changed on the server, as with any ARM error):
  ``error_message_not_string``, ``error_not_object`` and two of three ``bad_retry_after``;
* **on the answer of a served request** (the write happened, its answer is unusable):
  ``list_body``, ``string_body``, ``null_body``, ``empty_200``, ``non_utf8``, ``truncated``,
  ``huge``, ``html``, ``nested_not_object``, ``wrong_field_types`` and the third ``bad_retry_after``;
* **after the request was served, the connection is reset** (``reset``).

==========================  ==========================================================================
``list_body``               the JSON answer wrapped in a list (a list where an object is expected)
``string_body``             the JSON answer as one JSON string
``null_body``               ``null``
``empty_200``               an empty body (status 200 for a successful answer)
``non_utf8``                bytes that are not UTF-8 inside the first JSON string
``truncated``               the first half of the body only
``huge``                    the answer with a multi-MiB filler member (a filler alone without a body)
``html``                    a proxy's HTML error page with the original status
``nested_not_object``       a resource's ``properties`` as a list; a listing's entries as strings
``wrong_field_types``       every string a number, every number a string, every list a string
``bad_retry_after``         a Retry-After that is no number of seconds: on a 429, a 503 or the answer
``error_message_not_string``  an ARM error whose ``message`` is an object, list or number
``error_not_object``        an ARM error whose ``error`` is a string or list
``reset``                   the connection is reset instead of answering
==========================  ==========================================================================
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

KINDS: tuple[str, ...] = (
    "list_body",
    "string_body",
    "null_body",
    "empty_200",
    "non_utf8",
    "truncated",
    "huge",
    "html",
    "nested_not_object",
    "wrong_field_types",
    "bad_retry_after",
    "error_message_not_string",
    "error_not_object",
    "reset",
)
RESET = "reset"

HUGE_BYTES = 3 * 1024 * 1024
_JSON = "application/json"
_GARBAGE_RETRY_AFTER = (
    "soon",
    "-30",
    "NaN",
    "inf",
    "1e400",
    "Wed, 99 Foo 2024 25:61:61 XYZ",
    "",
    "5 seconds",
)
_HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
    "<hr><center>nginx</center></body></html>"
)


class KindCycle:
    """The kinds of one rule in a seeded order, cycling: each appears once per ``len(kinds)`` picks."""

    def __init__(self, kinds: Sequence[str], rng: random.Random) -> None:
        self._kinds = list(kinds)
        self._rng = rng
        self._pending: list[str] = []

    def next(self) -> str:
        if not self._pending:
            self._pending = list(self._kinds)
            self._rng.shuffle(self._pending)
        return self._pending.pop()


def instead_of_request(kind: str, rng: random.Random) -> web.Response | None:
    """The answer given instead of serving the request, or None when ``kind`` acts on its answer."""
    if kind == "bad_retry_after":
        status = rng.choice((429, 503, 0))
        if not status:
            return None
        code = "SubscriptionRequestsThrottled" if status == 429 else "ServiceUnavailable"
        body: Any = {"error": {"code": code, "message": "Please retry later.", "details": []}}
        headers = {"Retry-After": rng.choice(_GARBAGE_RETRY_AFTER)}
        return _json_response(body, status, headers)
    if kind == "error_message_not_string":
        status = rng.choice((400, 500))
        odd_code: Any = rng.choice(("BadRequest", "InternalServerError", status))
        message = rng.choice(({"text": "went wrong", "lines": [1, 2]}, ["went", "wrong"], 12345, True))
        return _json_response({"error": {"code": odd_code, "message": message, "details": "none"}}, status)
    if kind == "error_not_object":
        status = rng.choice((400, 500, 503))
        error = rng.choice(("Something went wrong.", ["Something", "went", "wrong"], 42))
        return _json_response({"error": error}, status)
    return None


def corrupt_answer(kind: str, response: web.Response, rng: random.Random) -> web.Response:
    """``response`` (a served request's answer) broken in the way ``kind`` names."""
    raw = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    status = 200 if response.status == 204 and kind != "empty_200" else response.status  # 204 has no body
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")
    }
    doc = _decode(raw)
    if kind == "empty_200":
        return web.Response(status=200 if status < 300 else status, body=b"", headers=headers)
    if kind == "non_utf8":
        quote = raw.find(b'"')
        broken = (
            raw[: quote + 1] + b"\xff\xfe\xc3\x28" + raw[quote + 1 :] if quote >= 0 else b"\xff\xfe\xc3\x28"
        )
        return _bytes_response(broken, status, headers)
    if kind == "truncated":
        return _bytes_response(raw[: len(raw) // 2] or b"{", status, headers)
    if kind == "bad_retry_after":
        return _bytes_response(raw, status, {**headers, "Retry-After": rng.choice(_GARBAGE_RETRY_AFTER)})
    if kind == "html":
        return web.Response(status=status, text=_HTML, content_type="text/html", headers=headers)
    if kind == "huge":
        filler = "x" * HUGE_BYTES
        if isinstance(doc, dict):
            return _json_response({"filler": filler, **doc}, status, headers)
        return _bytes_response(filler.encode(), status, headers)
    shapes: dict[str, Callable[[Any], Any]] = {
        "list_body": lambda d: [d],
        "string_body": lambda d: json.dumps(d),
        "null_body": lambda d: None,
        "nested_not_object": _nested_not_object,
        "wrong_field_types": _wrong_types,
    }
    if kind not in shapes:
        raise ValueError(f"{kind!r} does not act on an answer")
    return _json_response(shapes[kind](doc), status, headers)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return raw.decode(errors="replace")


def _nested_not_object(doc: Any) -> Any:
    if not isinstance(doc, dict):
        return [doc]
    out = dict(doc)
    if isinstance(out.get("properties"), dict):
        out["properties"] = [out["properties"]]
    if isinstance(out.get("value"), list):
        out["value"] = [json.dumps(item) for item in out["value"]]
    if isinstance(out.get("error"), dict):
        out["error"] = [out["error"]]
    return out


def _wrong_types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, bool) or value is None:
        return "yes" if value else 0
    if isinstance(value, str):
        return len(value)
    return str(value)


def _json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return _bytes_response(json.dumps(body).encode(), status, headers or {})


def _bytes_response(body: bytes, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)
