"""Disruption budgets: how many of a NodePool's nodes may be disrupted now, for a reason.

Karpenter's rules: every budget that names the reason (or names none) and whose window is open
applies, and the smallest wins; a budget's ``nodes`` is a count or a percentage of the NodePool's
nodes, rounded up; a window is open when the cron ``schedule`` (UTC) fired within the last
``duration``; a budget whose schedule cannot be read allows nothing (fail closed). What is already
being disrupted counts against the result.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.nodepools.model import Budget

#: No applicable budget: no limit.
UNLIMITED = 2**31 - 1

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
#: (low, high, names) of minute, hour, day of month, month, day of week.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTHS),
    (0, 7, _DAYS),
)


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    """A standard 5-field cron schedule (names, ranges, steps, lists, ``?``, and @-macros)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: Whether day of month / day of week were restricted (cron ORs them when both are).
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        spec = _MACROS.get(text.strip().lower(), text)
        parts = spec.split()
        if len(parts) != 5:
            raise CronError(f"{text!r}: expected 5 fields (minute hour day-of-month month day-of-week)")
        sets = [_field(p, *f) for p, f in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(
            sets[0],
            sets[1],
            sets[2],
            sets[3],
            weekdays,
            days_restricted=parts[2] not in ("*", "?"),
            weekdays_restricted=parts[4] not in ("*", "?"),
        )

    def _day_matches(self, t: datetime.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, t: datetime.datetime, *, limit: datetime.datetime) -> datetime.datetime | None:
        """The first firing strictly after ``t`` and not after ``limit`` (None if there is none)."""
        t = t.astimezone(datetime.UTC).replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        while t <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += datetime.timedelta(minutes=1)
            else:
                return t
        return None


def _value(text: str, names: dict[str, int]) -> int:
    low = text.lower()
    if low in names:
        return names[low]
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number")
    return int(text)


def _field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CronError(f"{part!r}: the step must be a positive number")
        if body in ("*", "?"):
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(body, names)
            end = high if step else start
        if not low <= start <= end <= high:
            raise CronError(f"{part!r} is outside {low}-{high}")
        out.update(range(start, end + 1, step or 1))
    return frozenset(out)


def window_open(budget: Budget, now: datetime.datetime) -> bool:
    """Whether the budget applies now (raises CronError for an unreadable schedule)."""
    if budget.schedule is None:
        return True
    duration = datetime.timedelta(seconds=budget.duration or 0)
    return Cron.parse(budget.schedule).next_after(now - duration, limit=now) is not None


def next_change(budgets: Sequence[Budget], now: datetime.datetime) -> float | None:
    """Seconds until some scheduled budget's window opens or closes (None: none is scheduled).
    Looks at most a day ahead; the caller looks again then."""
    horizon = now + datetime.timedelta(days=1)
    times: list[datetime.datetime] = []
    for b in budgets:
        if b.schedule is None:
            continue
        try:
            cron = Cron.parse(b.schedule)
        except CronError:
            continue
        duration = datetime.timedelta(seconds=b.duration or 0)
        # The window closes ``duration`` after the last firing; it (re)opens at the next one.
        last = None
        t = now - duration
        while (hit := cron.next_after(t, limit=now)) is not None:
            last, t = hit, hit
        if last is not None:
            times.append(last + duration)
        upcoming = cron.next_after(now, limit=horizon)
        if upcoming is not None:
            times.append(upcoming)
    if not any(b.schedule for b in budgets):
        return None
    return max(1.0, (min(times, default=horizon) - now).total_seconds())


def budget_nodes(value: str, total: int) -> int:
    """A budget's ``nodes``: a count, or a percentage of ``total`` rounded up."""
    value = value.strip()
    if value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


def allowed_disruptions(
    budgets: Sequence[Budget], reason: str, *, total: int, disrupting: int, now: datetime.datetime
) -> int:
    """How many more nodes may be disrupted for ``reason`` now."""
    allowed = UNLIMITED
    for b in budgets:
        if b.reasons and reason not in b.reasons:
            continue
        try:
            if not window_open(b, now):
                continue
            allowed = min(allowed, budget_nodes(b.nodes, total))
        except (CronError, ValueError):
            return 0  # an unreadable budget allows nothing
    return max(0, allowed - disrupting) if allowed != UNLIMITED else UNLIMITED
