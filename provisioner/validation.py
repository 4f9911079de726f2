"""Kubernetes' rules for label keys and values and for taints, checked before anything is written.

A label or taint the API server would refuse must stop a claim before any cloud call: otherwise the
node is created and paid for, and only copying the labels to its Node fails. Providers use the same
rules for what they send to their cloud. Each function returns what is wrong in words (None when the
input is valid).
"""

from __future__ import annotations

import re
from typing import get_args

from provisioner.cloud.types import Taint, TaintEffect

MAX_NAME = 63
MAX_PREFIX = 253
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
TAINT_EFFECTS: tuple[str, ...] = get_args(TaintEffect)


def _name_problem(name: str, what: str) -> str | None:
    if len(name) > MAX_NAME:
        return f"{what} is {len(name)} characters; at most {MAX_NAME} are allowed"
    if not _NAME.fullmatch(name):
        return (
            f"{what} must consist of ASCII letters, digits, '-', '_' or '.', "
            "and start and end with a letter or digit"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """What makes ``key`` an invalid label key (or taint key): ``[prefix/]name``."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "the prefix before '/' is empty"
        if len(prefix) > MAX_PREFIX:
            return f"the prefix is {len(prefix)} characters; at most {MAX_PREFIX} are allowed"
        if not all(_DNS_LABEL.fullmatch(part) for part in prefix.split(".")):
            return "the prefix must be a lowercase DNS subdomain (e.g. example.com)"
    if not name:
        return "the name is empty"
    return _name_problem(name, "the name")


def label_value_problem(value: str) -> str | None:
    return None if value == "" else _name_problem(value, "the value")


def taint_problem(taint: Taint) -> str | None:
    if taint.effect not in TAINT_EFFECTS:
        return f"effect {taint.effect!r} is not one of {', '.join(TAINT_EFFECTS)}"
    problem = label_key_problem(taint.key)
    if problem is not None:
        return f"key: {problem}"
    problem = label_value_problem(taint.value)
    return None if problem is None else f"value: {problem}"
