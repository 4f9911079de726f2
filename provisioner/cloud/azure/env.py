"""Reading typed, validated values from environment-style settings, one clear error per value."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TypeVar

_T = TypeVar("_T")


class ConfigError(ValueError):
    """The provider's configuration is missing or wrong; the message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise ConfigError(name, "is required but not set")
        return value

    def number(
        self,
        name: str,
        kind: Callable[[str], _T],
        default: _T,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> _T:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(name, f"must be a {getattr(kind, '__name__', 'number')}, got {raw!r}") from None
        as_float = float(value)  # type: ignore[arg-type]
        if minimum is not None and as_float < minimum:
            raise ConfigError(name, f"must be at least {minimum:g}, got {raw!r}")
        if maximum is not None and as_float > maximum:
            raise ConfigError(name, f"must be at most {maximum:g}, got {raw!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {raw!r}")

    def tags(self, name: str) -> dict[str, str]:
        raw = self.optional(name)
        if raw is None:
            return {}
        if raw.startswith("{"):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(name, f"is not valid JSON: {e}") from None
            if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
                raise ConfigError(name, "must be a JSON object of string values")
            return {str(k): v for k, v in parsed.items()}
        tags: dict[str, str] = {}
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(name, f"entry {item!r} is not key=value")
            tags[key.strip()] = value.strip()
        return tags
