"""Attribute values at the API edge: wire JSON -> validated in-memory items, and keys.

One recursive pass converts base64 to bytes, checks the JSON type of each member
(a wrong JSON type is a SerializationException, as the real service reports it),
enforces the 32-level nesting limit before any deeper recursion can happen, and
canonicalises numbers so "1.50" is stored and returned as "1.5".
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from kynamo.router.protocol import SerializationException, ValidationException

from kynamo.keycodec import KeySchema
from kynamo.values import (
    MAX_ITEM_SIZE,
    MAX_NESTING_DEPTH,
    TYPES,
    ValueValidationError,
    item_size,
    normalize_number,
    to_wire,
    to_wire_value,
    validate_value,
)

INVALID = "One or more parameter values were invalid: "
KEY_MISMATCH = "The provided key element does not match the schema"
ITEM_TOO_BIG = "Item size has exceeded the maximum allowed size"
_EMPTY = "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
_MULTI = "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"
_DEPTH = ("Nesting Levels have exceeded supported limits: "
          "Attributes in the item have nested levels beyond supported limit")
MAX_HASH_KEY = 2048
MAX_RANGE_KEY = 1024

__all__ = ["item_from_wire", "item_to_wire", "key_from_wire", "value_from_wire", "value_to_wire"]


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "BOOLEAN_VALUE"
    if isinstance(v, int | float):
        return "NUMBER_VALUE"
    if isinstance(v, str):
        return "STRING_VALUE"
    if isinstance(v, list):
        return "START_ARRAY"
    if isinstance(v, dict):
        return "START_OBJECT"
    return "VALUE_NULL"


def _want(v: Any, kind: type | tuple[type, ...], target: str) -> Any:
    if not isinstance(v, kind):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to {target}")
    return v


def _b64(v: Any) -> bytes:
    _want(v, str, "Blob")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        if len(v) % 4:
            msg = f"Base64 encoded length is expected a multiple of 4 bytes but found: {len(v)}"
        else:
            msg = "Base64 encoded data contains invalid characters"
        raise SerializationException(msg) from None


def _number(v: Any) -> str:
    _want(v, str, "String")
    try:
        return normalize_number(v)
    except ValueValidationError as exc:
        raise ValidationException(exc.message) from None


def _convert(v: Any, depth: int) -> dict[str, Any]:
    if depth > MAX_NESTING_DEPTH:
        raise ValidationException(_DEPTH)
    if not isinstance(v, dict):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to AttributeValue")
    kinds = [k for k, x in v.items() if k in TYPES and x is not None]
    if not kinds:
        raise ValidationException(_EMPTY)
    if len(kinds) > 1:
        raise ValidationException(_MULTI)
    kind = kinds[0]
    data = v[kind]
    if kind == "S":
        return {"S": _want(data, str, "String")}
    if kind == "N":
        return {"N": _number(data)}
    if kind == "B":
        return {"B": _b64(data)}
    if kind == "BOOL":
        if not isinstance(data, bool):
            raise SerializationException(f"{_json_kind(data)} cannot be converted to Boolean")
        return {"BOOL": data}
    if kind == "NULL":
        if not isinstance(data, bool):
            raise SerializationException(f"{_json_kind(data)} cannot be converted to Boolean")
        if data is not True:
            raise ValidationException(INVALID + "Null attribute value types must have the value of true")
        return {"NULL": True}
    if kind == "M":
        _want(data, dict, "Map")
        return {"M": {name: _convert(x, depth + 1) for name, x in data.items()}}
    if kind == "L":
        _want(data, list, "List")
        return {"L": [_convert(x, depth + 1) for x in data]}
    _want(data, list, "List")
    if kind == "SS":
        out: Any = [_want(x, str, "String") for x in data]
    elif kind == "NS":
        out = [_number(x) for x in data]
    else:
        out = [_b64(x) for x in data]
    value = {kind: out}
    try:
        validate_value(value)  # emptiness and duplicates, with DynamoDB's wording
    except ValueValidationError as exc:
        raise ValidationException(exc.message) from None
    return value


def value_from_wire(v: Any) -> dict[str, Any]:
    return _convert(v, 1)


def item_from_wire(doc: Any, what: str = "Item") -> dict[str, Any]:
    """A wire attribute map (item, key, or expression values) in validated in-memory form."""
    if doc is None:
        raise ValidationException(f"1 validation error detected: Value null at '{what[0].lower() + what[1:]}' "
                                  "failed to satisfy constraint: Member must not be null")
    if not isinstance(doc, dict):
        raise SerializationException(f"{_json_kind(doc)} cannot be converted to Map")
    return {name: _convert(v, 1) for name, v in doc.items()}


def value_to_wire(v: dict[str, Any]) -> dict[str, Any]:
    return to_wire_value(v)


def item_to_wire(item: dict[str, Any]) -> dict[str, Any]:
    return to_wire(item)


def _type_of(v: dict[str, Any]) -> str:
    return next(iter(v))


def _check_key_value(name: str, v: dict[str, Any], is_hash: bool) -> None:
    kind, data = next(iter(v.items()))
    if kind in ("S", "B") and len(data) == 0:
        what = "string" if kind == "S" else "binary"
        raise ValidationException(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain "
            f"an empty {what} value. Key: {name}"
        )
    size = len(data.encode("utf-8")) if kind == "S" else len(data) if kind == "B" else 0
    if is_hash and size > MAX_HASH_KEY:
        raise ValidationException(INVALID + "Size of hashkey has exceeded the maximum size limit of2048 bytes")
    if not is_hash and size > MAX_RANGE_KEY:
        raise ValidationException(
            INVALID + "Aggregated size of all range keys has exceeded the size limit of 1024 bytes"
        )


def key_from_wire(schema: KeySchema, doc: Any) -> dict[str, Any]:
    """An exact primary key (GetItem/DeleteItem/UpdateItem/BatchGet): anything else does not match."""
    key = item_from_wire(doc, "Key")
    if set(key) != schema.key_names():
        raise ValidationException(KEY_MISMATCH)
    for name, want, is_hash in ((schema.pk, schema.pk_type, True), (schema.sk, schema.sk_type, False)):
        if name is None:
            continue
        if _type_of(key[name]) != want:
            raise ValidationException(KEY_MISMATCH)
        _check_key_value(name, key[name], is_hash)
    return key


def key_of_item(schema: KeySchema, item: dict[str, Any]) -> dict[str, Any]:
    """The key of an item to put, with DynamoDB's messages for a missing or mistyped key."""
    key = {}
    for name, want, is_hash in ((schema.pk, schema.pk_type, True), (schema.sk, schema.sk_type, False)):
        if name is None:
            continue
        v = item.get(name)
        if v is None:
            raise ValidationException(INVALID + f"Missing the key {name} in the item")
        if _type_of(v) != want:
            raise ValidationException(INVALID + f"Type mismatch for key {name} expected: {want} actual: {_type_of(v)}")
        _check_key_value(name, v, is_hash)
        key[name] = v
    return key


def check_item_size(item: dict[str, Any]) -> int:
    size = item_size(item)
    if size > MAX_ITEM_SIZE:
        raise ValidationException(ITEM_TOO_BIG)
    return size
