"""Request-shape checks with DynamoDB's wording.

A JSON value of the wrong kind is a SerializationException (the service fails
to deserialize it); a well-typed value that breaks a constraint is a
ValidationException in the `1 validation error detected: Value ... at ...`
form that SDK users recognise.
"""

from __future__ import annotations

import re
from typing import Any

from kynamo.router.attrs import _json_kind
from kynamo.router.protocol import SerializationException, ValidationException

_TABLE_RE = re.compile(r"[a-zA-Z0-9_.-]+\Z")
_MISSING = object()
MAX_ATTRIBUTE_NAMES = 255  # AttributesToGet


def member(name: str) -> str:
    """`TableName` -> `tableName`, the member path DynamoDB names in its messages."""
    return name[:1].lower() + name[1:]


def constraint(value: Any, path: str, rule: str) -> ValidationException:
    shown = "null" if value is None else f"'{value}'"
    return ValidationException(
        f"1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: {rule}"
    )


def _get(body: dict[str, Any], name: str, required: bool, path: str | None) -> Any:
    v = body.get(name, _MISSING)
    if v is _MISSING or v is None:
        if required:
            raise constraint(None, path or member(name), "Member must not be null")
        return None
    return v


def string(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    enum: tuple[str, ...] | None = None,
    min_len: int | None = None,
    max_len: int | None = None,
    path: str | None = None,
) -> str | None:
    v = _get(body, name, required, path)
    if v is None:
        return None
    if not isinstance(v, str):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to String")
    where = path or member(name)
    if enum is not None and v not in enum:
        raise constraint(v, where, f"Member must satisfy enum value set: [{', '.join(enum)}]")
    if min_len is not None and len(v) < min_len:
        raise constraint(v, where, f"Member must have length greater than or equal to {min_len}")
    if max_len is not None and len(v) > max_len:
        raise constraint(v, where, f"Member must have length less than or equal to {max_len}")
    return v


def table_name(body: dict[str, Any], name: str = "TableName", path: str | None = None) -> str:
    v = string(body, name, required=True, path=path)
    assert v is not None
    check_table_name(v, path or member(name))
    return v


def check_table_name(v: str, where: str = "tableName") -> None:
    if len(v) < 3:
        raise constraint(v, where, "Member must have length greater than or equal to 3")
    if len(v) > 255:
        raise constraint(v, where, "Member must have length less than or equal to 255")
    if not _TABLE_RE.match(v):
        raise constraint(v, where, "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")


def integer(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    min_value: int | None = None,
    max_value: int | None = None,
    path: str | None = None,
    java_type: str = "Integer",
) -> int | None:
    """A whole number parameter. `java_type` is its type in DynamoDB's model: an Integer is 32 bits
    and a Long 64, and a number past that cannot be read into it. (DynamoDB Local answers such a
    Limit with a 500; Kynamo used to pass it on to storage, where it failed.)"""
    v = _get(body, name, required, path)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to {java_type}")
    v = int(v)
    bits = 63 if java_type == "Long" else 31
    if not -(1 << bits) <= v < 1 << bits:
        raise SerializationException(f"NUMBER_VALUE cannot be converted to {java_type}")
    where = path or member(name)
    if min_value is not None and v < min_value:
        raise constraint(v, where, f"Member must have value greater than or equal to {min_value}")
    if max_value is not None and v > max_value:
        raise constraint(v, where, f"Member must have value less than or equal to {max_value}")
    return v


def boolean(body: dict[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to Boolean")
    return v


def mapping(
    body: dict[str, Any], name: str, *, required: bool = False, path: str | None = None
) -> dict[str, Any] | None:
    v = _get(body, name, required, path)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to Map")
    return v


def array(body: dict[str, Any], name: str, *, required: bool = False, path: str | None = None) -> list[Any] | None:
    v = _get(body, name, required, path)
    if v is None:
        return None
    if not isinstance(v, list):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to List")
    return v


def attribute_names(body: dict[str, Any], name: str = "AttributesToGet", path: str | None = None) -> list[str] | None:
    """A legacy list of attribute names (`AttributesToGet`): 1 to 255 strings, as the service constrains it.

    Duplicates are judged later (`distinct_names`): DynamoDB refuses a legacy list beside an
    expression first."""
    v = array(body, name, path=path)
    if v is None:
        return None
    for x in v:
        if not isinstance(x, str):
            raise SerializationException(f"{_json_kind(x)} cannot be converted to String")
    where = path or member(name)
    if not v:
        raise constraint("[]", where, "Member must have length greater than or equal to 1")
    if len(v) > MAX_ATTRIBUTE_NAMES:
        rule = f"Member must have length less than or equal to {MAX_ATTRIBUTE_NAMES}"
        raise constraint(f"[{', '.join(v)}]", where, rule)
    return v


def distinct_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValidationException(
                f"One or more parameter values were invalid: Duplicate value in attribute name: {n}"
            )
        seen.add(n)


def structure(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise SerializationException(f"{_json_kind(v)} cannot be converted to {what}")
    return v


RETURN_CONSUMED = ("INDEXES", "TOTAL", "NONE")
SELECT = ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT")
RETURN_VALUES = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")


def return_consumed(body: dict[str, Any]) -> str:
    return string(body, "ReturnConsumedCapacity", enum=RETURN_CONSUMED) or "NONE"


def return_values(body: dict[str, Any], allowed: tuple[str, ...]) -> str:
    rv = string(body, "ReturnValues", enum=RETURN_VALUES) or "NONE"
    if rv not in allowed:
        raise ValidationException("Return values set to invalid value")
    return rv


def return_on_ccf(body: dict[str, Any]) -> str:
    return string(body, "ReturnValuesOnConditionCheckFailure", enum=("ALL_OLD", "NONE")) or "NONE"


def reject_legacy(body: dict[str, Any], *names: str) -> None:
    """Legacy (pre-expression) parameters: say so plainly instead of ignoring them."""
    for name in names:
        if body.get(name) is not None:
            raise ValidationException(
                f"Kynamo does not support the legacy parameter {name}; use the expression parameters instead"
            )
