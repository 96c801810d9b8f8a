"""KeyConditionExpression -> (partition key value, sort key condition) for a Query.

The storage node wants the sort-key condition as a tuple `(op, *values)` with op
in `= < <= > >= between begins_with`. The shared expression package parses it (one
grammar for every expression); this module checks the operands against the table's
key schema with DynamoDB's messages.
"""

from __future__ import annotations

from typing import Any

from kynamo.router.protocol import ValidationException

from kynamo import keycodec
from kynamo.expressions import ExpressionError, parse_key_condition
from kynamo.keycodec import KeySchema
from kynamo.values import as_sent

_PREFIX = "Invalid KeyConditionExpression: "
_TYPE_MISMATCH = "One or more parameter values were invalid: Condition parameter type does not match schema type"


def _show(v: dict[str, Any]) -> str:
    kind, data = next(iter(v.items()))
    return "{" + f"{kind}:{data.hex() if isinstance(data, bytes) else as_sent(data)}" + "}"


def check_types(schema: KeySchema, pk_value: dict[str, Any], sk: tuple[Any, ...] | None) -> None:
    """Key condition operands must have the key schema's types (the shared parser cannot know them)."""
    if next(iter(pk_value)) != schema.pk_type:
        raise ValidationException(_TYPE_MISMATCH)
    if sk is None:
        return
    op, *operands = sk
    for v in operands:
        if next(iter(v)) != schema.sk_type:
            raise ValidationException(_TYPE_MISMATCH)
    if op == "begins_with" and schema.sk_type == "N":
        raise ValidationException(
            f"{_PREFIX}Incorrect operand type for operator or function; operator or function: begins_with, "
            "operand type: N"
        )
    if op == "between" and keycodec.encode_value(operands[0]) > keycodec.encode_value(operands[1]):
        lo, hi = (_show(v) for v in operands)
        raise ValidationException(
            f"{_PREFIX}The BETWEEN operator requires upper bound to be greater than or equal to lower bound; "
            f"lower bound operand: AttributeValue: {lo}, upper bound operand: AttributeValue: {hi}"
        )


def parse(
    expr: str, names: dict[str, str] | None, values: dict[str, Any] | None, schema: KeySchema, parsed: Any = None
) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
    """(partition key value, sort-key condition or None): the shared expression grammar, then the schema's
    rules and types. `parsed`: the grammar's result when the caller already has it."""
    if not expr.strip():
        raise ValidationException(f"{_PREFIX}The expression can not be empty;")
    try:
        kc = parse_key_condition(expr, names, values, schema.pk, schema.sk, parsed)
    except ExpressionError as exc:
        raise ValidationException(exc.message) from None
    sk = tuple(kc.sk) if kc.sk is not None else None
    check_types(schema, kc.pk_value, sk)
    return kc.pk_value, sk
