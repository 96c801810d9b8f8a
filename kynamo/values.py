"""DynamoDB attribute values: validation, numbers, item size, wire conversion.

In memory an item is DynamoDB's typed form with ``B``/``BS`` as raw bytes and
numbers as strings (see docs/storage-node-interfaces.md). The wire (JSON) form
carries binary as base64; ``from_wire``/``to_wire`` convert at the edge.
Messages are worded as DynamoDB words them so SDK users see familiar errors.
"""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Context, Decimal, InvalidOperation
from typing import Any

__all__ = [
    "INVALID_PREFIX",
    "MAX_ITEM_SIZE",
    "MAX_NESTING_DEPTH",
    "NUMBER_CONTEXT",
    "TYPES",
    "ValueValidationError",
    "from_wire",
    "from_wire_value",
    "item_size",
    "normalize_number",
    "number_add",
    "number_sub",
    "parse_number",
    "to_wire",
    "to_wire_value",
    "validate_item",
    "validate_value",
    "value_size",
]

TYPES = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})
MAX_ITEM_SIZE = 400 * 1024
MAX_NESTING_DEPTH = 32
INVALID_PREFIX = "One or more parameter values were invalid: "

# DynamoDB numbers: 38 significant digits, magnitude in [1e-130, 1e126).
NUMBER_CONTEXT = Context(prec=38, Emax=125, Emin=-130)
# Wide enough that adding two valid numbers is exact; the result is then checked.
_WIDE = Context(prec=400, Emax=999999, Emin=-999999)
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")

_EMPTY = "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
_MULTI = ("Supplied AttributeValue has more than one datatypes set, "
          "must contain exactly one of the supported datatypes")
_DEPTH = ("Nesting Levels have exceeded supported limits: "
          "Attributes in the item have nested levels beyond supported limit")
_DIGITS = "Attempting to store more than 38 significant digits in a Number"
_OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
_UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"
_NOT_NUMERIC = "The parameter cannot be converted to a numeric value"
_EMPTY_SET = {
    "SS": INVALID_PREFIX + "An string set  may not be empty",
    "NS": INVALID_PREFIX + "An number set  may not be empty",
    "BS": INVALID_PREFIX + "Binary sets should not be empty",
}


class ValueValidationError(Exception):
    """An attribute value DynamoDB would reject; ``message`` is DynamoDB's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------- numbers

def parse_number(text: Any) -> Decimal:
    """Parse and range-check an N string; raise with DynamoDB's message."""
    if not isinstance(text, str) or not text:
        raise ValueValidationError(_NOT_NUMERIC)
    if not _NUMBER_RE.match(text):
        raise ValueValidationError(f"{_NOT_NUMERIC}: {text}")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex already filters
        raise ValueValidationError(f"{_NOT_NUMERIC}: {text}") from None
    return check_number(value)


def check_number(value: Decimal) -> Decimal:
    """Enforce 38 significant digits and DynamoDB's exponent range."""
    if not value:
        return Decimal(0)
    value = value.normalize(_WIDE)
    if len(value.as_tuple().digits) > 38:
        raise ValueValidationError(_DIGITS)
    adjusted = value.adjusted()
    if adjusted > 125:
        raise ValueValidationError(_OVERFLOW)
    if adjusted < -130:
        raise ValueValidationError(_UNDERFLOW)
    return value


def format_number(value: Decimal) -> str:
    """Canonical text of a checked Decimal, plain notation as DynamoDB returns it."""
    if not value:
        return "0"
    text = format(value.normalize(_WIDE), "f")
    return text


def normalize_number(text: str) -> str:
    """Canonical form DynamoDB returns: "1.50"->"1.5", "1e2"->"100", "-0"->"0"."""
    return format_number(parse_number(text))


class SentNumber(str):
    """A canonical number that remembers how the request wrote it ("007", "-0").

    It is the canonical text everywhere (equality, hashing, storage, responses); only error
    messages that quote an operand show `sent`, as DynamoDB does.
    """

    sent: str

    def __new__(cls, canonical: str, sent: str) -> SentNumber:
        obj = super().__new__(cls, canonical)
        obj.sent = sent
        return obj


def as_sent(text: Any) -> Any:
    """The text a request gave for this value (a SentNumber's original spelling; anything else as is)."""
    return getattr(text, "sent", text)


def number_add(a: str, b: str) -> str:
    """Exact a + b, rejected like DynamoDB if the result leaves the number range."""
    return format_number(check_number(_WIDE.add(Decimal(a), Decimal(b))))


def number_sub(a: str, b: str) -> str:
    """Exact a - b, rejected like DynamoDB if the result leaves the number range."""
    return format_number(check_number(_WIDE.subtract(Decimal(a), Decimal(b))))


# ------------------------------------------------------------------ validation

def _type_of(value: Any) -> str:
    if not isinstance(value, dict):
        raise ValueValidationError(_EMPTY)
    keys = [k for k, v in value.items() if k in TYPES and v is not None]
    if not keys:
        raise ValueValidationError(_EMPTY)
    if len(keys) > 1:
        raise ValueValidationError(_MULTI)
    return keys[0]


def _set_repr(members: list[Any]) -> str:
    parts = [base64.b64encode(m).decode() if isinstance(m, bytes) else str(m) for m in members]
    return "[" + ", ".join(parts) + "]"


def validate_value(value: Any, depth: int = 1) -> None:
    """Validate one in-memory typed value (B as bytes) the way DynamoDB does."""
    if depth > MAX_NESTING_DEPTH:
        raise ValueValidationError(_DEPTH)
    kind = _type_of(value)
    data = value[kind]
    if kind == "S":
        if not isinstance(data, str):
            raise ValueValidationError(_EMPTY)
    elif kind == "N":
        parse_number(data)
    elif kind == "B":
        if not isinstance(data, bytes | bytearray):
            raise ValueValidationError(_EMPTY)
    elif kind == "BOOL":
        if not isinstance(data, bool):
            raise ValueValidationError(_EMPTY)
    elif kind == "NULL":
        if data is not True:
            raise ValueValidationError(INVALID_PREFIX + "Null attribute value types must have the value of true")
    elif kind == "M":
        if not isinstance(data, dict):
            raise ValueValidationError(_EMPTY)
        for name, member in data.items():
            if not isinstance(name, str):
                raise ValueValidationError(_EMPTY)
            validate_value(member, depth + 1)
    elif kind == "L":
        if not isinstance(data, list):
            raise ValueValidationError(_EMPTY)
        for member in data:
            validate_value(member, depth + 1)
    else:
        _validate_set(kind, data)


def _validate_set(kind: str, data: Any) -> None:
    if not isinstance(data, list):
        raise ValueValidationError(_EMPTY)
    if not data:
        raise ValueValidationError(_EMPTY_SET[kind])
    if kind == "NS":
        numbers = [parse_number(m) for m in data]
        if len(set(numbers)) != len(numbers):
            raise ValueValidationError("Input collection contains duplicates")
        return
    member_type = str if kind == "SS" else bytes
    if not all(isinstance(m, member_type) for m in data):
        raise ValueValidationError(_EMPTY)
    if len(set(data)) != len(data):
        suffix = "of type BS contains duplicates." if kind == "BS" else " contains duplicates."
        raise ValueValidationError(INVALID_PREFIX + "Input collection " + _set_repr(data) + suffix)


def validate_item(item: Any) -> None:
    """Validate every attribute of an item (depth counts the item as level 1)."""
    if not isinstance(item, dict):
        raise ValueValidationError(_EMPTY)
    for name, value in item.items():
        if not isinstance(name, str):
            raise ValueValidationError(_EMPTY)
        validate_value(value)


# ------------------------------------------------------------------ item size

def _number_size(text: str) -> int:
    digits = Decimal(text).normalize(_WIDE).as_tuple().digits
    significant = len(digits) if any(digits) else 1
    return (significant + 1) // 2 + 1


def value_size(value: dict) -> int:
    """Bytes DynamoDB charges for one typed value (names not included)."""
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode("utf-8"))
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(len(b) for b in data)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in data)
    # M: each entry costs its name, its value and one byte of overhead.
    return 3 + sum(len(k.encode("utf-8")) + value_size(v) + 1 for k, v in data.items())


def item_size(item: dict) -> int:
    """Item size per DynamoDB's rules: sum of attribute name + value sizes."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


# ------------------------------------------------------------------ wire form

def _decode_b64(data: Any) -> bytes:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if not isinstance(data, str):
        raise ValueValidationError(_EMPTY)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueValidationError(
            "Invalid Base64 value for a binary attribute: " + data[:64]) from None


def from_wire(item: Any) -> Any:
    """Convert a wire item (name -> typed value, B as base64) to the in-memory form."""
    if not isinstance(item, dict):
        return item
    return {name: from_wire_value(v) for name, v in item.items()}


def from_wire_value(value: Any) -> Any:
    """Convert one wire typed value to the in-memory form (B base64 -> bytes)."""
    if not isinstance(value, dict) or len(value) != 1:
        return value
    kind, data = next(iter(value.items()))
    return _value_from_wire(kind, data)


def _value_from_wire(kind: str, data: Any) -> dict:
    if kind == "B":
        return {"B": _decode_b64(data)}
    if kind == "BS" and isinstance(data, list):
        return {"BS": [_decode_b64(m) for m in data]}
    if kind == "M" and isinstance(data, dict):
        return {"M": {k: from_wire_value(v) for k, v in data.items()}}
    if kind == "L" and isinstance(data, list):
        return {"L": [from_wire_value(v) for v in data]}
    return {kind: data}


def to_wire_value(value: dict) -> dict:
    """Convert one in-memory typed value to wire JSON (bytes -> base64)."""
    kind, data = next(iter(value.items()))
    if kind == "B":
        return {"B": base64.b64encode(data).decode("ascii")}
    if kind == "BS":
        return {"BS": [base64.b64encode(m).decode("ascii") for m in data]}
    if kind == "M":
        return {"M": {k: to_wire_value(v) for k, v in data.items()}}
    if kind == "L":
        return {"L": [to_wire_value(v) for v in data]}
    return {kind: data}


def to_wire(item: dict) -> dict:
    """Convert an in-memory item (name -> typed value) to wire JSON."""
    return {name: to_wire_value(v) for name, v in item.items()}
