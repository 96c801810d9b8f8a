"""KeyConditionExpression -> (partition key value, sort key condition) for a Query.

The storage node wants the sort-key condition as a tuple `(op, *values)` with op
in `= < <= > >= between begins_with`, so the router parses this one small
grammar itself and checks it against the key schema with DynamoDB's messages.
"""

from __future__ import annotations

import re
from typing import Any

from kynamo.router.protocol import ValidationException

from kynamo import keycodec
from kynamo.keycodec import KeySchema
from kynamo.values import as_sent

_TOKEN = re.compile(r"\s*(?:(<=|>=|<>|[=<>(),])|(#[A-Za-z0-9_]+)|(:[A-Za-z0-9_]+)|([A-Za-z_][A-Za-z0-9_.\-\[\]]*))")
_PREFIX = "Invalid KeyConditionExpression: "
_TYPE_MISMATCH = "One or more parameter values were invalid: Condition parameter type does not match schema type"


def _syntax(token: str, near: str) -> ValidationException:
    return ValidationException(f'{_PREFIX}Syntax error; token: "{token}", near: "{near}"')


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            bad = expr[pos:].strip()[:1]
            raise ValidationException(f'{_PREFIX}Invalid token: "{bad}" at position {pos}')
        op, name, value, word = m.groups()
        if op:
            out.append(("op", op))
        elif name:
            out.append(("name", name))
        elif value:
            out.append(("value", value))
        else:
            upper = word.upper()
            out.append(("kw", upper) if upper in ("AND", "BETWEEN", "OR", "NOT", "IN") else ("path", word))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _syntax("<EOF>", self.expr[-20:])
        self.i += 1
        return tok

    def expect(self, kind: str, text: str | None = None) -> tuple[str, str]:
        tok = self.take()
        if tok[0] != kind or (text is not None and tok[1] != text):
            raise _syntax(tok[1], self.expr)
        return tok

    def parse(self) -> list[tuple[Any, ...]]:
        terms = self.conj()
        tok = self.peek()
        if tok is not None:
            if tok == ("kw", "OR") or tok == ("kw", "NOT"):
                raise ValidationException(f"Invalid operator used in KeyConditionExpression: {tok[1]}")
            raise _syntax(tok[1], self.expr)
        return terms

    def conj(self) -> list[tuple[Any, ...]]:
        terms = self.term()
        while self.peek() == ("kw", "AND"):
            self.take()
            terms += self.term()
        return terms

    def operand(self) -> tuple[str, str]:
        tok = self.take()
        if tok[0] not in ("name", "path", "value"):
            raise _syntax(tok[1], self.expr)
        return tok

    def term(self) -> list[tuple[Any, ...]]:
        tok = self.peek()
        if tok == ("op", "("):
            self.take()
            inner = self.conj()
            self.expect("op", ")")
            return inner
        if tok is not None and tok[0] == "path" and tok[1] in ("begins_with",):
            self.take()
            self.expect("op", "(")
            a = self.operand()
            self.expect("op", ",")
            b = self.operand()
            self.expect("op", ")")
            return [("begins_with", a, b)]
        following = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
        if tok is not None and tok[0] == "path" and following == ("op", "("):
            raise ValidationException(f"{_PREFIX}Invalid function name; function: {tok[1]}")
        left = self.operand()
        nxt = self.take()
        if nxt == ("kw", "BETWEEN"):
            lo = self.operand()
            self.expect("kw", "AND")
            hi = self.operand()
            return [("between", left, lo, hi)]
        if nxt[0] == "op" and nxt[1] in ("=", "<", "<=", ">", ">="):
            return [(nxt[1], left, self.operand())]
        if nxt == ("op", "<>") or nxt == ("kw", "IN"):
            raise ValidationException(f"Invalid operator used in KeyConditionExpression: {nxt[1]}")
        raise _syntax(nxt[1], self.expr)


_FLIP = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def parse_key_condition(
    expr: str, names: dict[str, str] | None, values: dict[str, Any] | None, schema: KeySchema
) -> tuple[dict[str, Any], tuple[Any, ...] | None, set[str], set[str]]:
    """(pk value, sort-key condition or None, names used, values used)."""
    if not expr.strip():
        raise ValidationException(f"{_PREFIX}The expression can not be empty;")
    terms = _Parser(expr).parse()
    names = names or {}
    values = values or {}
    used_names: set[str] = set()
    used_values: set[str] = set()

    def attr(tok: tuple[str, str]) -> str | None:
        if tok[0] == "name":
            used_names.add(tok[1])
            if tok[1] not in names:
                raise ValidationException(
                    f"{_PREFIX}An expression attribute name used in the document path is not defined; "
                    f"attribute name: {tok[1]}"
                )
            return names[tok[1]]
        if tok[0] == "path":
            return tok[1]
        return None

    def value(tok: tuple[str, str]) -> dict[str, Any]:
        if tok[0] != "value":
            raise ValidationException("Query key condition not supported")
        used_values.add(tok[1])
        if tok[1] not in values:
            raise ValidationException(
                f"{_PREFIX}An expression attribute value used in expression is not defined; attribute value: {tok[1]}"
            )
        return values[tok[1]]

    pk_value: dict[str, Any] | None = None
    sk_cond: tuple[Any, ...] | None = None
    for term in terms:
        op = term[0]
        if op in _FLIP:
            left, right = term[1], term[2]
            name = attr(left)
            if name is None:  # `:v = pk` is allowed: swap the operands
                name = attr(right)
                if name is None:
                    raise ValidationException("Query key condition not supported")
                left, right, op = right, left, _FLIP[op]
            operands = [value(right)]
        elif op == "between":
            name = attr(term[1])
            if name is None:
                raise ValidationException("Query key condition not supported")
            operands = [value(term[2]), value(term[3])]
        else:  # begins_with
            name = attr(term[1])
            if name is None:
                raise ValidationException("Query key condition not supported")
            operands = [value(term[2])]
        if name == schema.pk:
            if op != "=" or pk_value is not None:
                raise ValidationException("Query key condition not supported")
            v = operands[0]
            if next(iter(v)) != schema.pk_type:
                raise ValidationException(_TYPE_MISMATCH)
            pk_value = v
        elif name == schema.sk and schema.sk is not None:
            if sk_cond is not None:
                raise ValidationException("Query key condition not supported")
            for v in operands:
                if next(iter(v)) != schema.sk_type:
                    if op == "begins_with" and schema.sk_type == "N":
                        raise ValidationException(
                            f"{_PREFIX}Incorrect operand type for operator or function; operator or function: "
                            f"begins_with, operand type: {next(iter(v))}"
                        )
                    raise ValidationException(_TYPE_MISMATCH)
            if op == "begins_with" and schema.sk_type == "N":
                raise ValidationException(
                    f"{_PREFIX}Incorrect operand type for operator or function; operator or function: "
                    "begins_with, operand type: N"
                )
            if op == "between" and keycodec.encode_value(operands[0]) > keycodec.encode_value(operands[1]):
                lo, hi = (_show(v) for v in operands)
                raise ValidationException(
                    f"{_PREFIX}The BETWEEN operator requires upper bound to be greater than or equal to lower bound; "
                    f"lower bound operand: AttributeValue: {lo}, upper bound operand: AttributeValue: {hi}"
                )
            sk_cond = (op, *operands)
        else:
            raise ValidationException(f"Query condition missed key schema element: {schema.pk}"
                                      if pk_value is None and len(terms) == 1 else "Query key condition not supported")
    if pk_value is None:
        raise ValidationException(f"Query condition missed key schema element: {schema.pk}")
    return pk_value, sk_cond, used_names, used_values


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
    expr: str, names: dict[str, str] | None, values: dict[str, Any] | None, schema: KeySchema
) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
    """Parse with the shared expression package when present (one grammar for every expression)."""
    try:
        from kynamo.expressions import ExpressionError
        from kynamo.expressions import parse_key_condition as shared
    except ImportError:
        pk, sk, _, _ = parse_key_condition(expr, names, values, schema)
        return pk, sk
    if not expr.strip():
        raise ValidationException(f"{_PREFIX}The expression can not be empty;")
    try:
        kc = shared(expr, names, values, schema.pk, schema.sk)
    except ExpressionError as exc:
        raise ValidationException(exc.message) from None
    sk = tuple(kc.sk) if kc.sk is not None else None
    check_types(schema, kc.pk_value, sk)
    return kc.pk_value, sk
