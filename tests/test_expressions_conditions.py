"""ConditionExpression / FilterExpression evaluation, table-driven."""

from __future__ import annotations

import re

import pytest

from kynamo.expressions import evaluate_condition, parse_condition


def S(x: str) -> dict:
    return {"S": x}


def N(x: str | int) -> dict:
    return {"N": str(x)}


def B(x: bytes) -> dict:
    return {"B": x}


ITEM = {
    "pk": S("p"),
    "n": N(10),
    "f": N("1.50"),
    "s": S("banana"),
    "b": B(b"\x01\x02\x03"),
    "flag": {"BOOL": True},
    "nothing": {"NULL": True},
    "tags": {"SS": ["red", "green"]},
    "nums": {"NS": ["1", "5", "7"]},
    "bins": {"BS": [b"\x00", b"\x01"]},
    "letters": {"L": [S("a"), S("b"), N(3)]},
    "info": {"M": {"nested": {"M": {"deep": S("x")}}, "arr": {"L": [N(1), {"M": {"v": N(2)}}]}}},
    "dotted.name": S("yes"),
    "blank": S(""),
}

VALUES = {
    ":ten": N(10), ":ten_f": N("10.0"), ":nine": N(9), ":eleven": N(11), ":one": N(1), ":two": N(2),
    ":three": N(3), ":five": N(5), ":six": N(6), ":twenty": N(20), ":f": N("1.5"),
    ":apple": S("apple"), ":banana": S("banana"), ":ban": S("ban"), ":nan": S("nan"), ":x": S("x"),
    ":red": S("red"), ":blue": S("blue"), ":a": S("a"), ":b12": B(b"\x01\x02"), ":b23": B(b"\x02\x03"),
    ":true": {"BOOL": True}, ":false": {"BOOL": False}, ":ss": S("SS"), ":null": S("NULL"),
    ":s": S("S"), ":n": S("N"), ":m": S("M"), ":l": S("L"), ":bool": S("BOOL"), ":b": S("B"),
    ":ns": S("NS"), ":bs": S("BS"), ":tagset": {"SS": ["green", "red"]}, ":numset": {"NS": ["7.0", "1", "5"]},
    ":list": {"L": [S("a"), S("b"), N("3.0")]}, ":nullv": {"NULL": True}, ":empty": S(""),
    ":b0": B(b"\x00"), ":yes": S("yes"),
}

CASES = [
    # comparators on numbers (numeric, not textual)
    ("n = :ten", True), ("n = :ten_f", True), ("n <> :ten", False), ("n <> :nine", True),
    ("n < :eleven", True), ("n < :ten", False), ("n <= :ten", True), ("n > :nine", True),
    ("n >= :ten", True), ("n >= :eleven", False), ("f = :f", True),
    # strings and binary order by bytes
    ("s = :banana", True), ("s > :apple", True), ("s < :apple", False), ("s >= :ban", True),
    ("b > :b12", True), ("b < :b23", True),
    # different types: false, never an error
    ("n = :banana", False), ("n < :banana", False), ("s > :ten", False), ("flag = :true", True),
    ("flag = :false", False), ("nothing = :nullv", True),
    # absent2 attributes: comparisons false, <> true
    ("absent2 = :ten", False), ("absent2 < :ten", False), ("absent2 <> :ten", True),
    # BETWEEN and IN
    ("n BETWEEN :one AND :twenty", True), ("n BETWEEN :ten AND :ten", True),
    ("n BETWEEN :eleven AND :twenty", False), ("s BETWEEN :apple AND :banana", True),
    ("n BETWEEN :apple AND :banana", False),
    ("s IN (:apple, :banana)", True), ("s IN (:apple)", False), ("n IN (:one, :ten_f)", True),
    ("absent2 IN (:one)", False), ("absent2 <> absent3", True), ("absent2 = absent3", False),
    # precedence: NOT > AND > OR, parentheses first
    ("n = :ten OR n = :ten AND n = :eleven", True), ("(n = :ten OR n = :ten) AND n = :eleven", False),
    ("NOT n = :eleven AND n = :ten", True), ("not (n = :ten)", False), ("NOT NOT n = :ten", True),
    ("n = :nine OR s = :banana", True), ("n = :nine OR (s = :apple OR s = :banana)", True),
    ("((n = :ten) AND (s = :banana))", True),  # ((cond)) alone is refused: see test_expressions_errors
    # keywords in any case
    ("n between :one and :twenty Or s in (:apple)", True),
    # existence and type
    ("attribute_exists(n) AND attribute_not_exists(absent)", True), ("attribute_exists(absent)", False),
    ("attribute_not_exists(n)", False), ("attribute_exists(info.nested.deep)", True),
    ("attribute_exists(info.nested.nope)", False), ("attribute_not_exists(letters[9])", True),
    ("attribute_exists(letters[2])", True), ("attribute_exists(nothing)", True),
    ("attribute_type(tags, :ss)", True), ("attribute_type(nothing, :null)", True),
    ("attribute_type(n, :s)", False), ("attribute_type(n, :n)", True), ("attribute_type(info, :m)", True),
    ("attribute_type(letters, :l)", True), ("attribute_type(flag, :bool)", True), ("attribute_type(b, :b)", True),
    ("attribute_type(nums, :ns)", True), ("attribute_type(bins, :bs)", True),
    ("attribute_type(absent, :s)", False),
    # begins_with on strings and binary
    ("begins_with(s, :ban)", True), ("begins_with(s, :nan)", False), ("begins_with(b, :b12)", True),
    ("begins_with(b, :b23)", False), ("begins_with(n, :ban)", False), ("begins_with(absent, :ban)", False),
    ("begins_with(s, :empty)", True),
    # contains on strings, sets and lists
    ("contains(s, :nan)", True), ("contains(s, :x)", False), ("contains(tags, :red)", True),
    ("contains(tags, :blue)", False), ("contains(nums, :five)", True), ("contains(nums, :two)", False),
    ("contains(letters, :three)", True), ("contains(letters, :a)", True), ("contains(letters, :x)", False),
    ("contains(bins, :b0)", True), ("contains(n, :one)", False), ("contains(absent, :a)", False),
    ("contains(tags, :ten)", False),
    # size on every sized type; undefined for numbers
    ("size(s) = :six", True), ("size(tags) = :two", True), ("size(letters) = :three", True),
    ("size(info) = :two", True), ("size(b) = :three", True), ("size(nums) > :two", True),
    ("size(n) = :two", False), ("size(absent) = :one", False), ("size(blank) < :one", True),
    ("size(s) BETWEEN :five AND :six", True), ("size(s) IN (:one, :six)", True),
    ("size(letters) = size(letters)", True),
    # nested document paths, names containing dots
    ("info.nested.deep = :x", True), ("info.arr[1].v = :two", True), ("letters[0] = :a", True),
    ("letters[5] = :a", False), ("info.arr[0].v = :two", False), ("s.part = :x", False),
    ("#d = :yes", True), ("#i.#n2.deep = :x", True),
    # set and list equality is by value
    ("tags = :tagset", True), ("nums = :numset", True), ("letters = :list", True),
    ("tags <> :tagset", False),
    # path against path
    ("n > f", True), ("n = f", False),
]

NAMES = {"#d": "dotted.name", "#i": "info", "#n2": "nested"}


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_condition(expr: str, expected: bool) -> None:
    used = {k: v for k, v in VALUES.items() if k in re.findall(r":[A-Za-z0-9_]+", expr)}
    names = {k: v for k, v in NAMES.items() if k in expr} or None
    cond = parse_condition(expr, names, used)
    assert cond.evaluate(ITEM) is expected
    assert evaluate_condition(cond, ITEM) is expected


@pytest.mark.parametrize(("expr", "expected"), [
    ("attribute_not_exists(pk)", True), ("attribute_exists(pk)", False), ("n <> :ten", True),
    ("n = :ten", False), ("NOT attribute_exists(pk)", True), ("size(s) < :ten", False),
])
def test_no_item(expr: str, expected: bool) -> None:
    values = {":ten": N(10)} if ":ten" in expr else None
    assert parse_condition(expr, None, values).evaluate(None) is expected
    assert parse_condition(expr, None, values).evaluate({}) is expected


def test_names_and_values_used_are_reported() -> None:
    cond = parse_condition("#a = :v AND b = :w", {"#a": "a", "#unused": "x"}, {":v": N(1), ":w": N(2)})
    assert cond.names_used == {"#a"}
    assert cond.values_used == {":v", ":w"}


def test_in_accepts_one_hundred_operands() -> None:
    values = {f":v{i}": N(i) for i in range(100)}
    cond = parse_condition("n IN (" + ", ".join(values) + ")", None, values)
    assert cond.evaluate(ITEM) is True


def test_parsed_condition_is_reusable_across_items() -> None:
    cond = parse_condition("n > :v", None, {":v": N(5)})
    results = [cond.evaluate({"n": N(i)}) for i in range(10)]
    assert results == [i > 5 for i in range(10)]


def test_filter_kind_prefix() -> None:
    from kynamo.expressions import ExpressionError

    with pytest.raises(ExpressionError) as exc:
        parse_condition("a = :absent2", None, None, kind="FilterExpression")
    assert exc.value.message.startswith("Invalid FilterExpression: ")
