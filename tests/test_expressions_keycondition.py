"""KeyConditionExpression reduction to a partition key and a sort key range."""

from __future__ import annotations

import re

import pytest

from kynamo.expressions import ExpressionError, parse_key_condition

VALUES = {":a": {"S": "a"}, ":x": {"S": "002"}, ":y": {"S": "b01"}, ":n": {"N": "5"}}


def parse(expr: str, names: dict | None = None, sk: str | None = "sk") -> tuple:
    values = {k: VALUES[k] for k in re.findall(r":[A-Za-z0-9_]+", expr) if k in VALUES}
    kc = parse_key_condition(expr, names, values or None, "pk", sk)
    return kc.pk_value, kc.sk


CASES = [
    ("pk = :a", None, None),
    ("pk = :a AND sk = :x", None, ("=", {"S": "002"})),
    ("pk = :a AND sk < :x", None, ("<", {"S": "002"})),
    ("pk = :a AND sk <= :x", None, ("<=", {"S": "002"})),
    ("pk = :a AND sk > :x", None, (">", {"S": "002"})),
    ("pk = :a AND sk >= :x", None, (">=", {"S": "002"})),
    ("pk = :a AND sk BETWEEN :x AND :y", None, ("between", {"S": "002"}, {"S": "b01"})),
    ("pk = :a AND begins_with(sk, :x)", None, ("begins_with", {"S": "002"})),
    ("(begins_with(sk, :x)) AND (#p = :a)", {"#p": "pk"}, ("begins_with", {"S": "002"})),
    ("sk > :x AND pk = :a", None, (">", {"S": "002"})),
    (":a = pk AND :x < sk", None, (">", {"S": "002"})),
    ("pk = :a and sk between :x and :y", None, ("between", {"S": "002"}, {"S": "b01"})),
    ("#p = :a AND #s = :x", {"#p": "pk", "#s": "sk"}, ("=", {"S": "002"})),
]


@pytest.mark.parametrize(("expr", "names", "sk"), CASES)
def test_key_condition(expr: str, names: dict | None, sk: tuple | None) -> None:
    assert parse(expr, names) == ({"S": "a"}, sk)


def test_hash_only_table() -> None:
    assert parse("pk = :a", sk=None) == ({"S": "a"}, None)


def test_reports_used_placeholders() -> None:
    kc = parse_key_condition("#p = :a", {"#p": "pk"}, VALUES, "pk", None)
    assert kc.names_used == {"#p"} and kc.values_used == {":a"}


ERRORS = [
    ("pk = :a OR sk = :x", "Invalid operator used in KeyConditionExpression: OR"),
    ("NOT pk = :a", "Invalid operator used in KeyConditionExpression: NOT"),
    ("pk IN (:a)", "Invalid operator used in KeyConditionExpression: IN"),
    ("pk <> :a", "Invalid operator used in KeyConditionExpression: <>"),
    ("pk = :a AND attribute_exists(sk)",
     "Invalid operator used in KeyConditionExpression: attribute_exists"),
    ("sk = :x", "Query condition missed key schema element: pk"),
    ("pk > :a", "Query key condition not supported"),
    ("pk = :a AND pk = :a", "KeyConditionExpressions must only contain one condition per key"),
    ("pk = :a AND attr1 = :x", "Query condition missed key schema element: sk"),
    # a key read as a map or list breaks the key-scalar rule; another attribute is merely nested (DynamoDB Local)
    ("pk = :a AND sk.x = :x", "Key attributes must be scalars; list random access '[]' and map lookup '.' are "
     "not allowed: Key: sk"),
    ("pk[0] = :a AND begins_with(sk.y, :x)", "Key attributes must be scalars; list random access '[]' and map "
     "lookup '.' are not allowed: Key: pk"),
    ("pk = :a AND attr1.x = :x", "KeyConditionExpressions cannot have conditions on nested attributes"),
    ("pk = :a AND begins_with(sk, :n)", "Invalid KeyConditionExpression: Incorrect operand type for operator "
     "or function; operator or function: begins_with, operand type: N"),
    ("pk = :nope", "Invalid KeyConditionExpression: An expression attribute value used in expression is not "
     "defined; attribute value: :nope"),
    ("pk = ", 'Invalid KeyConditionExpression: Syntax error; token: "<EOF>", near: "= "'),
    ("", "Invalid KeyConditionExpression: The expression can not be empty;"),
]


@pytest.mark.parametrize(("expr", "message"), ERRORS)
def test_key_condition_errors(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        parse(expr)
    assert exc.value.message == message
