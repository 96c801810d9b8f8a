"""UpdateExpression parsing and application, table-driven."""

from __future__ import annotations

import re

import pytest

from kynamo.expressions import ExpressionError, apply_update, parse_update


def S(x: str) -> dict:
    return {"S": x}


def N(x: str | int) -> dict:
    return {"N": str(x)}


KEYS = {"pk", "sk"}


def base() -> dict:
    return {
        "pk": S("p"), "sk": S("s"), "tally": N(1), "label": S("x"), "f": N("0.1"),
        "letters": {"L": [N(1), N(2), N(3)]}, "info": {"M": {"a": N(1)}},
        "tags": {"SS": ["a", "b"]}, "nums": {"NS": ["1", "2"]}, "bins": {"BS": [b"\x01", b"\x02"]},
    }


VALUES = {
    ":a": S("A"), ":b": N(2), ":z": N(0), ":f": N("0.2"), ":one": N(1), ":ten": N(10), ":tail": {"L": [N(9)]},
    ":head": {"L": [N(0)]}, ":empty": {"L": []}, ":more": {"SS": ["b", "c"]}, ":da": {"SS": ["a"]},
    ":dab": {"SS": ["a", "b"]}, ":ns": {"NS": ["3", "1.0"]}, ":dns": {"NS": ["1.00"]}, ":bs": {"BS": [b"\x03"]},
    ":map": {"M": {"k": S("v")}}, ":neg": N("-5"), ":big": N("99999999999999999999999999999999999999"),
    ":tiny": N("0.0000000000000000000000000000000000001"), ":s": S("str"), ":tiny2": N("1e-38"),
}


def run(expr: str, names: dict | None = None, item: dict | None = None) -> tuple[dict, set[str]]:
    used = {k: VALUES[k] for k in re.findall(r":[A-Za-z0-9_]+", expr)}
    plan = parse_update(expr, names, used or None)
    return apply_update(plan, base() if item is None else item, KEYS)


APPLY_CASES = [
    ("SET a = :a", {"a": S("A")}),
    ("SET info.b = :b", {"info": {"M": {"a": N(1), "b": N(2)}}}),
    ("SET info.a = :b", {"info": {"M": {"a": N(2)}}}),
    ("SET letters[0] = :z", {"letters": {"L": [N(0), N(2), N(3)]}}),
    ("SET letters[10] = :b", {"letters": {"L": [N(1), N(2), N(3), N(2)]}}),
    ("SET letters[3] = :b", {"letters": {"L": [N(1), N(2), N(3), N(2)]}}),
    ("SET f = f + :f", {"f": N("0.3")}),
    ("SET tally = tally - :one", {"tally": N(0)}),
    ("SET tally = tally - :ten", {"tally": N(-9)}),
    ("SET tally = :ten - tally", {"tally": N(9)}),
    ("SET tally = :big + :one", {"tally": N("100000000000000000000000000000000000000")}),
    ("SET tally = :one + :tiny", {"tally": N("1.0000000000000000000000000000000000001")}),
    ("SET tally = tally + :neg", {"tally": N(-4)}),
    ("SET a = tally, tally = :ten", {"a": N(1), "tally": N(10)}),
    ("SET a = info", {"a": {"M": {"a": N(1)}}}),
    ("SET tally = if_not_exists(tally, :z) + :one", {"tally": N(2)}),
    ("SET fresh = if_not_exists(fresh, :z)", {"fresh": N(0)}),
    ("SET fresh = if_not_exists(fresh, tally)", {"fresh": N(1)}),
    ("SET letters = list_append(letters, :tail)", {"letters": {"L": [N(1), N(2), N(3), N(9)]}}),
    ("SET letters = list_append(:head, letters)", {"letters": {"L": [N(0), N(1), N(2), N(3)]}}),
    ("SET alt = list_append(if_not_exists(alt, :empty), :tail)", {"alt": {"L": [N(9)]}}),
    ("SET a = (:a)", {"a": S("A")}),
    ("SET m = :map", {"m": {"M": {"k": S("v")}}}),
    ("REMOVE label", {"label": None}),
    ("REMOVE absent", {"absent": None}),
    ("REMOVE info.a", {"info": {"M": {}}}),
    ("REMOVE info.zzz", {"info": {"M": {"a": N(1)}}}),
    ("REMOVE letters[0], letters[2]", {"letters": {"L": [N(2)]}}),
    ("REMOVE letters[1]", {"letters": {"L": [N(1), N(3)]}}),
    ("REMOVE letters[7]", {"letters": {"L": [N(1), N(2), N(3)]}}),
    ("REMOVE tally, label", {"tally": None, "label": None}),
    ("ADD tally :ten", {"tally": N(11)}),
    ("ADD newcount :ten", {"newcount": N(10)}),
    ("ADD tags :more", {"tags": {"SS": ["a", "b", "c"]}}),
    ("ADD nums :ns", {"nums": {"NS": ["1", "2", "3"]}}),
    ("ADD newset :more", {"newset": {"SS": ["b", "c"]}}),
    ("ADD bins :bs", {"bins": {"BS": [b"\x01", b"\x02", b"\x03"]}}),
    ("ADD info.c :one", {"info": {"M": {"a": N(1), "c": N(1)}}}),
    ("ADD info.a :one", {"info": {"M": {"a": N(2)}}}),
    ("DELETE tags :da", {"tags": {"SS": ["b"]}}),
    ("DELETE tags :dab", {"tags": None}),
    ("DELETE nums :dns", {"nums": {"NS": ["2"]}}),
    ("DELETE absent :da", {"absent": None}),
    ("SET a = :a REMOVE info ADD tally :one DELETE tags :da",
     {"a": S("A"), "info": None, "tally": N(2), "tags": {"SS": ["b"]}}),
    ("set a = :a remove label", {"a": S("A"), "label": None}),
    ("REMOVE label SET a = :a", {"a": S("A"), "label": None}),
]


@pytest.mark.parametrize(("expr", "changes"), APPLY_CASES)
def test_apply(expr: str, changes: dict) -> None:
    before = base()
    new, touched = run(expr, item=before)
    expected = base()
    for name, value in changes.items():
        if value is None:
            expected.pop(name, None)
        else:
            expected[name] = value
    assert new == expected
    assert touched == set(changes)
    assert before == base(), "apply_update must not mutate its input"


def test_names_in_update() -> None:
    new, touched = run("SET #l[0] = :z, #i.#k = :a", {"#l": "letters", "#i": "info", "#k": "dotted.key"})
    assert new["letters"]["L"][0] == N(0)
    assert new["info"]["M"]["dotted.key"] == S("A")
    assert touched == {"letters", "info"}


def test_creates_item_from_nothing() -> None:
    plan = parse_update("SET v = :one ADD c :one", None, {":one": N(1)})
    assert apply_update(plan, None, KEYS) == ({"v": N(1), "c": N(1)}, {"v", "c"})


def test_plan_reports_used_placeholders() -> None:
    plan = parse_update("SET #a = :v", {"#a": "a"}, {":v": N(1)})
    assert plan.names_used == {"#a"} and plan.values_used == {":v"}


APPLY_ERRORS = [
    ("SET pk = :a", "One or more parameter values were invalid: Cannot update attribute pk. "
     "This attribute is part of the key"),
    ("REMOVE sk", "One or more parameter values were invalid: Cannot update attribute sk. "
     "This attribute is part of the key"),
    ("ADD pk :one", "One or more parameter values were invalid: Cannot update attribute pk. "
     "This attribute is part of the key"),
    ("SET a = absent + :one", "The provided expression refers to an attribute "
     "that does not exist in the item"),
    ("SET a = absent", "The provided expression refers to an attribute "
     "that does not exist in the item"),
    ("SET a = label + :one", "An operand in the update expression has an "
     "incorrect data type"),
    ("SET a = list_append(tally, :tail)", "An operand in the update expression "
     "has an incorrect data type"),
    ("ADD label :one", "An operand in the update expression has an incorrect data type"),
    ("ADD tags :ns", "An operand in the update expression has an incorrect data type"),
    ("DELETE nums :da", "An operand in the update expression has an incorrect "
     "data type"),
    ("SET nope.child = :b", "The document path provided in the update expression "
     "is invalid for update"),
    ("SET label.child = :b", "The document path provided in the update expression "
     "is invalid for update"),
    ("SET tally[0] = :b", "The document path provided in the update expression "
     "is invalid for update"),
    ("SET a = :one + :tiny2", "Attempting to store more than 38 significant digits in a Number"),
    ("SET a = :big + :big", "Attempting to store more than 38 significant digits in a Number"),
]


@pytest.mark.parametrize(("expr", "message"), APPLY_ERRORS)
def test_apply_errors(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        run(expr)
    assert exc.value.message == message


PARSE_ERRORS = [
    ("SET a = :a, a = :b", "Invalid UpdateExpression: Two document paths overlap with each other; must remove "
     "or rewrite one of these paths; path one: [a], path two: [a]"),
    ("SET info = :map, info.a = :b", "Invalid UpdateExpression: Two document paths overlap with each other; "
     "must remove or rewrite one of these paths; path one: [info], path two: [info, a]"),
    ("SET a = :a REMOVE a", "Invalid UpdateExpression: Two document paths overlap with each other; must "
     "remove or rewrite one of these paths; path one: [a], path two: [a]"),
    ("SET l[1] = :a REMOVE l[1].x", "Invalid UpdateExpression: Two document paths overlap with each other; "
     "must remove or rewrite one of these paths; path one: [l, [1]], path two: [l, [1], x]"),
    ("SET l[1] = :a, l.x = :b", "Invalid UpdateExpression: Two document paths conflict with each other; "
     "must remove or rewrite one of these paths; path one: [l, [1]], path two: [l, x]"),
    ("SET a = :b SET b = :b", 'Invalid UpdateExpression: The "SET" section can only be used once in an update '
     "expression;"),
    ("REMOVE a REMOVE b", 'Invalid UpdateExpression: The "REMOVE" section can only be used once in an update '
     "expression;"),
    ("ADD a :s", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, "
     "operand type: STRING, typeSet: ALLOWED_FOR_ADD_OPERAND"),
    ("ADD a :map", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, "
     "operand type: MAP, typeSet: ALLOWED_FOR_ADD_OPERAND"),
    ("DELETE a :one", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: "
     "DELETE, operand type: NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND"),
    ("DELETE a :tail", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: "
     "DELETE, operand type: LIST, typeSet: ALLOWED_FOR_DELETE_OPERAND"),
    ("SET a = :s + :one", "Invalid UpdateExpression: Incorrect operand type for operator or function; "
     "operator or function: +, operand type: S"),
    ("SET a = list_append(:s, :tail)", "Invalid UpdateExpression: Incorrect operand type for operator or "
     "function; operator or function: list_append, operand type: S"),
    ("SET a = if_not_exists(:one)", "Invalid UpdateExpression: Incorrect number of operands for operator or "
     "function; operator or function: if_not_exists, number of operands: 1"),
    ("SET a = if_not_exists(:one, :one)", "Invalid UpdateExpression: Operator or function requires a document "
     "path; operator or function: if_not_exists"),
    ("SET a = list_append(:tail)", "Invalid UpdateExpression: Incorrect number of operands for operator or "
     "function; operator or function: list_append, number of operands: 1"),
    ("SET a = size(b)", "Invalid UpdateExpression: The function is not allowed in an update expression; "
     "function: size"),  # DynamoDB Local's answer
    ("SET a = foo(b)", "Invalid UpdateExpression: Invalid function name; function: foo"),
    ("SET a = :nope", "Invalid UpdateExpression: An expression attribute value used in expression is not "
     "defined; attribute value: :nope"),
    ("SET #nope = :one", "Invalid UpdateExpression: An expression attribute name used in the document path is "
     "not defined; attribute name: #nope"),
    ("SET status = :one", "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: "
     "status"),
    ("", "Invalid UpdateExpression: The expression can not be empty;"),
    ("   ", "Invalid UpdateExpression: The expression can not be empty;"),
    ("INVALID SYNTAX HERE", 'Invalid UpdateExpression: Syntax error; token: "INVALID", near: "INVALID SYNTAX"'),
    ("ADD hits : incr", 'Invalid UpdateExpression: Syntax error; token: ":", near: "hits : incr"'),
    ("SET a = :one + :one + :one", 'Invalid UpdateExpression: Syntax error; token: "+", near: ":one + :one"'),
    ("SET a", 'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "a"'),
    ("SET a = ", 'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "= "'),
    ("REMOVE a,", 'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: ","'),
    ("ADD a", 'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "a"'),
    ("SET a[x] = :one", 'Invalid UpdateExpression: Syntax error; token: "x", near: "[x]"'),
]


@pytest.mark.parametrize(("expr", "message"), PARSE_ERRORS)
def test_parse_errors(expr: str, message: str) -> None:
    values = {k: VALUES.get(k, N(1)) for k in re.findall(r":[A-Za-z0-9_]+", expr) if k != ":nope"}
    with pytest.raises(ExpressionError) as exc:
        parse_update(expr, None, values or None)
    assert exc.value.message == message
