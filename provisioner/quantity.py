"""Kubernetes resource quantities ("120Gi", "400", "1.5", "500m") as numbers."""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MIN_EMIN, ROUND_CEILING, Context, Decimal, localcontext

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")

GIB = Decimal(2**30)
_WIDE = Context(prec=60, Emax=MAX_EMAX, Emin=MIN_EMIN)


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units; raises ``ValueError`` when it is not a quantity."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    # A context wide enough that no exponent a quantity can carry overflows.
    with localcontext(_WIDE):
        try:
            return Decimal(number) * _SUFFIXES[suffix]
        except ArithmeticError as e:
            raise ValueError(f"{value!r} is not a Kubernetes quantity") from e


def ceil_units(value: Decimal, unit: Decimal) -> int:
    """How many whole ``unit`` cover ``value`` (rounded up), for any value ``parse_quantity`` returns."""
    with localcontext(_WIDE):
        return int((value / unit).to_integral_value(rounding=ROUND_CEILING))


def is_zero(value: str) -> bool:
    """True for zero and for text that is not a quantity (nothing usable is there)."""
    try:
        return parse_quantity(value) == 0
    except ValueError:
        return True
