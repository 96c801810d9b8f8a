"""Attribute value validation, numbers, item size and wire conversion."""

from __future__ import annotations

import pytest

from kynamo.values import (
    ValueValidationError,
    from_wire,
    from_wire_value,
    item_size,
    normalize_number,
    number_add,
    number_sub,
    to_wire,
    validate_item,
    validate_value,
    value_size,
)

INVALID = "One or more parameter values were invalid: "
EMPTY = "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
DEPTH = ("Nesting Levels have exceeded supported limits: "
         "Attributes in the item have nested levels beyond supported limit")

NORMALIZE = [
    ("1.50", "1.5"), ("1e2", "100"), ("1E+2", "100"), ("-0", "0"), ("0.000", "0"), ("+7", "7"),
    ("007", "7"), ("1.0", "1"), ("-1.230", "-1.23"), (".5", "0.5"), ("5.", "5"), ("1e-5", "0.00001"),
    ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
    ("1e125", "1" + "0" * 125), ("1e-130", "0." + "0" * 129 + "1"), ("-9.9e125", "-99" + "0" * 124),
    ("123456789012345678901234567890123456780000", "123456789012345678901234567890123456780000"),
]


@pytest.mark.parametrize(("text", "canonical"), NORMALIZE)
def test_normalize_number(text: str, canonical: str) -> None:
    assert normalize_number(text) == canonical


BAD_NUMBERS = [
    ("", "The parameter cannot be converted to a numeric value"),
    ("b", "The parameter cannot be converted to a numeric value: b"),
    ("1e", "The parameter cannot be converted to a numeric value: 1e"),
    ("NaN", "The parameter cannot be converted to a numeric value: NaN"),
    ("Infinity", "The parameter cannot be converted to a numeric value: Infinity"),
    ("1_000", "The parameter cannot be converted to a numeric value: 1_000"),
    (" 1", "The parameter cannot be converted to a numeric value:  1"),
    ("0x10", "The parameter cannot be converted to a numeric value: 0x10"),
    ("123456789012345678901234567890123456789", "Attempting to store more than 38 significant digits in a Number"),
    ("-1.23456789012345678901234567890123456789", "Attempting to store more than 38 significant digits in a Number"),
    ("1e126", "Number overflow. Attempting to store a number with magnitude larger than supported range"),
    ("-1e126", "Number overflow. Attempting to store a number with magnitude larger than supported range"),
    ("1e-131", "Number underflow. Attempting to store a number with magnitude smaller than supported range"),
    ("-1e-131", "Number underflow. Attempting to store a number with magnitude smaller than supported range"),
]


@pytest.mark.parametrize(("text", "message"), BAD_NUMBERS)
def test_bad_numbers(text: str, message: str) -> None:
    with pytest.raises(ValueValidationError) as exc:
        normalize_number(text)
    assert exc.value.message == message
    with pytest.raises(ValueValidationError):
        validate_value({"N": text})


@pytest.mark.parametrize(("a", "b", "total", "difference"), [
    ("0.1", "0.2", "0.3", "-0.1"),
    ("1", "-1", "0", "2"),
    ("99999999999999999999999999999999999999", "1", "100000000000000000000000000000000000000",
     "99999999999999999999999999999999999998"),
    ("1.5", "1.5", "3", "0"),
    ("1e100", "1e100", "2" + "0" * 100, "0"),
])
def test_exact_arithmetic(a: str, b: str, total: str, difference: str) -> None:
    assert number_add(a, b) == total
    assert number_sub(a, b) == difference


def test_arithmetic_beyond_38_digits_is_rejected() -> None:
    with pytest.raises(ValueValidationError, match="38 significant digits"):
        number_add("1", "1e-38")
    with pytest.raises(ValueValidationError, match="overflow"):
        number_add("9.9e125", "9.9e125")


INVALID_VALUES = [
    ({}, EMPTY),
    ({"a": ""}, EMPTY),
    ("x", EMPTY),
    ({"M": {"a": {}}}, EMPTY),
    ({"L": [{}]}, EMPTY),
    ({"S": "a", "N": "1"}, "Supplied AttributeValue has more than one datatypes set, "
     "must contain exactly one of the supported datatypes"),
    ({"NULL": False}, INVALID + "Null attribute value types must have the value of true"),
    ({"NULL": "no"}, INVALID + "Null attribute value types must have the value of true"),
    ({"SS": []}, INVALID + "An string set  may not be empty"),
    ({"NS": []}, INVALID + "An number set  may not be empty"),
    ({"BS": []}, INVALID + "Binary sets should not be empty"),
    ({"SS": ["a", "a"]}, INVALID + "Input collection [a, a] contains duplicates."),
    ({"BS": [b"b", b"b"]}, INVALID + "Input collection [Yg==, Yg==]of type BS contains duplicates."),
    ({"NS": ["1", "1.0"]}, "Input collection contains duplicates"),
    ({"NS": ["1", "b"]}, "The parameter cannot be converted to a numeric value: b"),
    ({"NS": ["1", ""]}, "The parameter cannot be converted to a numeric value"),
    ({"BOOL": "true"}, EMPTY),
    ({"S": 5}, EMPTY),
    ({"B": "not-bytes"}, EMPTY),
    ({"SS": "a"}, EMPTY),
    ({"M": {"x": {"N": "1e126"}}}, "Number overflow. Attempting to store a number with magnitude larger "
     "than supported range"),
]


@pytest.mark.parametrize(("value", "message"), INVALID_VALUES)
def test_invalid_values(value: object, message: str) -> None:
    with pytest.raises(ValueValidationError) as exc:
        validate_value(value)
    assert exc.value.message == message


@pytest.mark.parametrize("value", [
    {"S": ""}, {"S": "x"}, {"N": "1"}, {"B": b""}, {"B": b"\x00"}, {"BOOL": False}, {"NULL": True},
    {"M": {}}, {"L": []}, {"SS": ["a", "b"]}, {"NS": ["1", "2"]}, {"BS": [b"a", b"b"]},
    {"M": {"a": {"L": [{"M": {"b": {"N": "1"}}}]}}},
])
def test_valid_values(value: dict) -> None:
    validate_value(value)


def _nested(levels: int) -> dict:
    value: dict = {"S": "leaf"}
    for _ in range(levels - 1):
        value = {"L": [value]}
    return value


def test_nesting_depth_limit() -> None:
    validate_item({"a": _nested(32)})
    with pytest.raises(ValueValidationError) as exc:
        validate_item({"a": _nested(33)})
    assert exc.value.message == DEPTH


SIZES = [
    ({"a": {"S": "abc"}}, 1 + 3),
    ({"name": {"S": "é"}}, 4 + 2),
    ({"n": {"N": "1"}}, 1 + 2),
    ({"n": {"N": "12"}}, 1 + 2),
    ({"n": {"N": "123"}}, 1 + 3),
    ({"n": {"N": "-1.25"}}, 1 + 3),
    ({"n": {"N": "1000000"}}, 1 + 2),
    ({"n": {"N": "0"}}, 1 + 2),
    ({"b": {"B": b"\x00\x01\x02"}}, 1 + 3),
    ({"t": {"BOOL": True}}, 1 + 1),
    ({"z": {"NULL": True}}, 1 + 1),
    ({"l": {"L": []}}, 1 + 3),
    ({"m": {"M": {}}}, 1 + 3),
    ({"l": {"L": [{"S": "ab"}, {"BOOL": True}]}}, 1 + 3 + (2 + 1) + (1 + 1)),
    ({"m": {"M": {"k": {"S": "ab"}}}}, 1 + 3 + (1 + 2 + 1)),
    ({"ss": {"SS": ["a", "bc"]}}, 2 + 3),
    ({"ns": {"NS": ["1", "123"]}}, 2 + 2 + 3),
    ({"bs": {"BS": [b"a", b"bc"]}}, 2 + 3),
    ({"a": {"S": "x"}, "bb": {"N": "5"}}, (1 + 1) + (2 + 2)),
    ({}, 0),
]


@pytest.mark.parametrize(("item", "size"), SIZES)
def test_item_size(item: dict, size: int) -> None:
    assert item_size(item) == size


def test_value_size_of_large_string() -> None:
    assert value_size({"S": "x" * 400_000}) == 400_000


WIRE = [
    ({"b": {"B": "AAEC"}}, {"b": {"B": b"\x00\x01\x02"}}),
    ({"bs": {"BS": ["YQ==", "Yg=="]}}, {"bs": {"BS": [b"a", b"b"]}}),
    ({"m": {"M": {"x": {"B": "YQ=="}, "y": {"L": [{"B": "Yg=="}, {"S": "s"}]}}}},
     {"m": {"M": {"x": {"B": b"a"}, "y": {"L": [{"B": b"b"}, {"S": "s"}]}}}}),
    ({"s": {"S": "x"}, "n": {"N": "1"}, "t": {"BOOL": True}, "z": {"NULL": True}},
     {"s": {"S": "x"}, "n": {"N": "1"}, "t": {"BOOL": True}, "z": {"NULL": True}}),
    ({"S": {"S": "attribute named S"}}, {"S": {"S": "attribute named S"}}),
]


@pytest.mark.parametrize(("wire", "memory"), WIRE)
def test_wire_round_trip(wire: dict, memory: dict) -> None:
    assert from_wire(wire) == memory
    assert to_wire(memory) == wire
    assert from_wire(to_wire(memory)) == memory


def test_bad_base64() -> None:
    with pytest.raises(ValueValidationError):
        from_wire_value({"B": "not base64!"})
