"""Reject ExpressionAttributeNames/Values that no expression of the request used."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import ExpressionError


def check_unused(names: dict | None, values: dict | None, used_names: Iterable[str],
                 used_values: Iterable[str]) -> None:
    """Raise as DynamoDB does when a placeholder is defined but never referenced.

    ``used_*`` are the union over all expressions of one request (condition,
    update, projection, filter, key condition). Names are reported first.
    """
    for label, defined, used in (("Names", names, used_names), ("Values", values, used_values)):
        if not defined:
            continue
        unused = sorted(set(defined) - set(used))
        if unused:
            raise ExpressionError(f"Value provided in ExpressionAttribute{label} unused in expressions: "
                                  f"keys: {{{', '.join(unused)}}}")


def used_by(*parsed: Any) -> tuple[set[str], set[str]]:
    """Union of ``names_used``/``values_used`` over parsed expressions (None skipped)."""
    names: set[str] = set()
    values: set[str] = set()
    for expression in parsed:
        if expression is None:
            continue
        names |= set(getattr(expression, "names_used", ()))
        values |= set(getattr(expression, "values_used", ()))
    return names, values
