"""Expression syntax trees: small immutable nodes, compiled later for speed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PathElement = str | int


@dataclass(slots=True, frozen=True)
class Path:
    """A document path after name substitution, e.g. ("a", "b", 2, "c")."""

    elements: tuple[PathElement, ...]

    def __str__(self) -> str:
        return format_path(self.elements)


@dataclass(slots=True, frozen=True)
class Value:
    """An ExpressionAttributeValues reference, resolved to its typed value."""

    name: str
    value: dict[str, Any]

    @property
    def type(self) -> str:
        return next(iter(self.value))


@dataclass(slots=True, frozen=True)
class Call:
    """A function applied to operands: size, if_not_exists, list_append."""

    name: str
    args: tuple[Any, ...]


@dataclass(slots=True, frozen=True)
class Arith:
    """``left + right`` or ``left - right`` in a SET action."""

    op: str
    left: Any
    right: Any


@dataclass(slots=True, frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(slots=True, frozen=True)
class Between:
    operand: Any
    low: Any
    high: Any


@dataclass(slots=True, frozen=True)
class In:
    operand: Any
    options: tuple[Any, ...]


@dataclass(slots=True, frozen=True)
class Function:
    """A boolean condition function: attribute_exists, begins_with, contains..."""

    name: str
    args: tuple[Any, ...]


@dataclass(slots=True, frozen=True)
class And:
    left: Any
    right: Any


@dataclass(slots=True, frozen=True)
class Or:
    left: Any
    right: Any


@dataclass(slots=True, frozen=True)
class Not:
    operand: Any


def format_path(elements: tuple[PathElement, ...]) -> str:
    """DynamoDB's rendering of a path in messages: [a, b, [2]]."""
    return "[" + ", ".join(f"[{e}]" if isinstance(e, int) else e for e in elements) + "]"
