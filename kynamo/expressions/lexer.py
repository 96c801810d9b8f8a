"""Tokenizer shared by every expression kind.

Tokens keep their source offsets so syntax errors can quote the text "near" the
offending token the way DynamoDB does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = "name"
ATTR_NAME = "attr_name"
ATTR_VALUE = "attr_value"
NUMBER = "number"
OP = "op"
BAD = "bad"
EOF = "eof"

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<attr_name>\#[A-Za-z0-9_]+)"
    r"|(?P<attr_value>:[A-Za-z0-9_]+)"
    r"|(?P<number>[0-9]+)"
    r"|(?P<op><>|<=|>=|[=<>(),.\[\]+\-])"
)


@dataclass(slots=True, frozen=True)
class Token:
    """One lexeme: ``kind`` is one of the module constants, ``text`` as written."""

    kind: str
    text: str
    start: int
    end: int

    def is_keyword(self, word: str) -> bool:
        """Keywords (AND, OR, SET...) match in any letter case, as in DynamoDB."""
        return self.kind == NAME and self.text.upper() == word

    def is_op(self, text: str) -> bool:
        return self.kind == OP and self.text == text


def tokenize(expr: str) -> list[Token]:
    """Split ``expr`` into tokens, ending with an EOF token; never raises."""
    tokens: list[Token] = []
    pos = 0
    size = len(expr)
    match = _TOKEN_RE.match
    while pos < size:
        m = match(expr, pos)
        if m is None:
            tokens.append(Token(BAD, expr[pos], pos, pos + 1))
            pos += 1
            continue
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind or BAD, m.group(), pos, m.end()))
        pos = m.end()
    tokens.append(Token(EOF, "<EOF>", size, size))
    return tokens
