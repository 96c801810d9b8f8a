"""Byte order of encoded keys must equal DynamoDB order; round trips must be exact."""

from __future__ import annotations

import random
from decimal import Decimal, getcontext

import pytest

from kynamo.keycodec import (
    KeySchema,
    decode_position,
    decode_value,
    encode_prefix,
    encode_value,
    hash8,
    hash_space_boundaries,
    normalize_number,
    pk_prefix,
    position,
    prefix_end,
)

getcontext().prec = 60  # comparisons of 38-digit numbers must not round

ALPHABET = "ab\x00\x01\x7f\u00e9\u00ff\u0100\u4e2d\U0001f600z"


def rand_str(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))


def rand_bytes(rng: random.Random) -> bytes:
    return bytes(rng.choice((0, 1, 0x7F, 0xFE, 0xFF, rng.randrange(256))) for _ in range(rng.randint(0, 6)))


def rand_number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return rng.choice(["0", "-0", "0.0", "0e10", "-0.000"])
    ndigits = rng.randint(1, 38)
    digits = "".join(rng.choice("0123456789") for _ in range(ndigits)).lstrip("0") or "1"
    digits = digits[:38]
    if kind < 0.5:
        exp = rng.randint(-5, 5)  # crowded values: many shared prefixes
    else:
        exp = rng.randint(-129 - len(digits) + 1, 126 - len(digits))
    sign = rng.choice(["", "-"])
    return f"{sign}{digits}E{exp}"


def test_number_equal_forms_encode_identically() -> None:
    assert len({encode_value({"N": s}) for s in ("0", "-0", "0.0", "0E5", "-0.00")}) == 1
    assert encode_value({"N": "1e2"}) == encode_value({"N": "100"}) == encode_value({"N": "100.000"})
    assert encode_value({"N": "-1.50"}) == encode_value({"N": "-15e-1"})


@pytest.mark.parametrize("seed", range(5))
def test_number_order_matches_decimal(seed: int) -> None:
    rng = random.Random(seed)
    nums = [rand_number(rng) for _ in range(600)]
    nums += [
        "1E-130",
        "-1E-130",
        "9.9999999999999999999999999999999999999E+125",
        "-9.9999999999999999999999999999999999999E+125",
    ]
    by_value = sorted(nums, key=Decimal)
    by_bytes = sorted(nums, key=lambda s: encode_value({"N": s}))
    assert [Decimal(x) for x in by_bytes] == [Decimal(x) for x in by_value]
    for s in nums:
        back = decode_value(encode_value({"N": s}))["N"]
        assert Decimal(back) == Decimal(s)
        assert encode_value({"N": back}) == encode_value({"N": s})


def test_number_limits() -> None:
    for bad in ("1E126", "1E-131", "1" * 39, "NaN", "Infinity", "abc"):
        with pytest.raises(ValueError):
            encode_value({"N": bad})
    assert normalize_number("00012.3400") == "12.34"


@pytest.mark.parametrize("seed", range(5))
def test_string_order_is_utf8_byte_order(seed: int) -> None:
    rng = random.Random(seed)
    strs = [rand_str(rng) for _ in range(500)]
    by_utf8 = sorted(strs, key=lambda s: s.encode())
    by_enc = sorted(strs, key=lambda s: encode_value({"S": s}))
    assert by_enc == by_utf8
    for s in strs:
        assert decode_value(encode_value({"S": s})) == {"S": s}


@pytest.mark.parametrize("seed", range(5))
def test_binary_order(seed: int) -> None:
    rng = random.Random(seed)
    blobs = [rand_bytes(rng) for _ in range(500)]
    assert sorted(blobs, key=lambda b: encode_value({"B": b})) == sorted(blobs)
    for b in blobs:
        assert decode_value(encode_value({"B": b})) == {"B": b}


def test_types_never_collide() -> None:
    encs = {encode_value({"S": "1"}), encode_value({"N": "1"}), encode_value({"B": b"1"})}
    assert len(encs) == 3


@pytest.mark.parametrize("sk_type", ["S", "N", "B"])
def test_composite_orders_by_sort_key_within_partition_key(sk_type: str) -> None:
    rng = random.Random(7)
    schema = KeySchema("pk", "S", "sk", sk_type)  # type: ignore[arg-type]
    gen = {"S": rand_str, "N": rand_number, "B": rand_bytes}[sk_type]
    for pk in ["a", "", "a\x00", "\u4e2d"]:
        sks = [gen(rng) for _ in range(200)]
        items = [{"pk": {"S": pk}, "sk": {sk_type: v}} for v in sks]
        positions = [position(schema, it) for it in items]
        assert all(p.startswith(pk_prefix({"S": pk})) for p in positions)
        key = Decimal if sk_type == "N" else (lambda s: s.encode()) if sk_type == "S" else (lambda b: b)
        ordered = [it["sk"][sk_type] for _, it in sorted(zip(positions, items, strict=True), key=lambda t: t[0])]
        assert [key(x) for x in ordered] == sorted(key(x) for x in sks)
        for p, it in zip(positions, items, strict=True):
            back = decode_position(schema, p)
            assert back["pk"] == it["pk"]
            assert decode_position(schema, position(schema, back)) == back


def test_position_hash_only_table() -> None:
    schema = KeySchema("id", "N")
    p = position(schema, {"id": {"N": "42"}, "other": {"S": "x"}})
    assert decode_position(schema, p) == {"id": {"N": "42"}}
    with pytest.raises(ValueError):
        position(schema, {"id": {"S": "42"}})
    with pytest.raises(ValueError):
        position(schema, {"x": {"N": "42"}})


def test_begins_with_prefix_range() -> None:
    rng = random.Random(3)
    strs = [rand_str(rng) for _ in range(2000)]
    for prefix in ["", "a", "a\x00", "\u4e2d", "\x00", "ab\x00"]:
        lo = encode_prefix({"S": prefix})
        hi = prefix_end(lo)
        inside = {s for s in strs if lo <= encode_value({"S": s}) and (hi is None or encode_value({"S": s}) < hi)}
        assert inside == {s for s in strs if s.startswith(prefix)}


def test_prefix_end() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") is None


def test_hash_space_boundaries() -> None:
    assert hash_space_boundaries(1) == []
    b = hash_space_boundaries(4)
    assert b == [bytes([0x40, 0, 0, 0, 0, 0, 0, 0]), bytes([0x80] + [0] * 7), bytes([0xC0] + [0] * 7)]
    assert all(len(x) == 8 for x in hash_space_boundaries(7))
    assert hash_space_boundaries(7) == sorted(hash_space_boundaries(7))


@pytest.mark.parametrize("seed", range(3))
def test_position_fast_path_matches_the_general_encoder(seed: int) -> None:
    """position() encodes plain S and B keys inline: byte for byte what encode_value gives."""
    rng = random.Random(seed)
    for pk_type, sk_type in (("S", "S"), ("B", "B"), ("S", "B"), ("B", "S")):
        schema = KeySchema("pk", pk_type, "sk", sk_type)
        for _ in range(300):
            pk = {"S": rand_str(rng)} if pk_type == "S" else {"B": rand_bytes(rng) + b"\x00"}
            sk = {"S": rand_str(rng) + "\x00"} if sk_type == "S" else {"B": rand_bytes(rng)}
            expected = hash8(encode_value(pk)) + encode_value(pk) + encode_value(sk)
            assert position(schema, {"pk": pk, "sk": sk, "x": {"S": "y"}}) == expected
    schema = KeySchema("pk", "S", "sk", "S")
    for bad in ({"pk": {"N": "1"}, "sk": {"S": "a"}}, {"pk": {"S": 1}, "sk": {"S": "a"}},
                {"pk": {"S": "a", "N": "1"}, "sk": {"S": "a"}}, {"pk": {"S": "a"}}, {"pk": "a", "sk": {"S": "a"}}):
        with pytest.raises(ValueError):
            position(schema, bad)
