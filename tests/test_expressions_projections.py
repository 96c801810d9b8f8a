"""ProjectionExpression parsing, document paths, and projected structure."""

from __future__ import annotations

import pytest

from kynamo.expressions import ExpressionError, parse_projection, project


def S(x: str) -> dict:
    return {"S": x}


def N(x: int) -> dict:
    return {"N": str(x)}


ITEM = {
    "pk": S("p"),
    "a": {"M": {"b": S("x"), "z": S("y"), "deep": {"M": {"c": {"L": [N(0), {"M": {"d": N(1), "e": N(2)}}]}}}}},
    "l": {"L": [N(0), N(1), N(2), N(3), N(4)]},
    "grid": {"L": [{"L": [N(1), N(2)]}, {"L": [N(3), N(4)]}]},
    "dotted.name": S("dot"),
    "n": N(5),
}

CASES = [
    ("pk", None, {"pk": S("p")}),
    ("pk, n", None, {"pk": S("p"), "n": N(5)}),
    ("absent", None, {}),
    ("pk, absent", None, {"pk": S("p")}),
    ("a.b", None, {"a": {"M": {"b": S("x")}}}),
    ("a.b, a.z", None, {"a": {"M": {"b": S("x"), "z": S("y")}}}),
    ("a.nope", None, {}),
    ("l[1]", None, {"l": {"L": [N(1)]}}),
    ("l[3], l[1]", None, {"l": {"L": [N(1), N(3)]}}),
    ("l[9]", None, {}),
    ("grid[1][0]", None, {"grid": {"L": [{"L": [N(3)]}]}}),
    ("a.deep.c[1].e", None, {"a": {"M": {"deep": {"M": {"c": {"L": [{"M": {"e": N(2)}}]}}}}}}),
    ("#d", {"#d": "dotted.name"}, {"dotted.name": S("dot")}),
    ("#a.#b", {"#a": "a", "#b": "b"}, {"a": {"M": {"b": S("x")}}}),
    ("pk.x", None, {}),
    ("n[0]", None, {}),
    ("a", None, {"a": ITEM["a"]}),
]


@pytest.mark.parametrize(("expr", "names", "expected"), CASES)
def test_project(expr: str, names: dict | None, expected: dict) -> None:
    assert project(ITEM, parse_projection(expr, names)) == expected


def test_project_no_item() -> None:
    assert project(None, parse_projection("a", None)) == {}


def test_paths_and_names_used() -> None:
    proj = parse_projection("#a.b[2].c, d", {"#a": "a", "#x": "unused"})
    assert [p.elements for p in proj.paths] == [("a", "b", 2, "c"), ("d",)]
    assert proj.names_used == {"#a"}
    assert proj.top_level_names == {"a", "d"}
    assert str(proj.paths[0]) == "[a, b, [2], c]"


ERRORS = [
    ("a, a", "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite "
     "one of these paths; path one: [a], path two: [a]"),
    ("MyAttr, MyAttr.SubAttr", "Invalid ProjectionExpression: Two document paths overlap with each other; must "
     "remove or rewrite one of these paths; path one: [MyAttr], path two: [MyAttr, SubAttr]"),
    ("MyAttr.SubAttr, MyAttr[0]", "Invalid ProjectionExpression: Two document paths conflict with each other; "
     "must remove or rewrite one of these paths; path one: [MyAttr, SubAttr], path two: [MyAttr, [0]]"),
    ("a,", 'Invalid ProjectionExpression: Syntax error; token: "<EOF>", near: ","'),
    ("a b", 'Invalid ProjectionExpression: Syntax error; token: "b", near: "a b"'),
    ("a[", 'Invalid ProjectionExpression: Syntax error; token: "<EOF>", near: "["'),
    ("a[-1]", 'Invalid ProjectionExpression: Syntax error; token: "-", near: "[-1"'),
    ("a.", 'Invalid ProjectionExpression: Syntax error; token: "<EOF>", near: "."'),
    ("a.[1]", 'Invalid ProjectionExpression: Syntax error; token: "[", near: ".[1"'),
    (":v", 'Invalid ProjectionExpression: Syntax error; token: ":v", near: ":v"'),
    ("#n", "Invalid ProjectionExpression: An expression attribute name used in the document path is not "
     "defined; attribute name: #n"),
    ("", "Invalid ProjectionExpression: The expression can not be empty;"),
]


@pytest.mark.parametrize(("expr", "message"), ERRORS)
def test_projection_errors(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError) as exc:
        parse_projection(expr, None)
    assert exc.value.message == message
