"""Kubernetes quantity strings ("64Gi", "500m", "1.5e3") as exact decimals.

The API keeps quantities as strings (as Kubernetes does) but several rules need their values:
shared memory must fit in the memory limit, Redis needs ``maxmemory`` in bytes and a container
limit above it. This module parses them the way apimachinery's ``resource.Quantity`` does.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal

# The grammar of apimachinery's resource.Quantity (also used as the CRD's pattern).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_SPLIT = re.compile(r"^([+-]?[0-9.]+)(.*)$")


def is_quantity(text: str) -> bool:
    return bool(_QUANTITY.match(text))


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity string; ``ValueError`` when it is not one."""
    if not is_quantity(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 16Gi)")
    match = _SPLIT.match(text)
    if match is None:  # pragma: no cover - the pattern above guarantees a number first
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Decimal(10) ** int(suffix[1:])  # exponent form: 1e3


def to_bytes(text: str) -> int:
    """A memory quantity in whole bytes, rounded up."""
    return int(parse_quantity(text).to_integral_value(rounding=ROUND_CEILING))


def bytes_to_quantity(value: int) -> str:
    """Whole bytes as the shortest exact binary quantity (``1073741824`` -> ``1Gi``)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if value >= unit and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
