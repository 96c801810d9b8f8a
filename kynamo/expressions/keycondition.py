"""KeyConditionExpression: reduce to a partition key value and one sort key range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ast import And, Between, Compare, Function, In, Not, Or, Path, Value
from .condition import Condition, parse_condition
from .errors import ExpressionError
from .update import key_not_scalar

_PREFIX = "Invalid KeyConditionExpression: "
_FLIP = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(slots=True, frozen=True)
class KeyCondition:
    """``sk`` is None or ("=", v) ("<", v) ("<=", v) (">", v) (">=", v) ("between", lo, hi) ("begins_with", v)."""

    pk_value: dict
    sk: tuple | None
    names_used: frozenset[str] = frozenset()
    values_used: frozenset[str] = frozenset()


def _flatten(node: Any, out: list[Any]) -> None:
    if isinstance(node, And):
        _flatten(node.left, out)
        _flatten(node.right, out)
    elif isinstance(node, Or | Not):
        raise ExpressionError(f"Invalid operator used in KeyConditionExpression: "
                              f"{'OR' if isinstance(node, Or) else 'NOT'}")
    else:
        out.append(node)


def _key_name(operand: Any) -> str:
    if not isinstance(operand, Path):
        raise ExpressionError("Query key condition not supported")
    if len(operand.elements) != 1:
        raise ExpressionError("KeyConditionExpressions cannot have conditions on nested attributes")
    return str(operand.elements[0])


def _leaf(node: Any) -> tuple[str, tuple]:
    """(attribute name, ("op", values...)) for one key condition."""
    if isinstance(node, Compare):
        left, right, op = node.left, node.right, node.op
        if op == "<>":
            raise ExpressionError("Invalid operator used in KeyConditionExpression: <>")
        if isinstance(left, Value) and isinstance(right, Path):
            left, right, op = right, left, _FLIP[op]
        if not isinstance(right, Value):
            raise ExpressionError("Query key condition not supported")
        return _key_name(left), (op, right.value)
    if isinstance(node, Between):
        if not (isinstance(node.low, Value) and isinstance(node.high, Value)):
            raise ExpressionError("Query key condition not supported")
        return _key_name(node.operand), ("between", node.low.value, node.high.value)
    if isinstance(node, Function) and node.name == "begins_with":
        path, prefix = node.args
        if not isinstance(prefix, Value):
            raise ExpressionError("Query key condition not supported")
        return _key_name(path), ("begins_with", prefix.value)
    if isinstance(node, In):
        raise ExpressionError("Invalid operator used in KeyConditionExpression: IN")
    if isinstance(node, Function):
        raise ExpressionError(f"Invalid operator used in KeyConditionExpression: {node.name}")
    raise ExpressionError("Query key condition not supported")


def parse_key_condition(expr: str, names: dict | None, values: dict | None, pk_name: str,
                        sk_name: str | None, parsed: Condition | None = None) -> KeyCondition:
    """Parse a Query's KeyConditionExpression against the table or index key schema.

    `parsed`: the expression already parsed as a condition (`parse_condition(..., kind=
    "KeyConditionExpression")`), when a caller reported its grammar's faults before the key
    schema was known; only the key rules remain."""
    if parsed is None:
        parsed = parse_condition(expr, names, values, "KeyConditionExpression")
    nested = {str(p.elements[0]) for p in parsed.paths if len(p.elements) > 1}
    for name in (pk_name, sk_name):  # a key read as a map or list: the key-scalar rule, partition key first
        if name is not None and name in nested:
            raise ExpressionError(key_not_scalar(name))
    ast = parsed.ast
    leaves: list[Any] = []
    _flatten(ast, leaves)
    conditions: dict[str, tuple] = {}
    for leaf in leaves:
        name, condition = _leaf(leaf)
        if name in conditions:
            raise ExpressionError("KeyConditionExpressions must only contain one condition per key")
        conditions[name] = condition
    if len(conditions) > 2:
        raise ExpressionError("Conditions can be of length 1 or 2 only")
    if pk_name not in conditions:
        raise ExpressionError(f"Query condition missed key schema element: {pk_name}")
    for name in conditions:
        if name not in (pk_name, sk_name):
            raise ExpressionError(f"Query condition missed key schema element: {sk_name or pk_name}")
    pk = conditions[pk_name]
    if pk[0] != "=":
        raise ExpressionError("Query key condition not supported")
    sk = conditions.get(sk_name) if sk_name else None
    if sk is not None and sk[0] == "begins_with" and next(iter(sk[1])) not in ("S", "B"):
        raise ExpressionError(f"{_PREFIX}Incorrect operand type for operator or function; "
                              f"operator or function: begins_with, operand type: {next(iter(sk[1]))}")
    return KeyCondition(pk[1], sk, frozenset(parsed.names_used), frozenset(parsed.values_used))
