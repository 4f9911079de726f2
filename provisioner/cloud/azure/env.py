"""Reading typed, validated values from environment-style settings, one clear error per value."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TypeVar

_T = TypeVar("_T")


class ConfigError(ValueError):
    """The provider's configuration is missing or wrong; the message names the setting (a line
    per setting when several are wrong: ``also`` holds the others)."""

    setting: str
    problem: str

    def __init__(self, setting: str, problem: str, also: tuple[ConfigError, ...] = ()) -> None:
        lines = [f"{setting}: {problem}", *(f"{e.setting}: {e.problem}" for e in also)]
        super().__init__("\n".join(lines))
        self.setting = setting
        self.problem = problem
        self.also = also


class EnvReader:
    """Typed reads of settings. A bad value is recorded, not raised, so that ``check`` reports every
    bad setting at once; until then reads return the default (or "")."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.errors: list[ConfigError] = []

    def error(self, name: str, problem: str) -> None:
        self.errors.append(ConfigError(name, problem))

    def check(self) -> None:
        """Raise one ConfigError naming every bad setting recorded so far."""
        if self.errors:
            first, *rest = self.errors
            raise ConfigError(first.setting, first.problem, tuple(rest))

    def optional(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def required(self, name: str, what: str = "") -> str:
        value = self.optional(name)
        if value is None:
            self.error(name, f"is required but not set{f' ({what})' if what else ''}")
            return ""
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
            self.error(name, f"must be a {getattr(kind, '__name__', 'number')}, got {raw!r}")
            return default
        as_float = float(value)  # type: ignore[arg-type]
        if minimum is not None and as_float < minimum:
            self.error(name, f"must be at least {minimum:g}, got {raw!r}")
        elif maximum is not None and as_float > maximum:
            self.error(name, f"must be at most {maximum:g}, got {raw!r}")
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
        self.error(name, f"must be true or false, got {raw!r}")
        return default

    def tags(self, name: str) -> dict[str, str]:
        raw = self.optional(name)
        if raw is None:
            return {}
        if raw.startswith("{"):
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError as e:
                self.error(name, f"is not valid JSON: {e}")
                return {}
            if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
                self.error(name, "must be a JSON object of string values")
                return {}
            return {str(k): v for k, v in parsed.items()}
        tags: dict[str, str] = {}
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                self.error(name, f"entry {item!r} is not key=value")
                continue
            tags[key.strip()] = value.strip()
        return tags
