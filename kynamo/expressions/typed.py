"""Operations on typed values used while evaluating: lookup, equality, order, size."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .ast import PathElement

TypedValue = dict[str, Any]


def get_path(item: dict[str, TypedValue], elements: tuple[PathElement, ...]) -> TypedValue | None:
    """The value at a document path, or None when any step is missing or mistyped."""
    value = item.get(elements[0])  # type: ignore[arg-type]
    for element in elements[1:]:
        if value is None:
            return None
        if isinstance(element, int):
            items = value.get("L")
            if items is None or element >= len(items):
                return None
            value = items[element]
        else:
            members = value.get("M")
            if members is None:
                return None
            value = members.get(element)
    return value


def _number_set(values: list[str]) -> set[Decimal]:
    return {Decimal(v) for v in values}


def equal(a: TypedValue | None, b: TypedValue | None) -> bool:
    """DynamoDB equality: same type and same value (sets unordered, N numeric)."""
    if a is None or b is None:
        return False
    (ta, va), = a.items()
    (tb, vb), = b.items()
    if ta != tb:
        return False
    if ta == "N":
        return va == vb or Decimal(va) == Decimal(vb)
    if ta in ("S", "B", "BOOL", "NULL"):
        return va == vb
    if ta == "NS":
        return _number_set(va) == _number_set(vb)
    if ta in ("SS", "BS"):
        return len(va) == len(vb) and set(va) == set(vb)
    if ta == "L":
        return len(va) == len(vb) and all(equal(x, y) for x, y in zip(va, vb, strict=True))
    # M
    return va.keys() == vb.keys() and all(equal(v, vb[k]) for k, v in va.items())


def order_key(value: TypedValue | None) -> tuple[str, Any] | None:
    """A comparable key for N, S and B; None for types DynamoDB does not order."""
    if value is None:
        return None
    (kind, data), = value.items()
    if kind == "N":
        return ("N", Decimal(data))
    if kind in ("S", "B"):
        return (kind, data)
    return None


def size(value: TypedValue | None) -> int | None:
    """size(): string length, binary length, element count; None where undefined."""
    if value is None:
        return None
    (kind, data), = value.items()
    if kind in ("S", "B", "SS", "NS", "BS", "L", "M"):
        return len(data)
    return None


def contains(haystack: TypedValue | None, needle: TypedValue | None) -> bool:
    """contains(): substring of S/B, member of a set, or element of a list."""
    if haystack is None or needle is None:
        return False
    (kind, data), = haystack.items()
    (nkind, ndata), = needle.items()
    if kind == "S" or kind == "B":
        return nkind == kind and ndata in data
    if kind == "SS":
        return nkind == "S" and ndata in data
    if kind == "BS":
        return nkind == "B" and ndata in data
    if kind == "NS":
        return nkind == "N" and Decimal(ndata) in _number_set(data)
    if kind == "L":
        return any(equal(member, needle) for member in data)
    return False


def begins_with(value: TypedValue | None, prefix: TypedValue | None) -> bool:
    if value is None or prefix is None:
        return False
    (kind, data), = value.items()
    (pkind, pdata), = prefix.items()
    return kind == pkind and kind in ("S", "B") and data.startswith(pdata)


def copy_value(value: TypedValue) -> TypedValue:
    """Deep copy of a typed value, cheaper than copy.deepcopy for this shape."""
    (kind, data), = value.items()
    if kind == "M":
        return {"M": {k: copy_value(v) for k, v in data.items()}}
    if kind == "L":
        return {"L": [copy_value(v) for v in data]}
    if kind in ("SS", "NS", "BS"):
        return {kind: list(data)}
    return {kind: data}
