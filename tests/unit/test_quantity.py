"""Kubernetes resource quantities as the claims and nodes carry them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.quantity import GIB, is_zero, parse_quantity

BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {
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
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("120Gi", 120 * 2**30),
        ("400", 400),
        ("0", 0),
        ("1.5", Decimal("1.5")),
        ("500m", Decimal("0.5")),
        ("11800m", Decimal("11.8")),
        ("230686720Ki", 230686720 * 1024),
        ("1e3", 1000),
        ("1E3", 1000),
        ("2.5e-3", Decimal("0.0025")),
        ("1E", 10**18),  # exa, not an exponent
        ("128G", 128 * 10**9),
        ("+5", 5),
        ("-1", -1),
        (".5Gi", 2**29),
        ("1.", 1),
        (" 120Gi ", 120 * 2**30),
        (400, 400),
        (1.5, Decimal("1.5")),
    ],
)
def test_parses_quantities(text: str | int | float, value: int | Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "Gi", "garbage", "12 Gi", "12gi", "12K", "12KiB", "1.2.3", ".", "--1", "1Gi5", "0x10", "inf", "nan"],
)
def test_rejects_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_gib_constant() -> None:
    assert GIB == 2**30


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(sorted(BINARY)))
def test_binary_suffixes(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}") == n * BINARY[suffix]


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**12), 10**12), st.sampled_from(sorted(DECIMAL)))
def test_decimal_suffixes(n: int, suffix: str) -> None:
    assert parse_quantity(f"{n}{suffix}") == n * DECIMAL[suffix]


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False, allow_infinity=False))
def test_plain_decimals(d: Decimal) -> None:
    assert parse_quantity(str(d)) == d


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789.+-eEinumkKMGTPE ", max_size=12))
def test_only_value_error_for_anything_quantity_shaped(text: str) -> None:
    try:
        parse_quantity(text)
    except ValueError:
        pass


@pytest.mark.parametrize("text", ["1e9999999", "9e999999999", "1E+1000000"])
def test_huge_exponent_is_a_number_or_a_value_error(text: str) -> None:
    """The CRD's quantity pattern allows any exponent; a huge one must not raise an arithmetic error."""
    try:
        value = parse_quantity(text)
    except ValueError:
        return
    assert value > 0


@pytest.mark.parametrize(
    ("text", "zero"),
    [
        ("0", True),
        ("0Gi", True),
        ("0.0", True),
        ("0m", True),
        ("1m", False),
        ("1n", False),
        ("2", False),
        ("120Gi", False),
        ("garbage", True),  # nothing usable
        ("", True),
    ],
)
def test_is_zero(text: str, zero: bool) -> None:
    assert is_zero(text) is zero


def test_huge_quantity_is_not_zero() -> None:
    assert is_zero("1e9999999") is False
