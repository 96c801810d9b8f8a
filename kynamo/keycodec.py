"""Order-preserving key encoding: an item's position in the table's key space.

position = hash8(pk) + enc(pk) + enc(sk). Comparing positions as raw bytes gives
DynamoDB's order inside one partition key (by sort key), while the hash prefix
spreads partition keys evenly so a partition can own a contiguous byte range.

Every encoded value starts with a type tag and is self-delimiting, so a sort key
appended after a partition key never changes the partition key's order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

KeyType = Literal["S", "N", "B"]

TAG_N = 0x02
TAG_S = 0x03
TAG_B = 0x04
_TAGS = {"N": TAG_N, "S": TAG_S, "B": TAG_B}

# Numbers: class byte after the tag, so negatives < zero < positives.
_NEG, _ZERO, _POS = 0x01, 0x02, 0x03
_EXP_BIAS = 0x8000  # two exponent bytes: DynamoDB's range needs -129..126, headroom is free
_MAX_DIGITS = 38
_MIN_EXP, _MAX_EXP = -129, 126  # E in 0.d1d2.. x 10^E for 1e-130 .. 9.99..e125

HASH_LEN = 8


@dataclass(frozen=True, slots=True)
class KeySchema:
    """A table's primary key: partition key name/type and optional sort key name/type."""

    pk: str
    pk_type: KeyType
    sk: str | None = None
    sk_type: KeyType | None = None

    def key_names(self) -> set[str]:
        return {self.pk} if self.sk is None else {self.pk, self.sk}

    def ordered_names(self) -> tuple[str, ...]:
        """The key attributes, partition key first (the order DynamoDB reports them in)."""
        return (self.pk,) if self.sk is None else (self.pk, self.sk)

    def to_dict(self) -> dict:
        return {"pk": self.pk, "pk_type": self.pk_type, "sk": self.sk, "sk_type": self.sk_type}

    @classmethod
    def from_dict(cls, d: dict) -> KeySchema:
        return cls(d["pk"], d["pk_type"], d.get("sk"), d.get("sk_type"))


# ---------------------------------------------------------------- numbers


def _split_number(text: str) -> tuple[int, str, int]:
    """(sign, significant digits without leading/trailing zeros, E) with value = 0.digits x 10^E."""
    try:
        d = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not a number: {text!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a number: {text!r}")
    sign, digit_tuple, exp = d.as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    if not digits:
        return 0, "", 0
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    return (-1 if sign else 1), stripped, exp + len(stripped)


def _check_number(digits: str, e: int) -> None:
    if len(digits) > _MAX_DIGITS:
        raise ValueError("Attempting to store more than 38 significant digits in a Number")
    if e > _MAX_EXP:
        raise ValueError("Number overflow. Attempting to store a number with magnitude larger than supported range")
    if e < _MIN_EXP:
        raise ValueError("Number underflow. Attempting to store a number with magnitude smaller than supported range")


def _encode_number(text: str) -> bytes:
    sign, digits, e = _split_number(text)
    if sign == 0:
        return bytes((TAG_N, _ZERO))
    _check_number(digits, e)
    if len(digits) % 2:
        digits += "0"
    # Two digits per byte as 1..100, then a 0x00 terminator: shorter digit strings sort first.
    body = bytearray((e + _EXP_BIAS).to_bytes(2, "big"))
    body += bytes(int(digits[i : i + 2]) + 1 for i in range(0, len(digits), 2))
    body.append(0x00)
    if sign < 0:
        # Larger magnitude must sort lower: complement exponent, digits and terminator.
        body = bytearray(0xFF - b for b in body)
        return bytes((TAG_N, _NEG)) + bytes(body)
    return bytes((TAG_N, _POS)) + bytes(body)


def _decode_number(buf: bytes, i: int) -> tuple[str, int]:
    cls = buf[i]
    i += 1
    if cls == _ZERO:
        return "0", i
    if cls not in (_NEG, _POS):
        raise ValueError("corrupt number encoding")
    flip = 0xFF if cls == _NEG else 0x00
    e = ((buf[i] ^ flip) << 8 | (buf[i + 1] ^ flip)) - _EXP_BIAS
    i += 2
    parts = []
    while True:
        b = buf[i] ^ flip
        i += 1
        if b == 0:
            break
        parts.append(f"{b - 1:02d}")
    digits = "".join(parts).rstrip("0")
    # value = 0.digits x 10^e = digits x 10^(e - len(digits)); format without exponent when short.
    text = _format_number(digits, e - len(digits))
    return ("-" + text if cls == _NEG else text), i


def _format_number(digits: str, exp: int) -> str:
    """Plain decimal text when it is compact, scientific otherwise (DynamoDB accepts both)."""
    if exp >= 0:
        if exp <= 40:
            return digits + "0" * exp
        return f"{digits[0]}.{digits[1:]}E+{exp + len(digits) - 1}" if len(digits) > 1 else f"{digits}E+{exp}"
    point = len(digits) + exp
    if point > 0:
        return f"{digits[:point]}.{digits[point:]}"
    if point > -40:
        return "0." + "0" * (-point) + digits
    e10 = point - 1
    return f"{digits[0]}.{digits[1:]}E{e10}" if len(digits) > 1 else f"{digits}E{e10}"


def normalize_number(text: str) -> str:
    """Canonical text of a DynamoDB number (what a key round trip returns)."""
    return _decode_number(_encode_number(text), 1)[0]


# ---------------------------------------------------------------- bytes and strings


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff")


def _encode_bytes(tag: int, raw: bytes) -> bytes:
    return bytes((tag,)) + _escape(raw) + b"\x00\x01"


def _decode_bytes(buf: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        j = buf.index(b"\x00", i)
        out += buf[i:j]
        marker = buf[j + 1]
        if marker == 0x01:
            return bytes(out), j + 2
        if marker != 0xFF:
            raise ValueError("corrupt byte-string encoding")
        out.append(0)
        i = j + 2


# ---------------------------------------------------------------- public API


def _typed(typed: dict) -> tuple[str, object]:
    if not isinstance(typed, dict) or len(typed) != 1:
        raise ValueError("a key value must be a single typed attribute value")
    ((t, v),) = typed.items()
    if t not in _TAGS:
        raise ValueError(f"key attribute type must be S, N or B, not {t}")
    return t, v


def encode_value(typed: dict) -> bytes:
    """Encode {"S": str} / {"N": str} / {"B": bytes} so byte order is DynamoDB order."""
    t, v = _typed(typed)
    if t == "S":
        if not isinstance(v, str):
            raise ValueError("S value must be a string")
        return _encode_bytes(TAG_S, v.encode("utf-8"))
    if t == "B":
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise ValueError("B value must be bytes")
        return _encode_bytes(TAG_B, bytes(v))
    if not isinstance(v, str):
        raise ValueError("N value must be a string")
    return _encode_number(v)


def encode_prefix(typed: dict) -> bytes:
    """Encoding of an S/B value without its terminator: every value starting with it shares this prefix."""
    t, v = _typed(typed)
    if t == "S" and isinstance(v, str):
        return bytes((TAG_S,)) + _escape(v.encode("utf-8"))
    if t == "B" and isinstance(v, (bytes, bytearray, memoryview)):
        return bytes((TAG_B,)) + _escape(bytes(v))
    raise ValueError("begins_with needs an S or B value")


def _decode_at(buf: bytes, i: int) -> tuple[dict, int]:
    tag = buf[i]
    if tag == TAG_S:
        raw, j = _decode_bytes(buf, i + 1)
        return {"S": raw.decode("utf-8")}, j
    if tag == TAG_B:
        raw, j = _decode_bytes(buf, i + 1)
        return {"B": raw}, j
    if tag == TAG_N:
        text, j = _decode_number(buf, i + 1)
        return {"N": text}, j
    raise ValueError(f"unknown key type tag {tag:#x}")


def decode_value(data: bytes) -> dict:
    """Inverse of encode_value (numbers come back in canonical text)."""
    try:
        value, end = _decode_at(data, 0)
    except IndexError:
        raise ValueError("truncated key encoding") from None
    if end != len(data):
        raise ValueError("trailing bytes after key value")
    return value


def hash8(encoded_pk: bytes) -> bytes:
    return hashlib.blake2b(encoded_pk, digest_size=HASH_LEN).digest()


def pk_prefix(pk_value: dict) -> bytes:
    """hash8 + enc(pk): the common prefix of one partition key's whole item collection."""
    enc = encode_value(pk_value)
    return hash8(enc) + enc


def _key_attr(key_item: dict, name: str, want: str | None) -> dict:
    value = key_item.get(name)
    if value is None:
        raise ValueError(f"missing key attribute {name}")
    t, _ = _typed(value)
    if want is not None and t != want:
        raise ValueError(f"key attribute {name} must be of type {want}, not {t}")
    return value


def _fast_key(key_item: dict, name: str, want: str | None) -> bytes | None:
    """enc() of a well-formed S or B key attribute of the wanted type; None sends it the careful way."""
    value = key_item.get(name)
    if type(value) is not dict or len(value) != 1:
        return None
    v = value.get(want) if want is not None else None
    if want == "S" and type(v) is str:
        return b"\x03" + v.encode("utf-8").replace(b"\x00", b"\x00\xff") + b"\x00\x01"
    if want == "B" and type(v) is bytes:
        return b"\x04" + v.replace(b"\x00", b"\x00\xff") + b"\x00\x01"
    return None


def position(key_schema: KeySchema, key_item: dict) -> bytes:
    """The item's position; key_item may be a whole item (extra attributes are ignored)."""
    enc = _fast_key(key_item, key_schema.pk, key_schema.pk_type)
    if enc is None:
        enc = encode_value(_key_attr(key_item, key_schema.pk, key_schema.pk_type))
    pos = hash8(enc) + enc
    if key_schema.sk is not None:
        enc = _fast_key(key_item, key_schema.sk, key_schema.sk_type)
        if enc is None:
            enc = encode_value(_key_attr(key_item, key_schema.sk, key_schema.sk_type))
        pos += enc
    return pos


def decode_position(key_schema: KeySchema, pos: bytes) -> dict:
    """The key item at a position (LastEvaluatedKey from a page's last position)."""
    try:
        pk, i = _decode_at(pos, HASH_LEN)
        key = {key_schema.pk: pk}
        if key_schema.sk is not None:
            sk, i = _decode_at(pos, i)
            key[key_schema.sk] = sk
    except IndexError:
        raise ValueError("truncated position") from None
    if i != len(pos):
        raise ValueError("trailing bytes after position")
    return key


def prefix_end(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key starting with prefix (None: no such key, unbounded)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def hash_space_boundaries(n: int) -> list[bytes]:
    """n-1 eight-byte boundaries cutting the hash space into n equal ranges."""
    if n < 1:
        raise ValueError("n must be >= 1")
    space = 1 << (8 * HASH_LEN)
    return [(i * space // n).to_bytes(HASH_LEN, "big") for i in range(1, n)]


def sk_range(pk_value: dict, sk_condition: tuple | None) -> tuple[bytes, bytes | None]:
    """Position range [lo, hi) of one partition key's items that satisfy a key condition on the sort key.

    Positions are self-delimiting, so the only position with prefix base+enc(v) is the one for v
    itself; `+ b"\\x00"` is therefore the smallest position after it.
    """
    base = pk_prefix(pk_value)
    whole_hi = prefix_end(base)
    if sk_condition is None:
        return base, whole_hi
    op, *args = sk_condition
    enc = [encode_value(a) for a in args] if op != "begins_with" else []
    if op == "=":
        return base + enc[0], base + enc[0] + b"\x00"
    if op == "<":
        return base, base + enc[0]
    if op == "<=":
        return base, base + enc[0] + b"\x00"
    if op == ">":
        return base + enc[0] + b"\x00", whole_hi
    if op == ">=":
        return base + enc[0], whole_hi
    if op == "between":
        return base + enc[0], base + enc[1] + b"\x00"
    if op == "begins_with":
        lo = base + encode_prefix(args[0])
        return lo, prefix_end(lo)
    raise ValueError(f"unknown sort key condition {op!r}")
