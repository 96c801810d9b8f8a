"""Parsing machinery shared by condition, update, projection and key expressions.

DynamoDB reports a syntax error before anything else, and otherwise the first
semantic problem by category (reserved word, unknown function, undefined
placeholder...). Syntax errors therefore raise at once, while semantic ones are
collected and raised by ``finish`` in priority order.
"""

from __future__ import annotations

from typing import Any

from .ast import Path, PathElement, Value, format_path
from .errors import ExpressionError
from .lexer import ATTR_NAME, ATTR_VALUE, EOF, NAME, NUMBER, Token, tokenize
from .reserved import is_reserved

# Which of several semantic faults is reported, as DynamoDB Local answered (its order is not fully
# linear): a projection's order; conditions and updates keep their own (`error_order`).
ERROR_ORDER = (
    "reserved", "unknown_function", "section", "name", "overlap", "conflict",
    "misused", "path_required", "operand", "operand_add", "operand_delete", "function", "distinct", "between", "in",
    "value",
)
_MISSING = {"NULL": True}


class RedundantParentheses(ExpressionError):
    """`((condition))`: raised at once; no other reading of the text is tried."""


# The grammar's own words are never names, wherever a name could stand: DynamoDB reports a
# syntax error at the word (other reserved words parse, then fail as "reserved keyword").
GRAMMAR_WORDS = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"})


def undefined(*operands: Any) -> bool:
    """Is any operand a :value the request did not define? DynamoDB judges no types of an
    operation with such an operand (it reports the undefined value instead)."""
    return any(isinstance(o, Value) and o.value is _MISSING for o in operands)


def is_name(tok: Token) -> bool:
    """Can this token stand as a document path element (a name, or a #placeholder)?"""
    return tok.kind == ATTR_NAME or (tok.kind == NAME and tok.text.upper() not in GRAMMAR_WORDS)


def is_call(tok: Token, following: Token) -> bool:
    """Does a function call start here (a name that is not a grammar word, then "(")?"""
    return tok.kind == NAME and following.is_op("(") and tok.text.upper() not in GRAMMAR_WORDS


class BaseParser:
    """Token cursor plus placeholder resolution and error bookkeeping."""

    def __init__(self, expr: str, names: dict | None, values: dict | None, kind: str) -> None:
        self.kind = kind
        if not isinstance(expr, str) or not expr.strip():
            raise ExpressionError(f"Invalid {kind}: The expression can not be empty;")
        self.expr = expr
        self.tokens = tokenize(expr)
        self.pos = 0
        self.names = names or {}
        self.values = values or {}
        self.names_used: set[str] = set()
        self.values_used: set[str] = set()
        self.errors: dict[str, str] = {}
        self.paths: list[Path] = []  # every document path read, operands included

    # -- cursor
    def peek(self, ahead: int = 0) -> Token:
        index = min(self.pos + ahead, len(self.tokens) - 1)
        return self.tokens[index]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != EOF:
            self.pos += 1
        return tok

    def at_op(self, text: str) -> bool:
        return self.tokens[self.pos].is_op(text)

    def at_keyword(self, word: str) -> bool:
        return self.tokens[self.pos].is_keyword(word)

    def expect_op(self, text: str) -> Token:
        if not self.at_op(text):
            raise self.syntax_error()
        return self.advance()

    def expect_eof(self) -> None:
        if self.peek().kind != EOF:
            raise self.syntax_error()

    def syntax_error(self) -> ExpressionError:
        """DynamoDB's shape: the bad token, and the text from the token before to the one after."""
        tok = self.tokens[self.pos]
        start = self.tokens[self.pos - 1].start if self.pos > 0 else tok.start
        end = tok.end
        if tok.kind != EOF:
            following = self.tokens[self.pos + 1]
            end = following.end if following.kind != EOF else tok.end
        else:
            end = len(self.expr)  # trailing blanks included, as DynamoDB quotes them
        near = self.expr[start:end]
        return ExpressionError(f'Invalid {self.kind}: Syntax error; token: "{tok.text}", near: "{near}"')

    # -- parentheses
    def check_redundant(self, start: int, *, operand: bool = False) -> None:
        """`((...))`: the group opened at token `start` (now closed) holds nothing but another
        group. Around a condition DynamoDB refuses it at once, whatever else is wrong later in the
        text; around an operand, once the text has parsed (before any other fault)."""
        if not self.tokens[start + 1].is_op("("):
            return
        depth = 0
        for i in range(start + 1, self.pos):
            tok = self.tokens[i]
            if tok.is_op("("):
                depth += 1
            elif tok.is_op(")"):
                depth -= 1
                if depth == 0:
                    if i == self.pos - 2:  # the inner group closes right before the outer one
                        if operand:
                            self.errors.setdefault("redundant", "The expression has redundant parentheses;")
                            return
                        raise RedundantParentheses(f"Invalid {self.kind}: The expression has redundant parentheses;")
                    return

    # -- backtracking
    def save(self) -> tuple[int, dict[str, str], set[str], set[str], int]:
        """The cursor and what parsing has recorded so far, to try another reading from here."""
        return self.pos, dict(self.errors), set(self.names_used), set(self.values_used), len(self.paths)

    def restore(self, state: tuple[int, dict[str, str], set[str], set[str], int]) -> None:
        self.pos, self.errors, self.names_used, self.values_used, paths = state
        del self.paths[paths:]

    # -- errors
    def error(self, category: str, message: str) -> None:
        self.errors.setdefault(category, message)

    error_order = ERROR_ORDER

    def finish(self) -> None:
        """Raise the highest-priority semantic error, if any was recorded."""
        for category in ("redundant", *self.error_order):
            message = self.errors.get(category)
            if message is not None:
                raise ExpressionError(f"Invalid {self.kind}: {message}")

    # -- names, values, paths
    def resolve_name(self, tok: Token) -> str:
        if tok.kind == ATTR_NAME:
            name = self.names.get(tok.text)
            if name is None:
                self.error("name", "An expression attribute name used in the document path is not defined; "
                           f"attribute name: {tok.text}")
                return tok.text
            self.names_used.add(tok.text)
            return name
        if is_reserved(tok.text) and tok.text.upper() != "SIZE":
            # SIZE is on the reserved list, but DynamoDB Local's parser (Amazon's) reads a bare `size`
            # as a name (dynalite refuses it): the function word, not a reserved one.
            self.error("reserved", f"Attribute name is a reserved keyword; reserved keyword: {tok.text}")
        return tok.text

    def parse_value(self) -> Value:
        tok = self.advance()
        if tok.kind != ATTR_VALUE:  # pragma: no cover - callers check the kind
            self.pos -= 1
            raise self.syntax_error()
        value = self.values.get(tok.text)
        if value is None:
            self.error("value", "An expression attribute value used in expression is not defined; "
                       f"attribute value: {tok.text}")
            return Value(tok.text, _MISSING)
        self.values_used.add(tok.text)
        return Value(tok.text, value)

    def parse_path(self) -> Path:
        tok = self.peek()
        if not is_name(tok):
            raise self.syntax_error()
        self.advance()
        elements: list[PathElement] = [self.resolve_name(tok)]
        while True:
            if self.at_op("."):
                self.advance()
                tok = self.peek()
                if not is_name(tok):
                    raise self.syntax_error()
                self.advance()
                elements.append(self.resolve_name(tok))
            elif self.at_op("["):
                self.advance()
                tok = self.peek()
                if tok.kind != NUMBER:
                    raise self.syntax_error()
                self.advance()
                elements.append(int(tok.text))
                self.expect_op("]")
            else:
                path = Path(tuple(elements))
                self.paths.append(path)
                return path

    def check_overlaps(self, paths: list[Path]) -> None:
        """Reject two paths where one contains the other, or that disagree on map vs list."""
        seen: list[tuple[PathElement, ...]] = []
        for path in paths:
            new = path.elements
            for old in seen:
                message = _overlap(old, new)
                if message:
                    category, text = message
                    self.error(category, text)
                    return
            seen.append(new)


def _overlap(one: tuple[PathElement, ...], two: tuple[PathElement, ...]) -> tuple[str, str] | None:
    for a, b in zip(one, two, strict=False):
        if isinstance(a, int) != isinstance(b, int):
            return ("conflict", "Two document paths conflict with each other; must remove or rewrite one of "
                    f"these paths; path one: {format_path(one)}, path two: {format_path(two)}")
        if a != b:
            return None
    return ("overlap", "Two document paths overlap with each other; must remove or rewrite one of these "
            f"paths; path one: {format_path(one)}, path two: {format_path(two)}")


def type_name(value: dict[str, Any]) -> str:
    return next(iter(value))
