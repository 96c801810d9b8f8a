"""Compile condition trees to closures: a Scan filter runs once per item, so no tree walk per item."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from . import typed
from .ast import And, Between, Call, Compare, Function, In, Not, Or, Path, Value

Item = dict[str, Any]
Operand = Callable[[Item], Any]
Predicate = Callable[[Item], bool]

_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def compile_operand(node: Any) -> Operand:
    """A function item -> typed value (or None when absent)."""
    if isinstance(node, Path):
        elements = node.elements
        if len(elements) == 1:
            name = elements[0]
            return lambda item: item.get(name)
        get_path = typed.get_path
        return lambda item: get_path(item, elements)
    if isinstance(node, Value):
        value = node.value
        return lambda item: value
    if isinstance(node, Call) and node.name == "size":
        inner = compile_operand(node.args[0])
        size = typed.size

        def size_of(item: Item) -> Any:
            n = size(inner(item))
            return None if n is None else {"N": str(n)}
        return size_of
    return lambda item: None  # only reachable for nodes already rejected at parse time


def _compile_order(op: str, left: Operand, right: Operand, right_node: Any) -> Predicate:
    compare = _ORDER[op]
    order_key = typed.order_key
    if isinstance(right_node, Value):
        fixed = order_key(right_node.value)
        if fixed is None:
            return lambda item: False
        kind, rv = fixed

        def against_value(item: Item) -> bool:
            key = order_key(left(item))
            return key is not None and key[0] == kind and compare(key[1], rv)
        return against_value

    def against_operand(item: Item) -> bool:
        a = order_key(left(item))
        b = order_key(right(item))
        return a is not None and b is not None and a[0] == b[0] and compare(a[1], b[1])
    return against_operand


def compile_condition(node: Any) -> Predicate:
    """A function item -> bool for a condition tree; item must be a dict (empty for no item)."""
    if isinstance(node, And):
        a, b = compile_condition(node.left), compile_condition(node.right)
        return lambda item: a(item) and b(item)
    if isinstance(node, Or):
        a, b = compile_condition(node.left), compile_condition(node.right)
        return lambda item: a(item) or b(item)
    if isinstance(node, Not):
        a = compile_condition(node.operand)
        return lambda item: not a(item)
    if isinstance(node, Compare):
        left, right = compile_operand(node.left), compile_operand(node.right)
        equal = typed.equal
        if node.op == "=":
            return lambda item: equal(left(item), right(item))
        if node.op == "<>":
            return lambda item: not equal(left(item), right(item))
        return _compile_order(node.op, left, right, node.right)
    if isinstance(node, Between):
        return _compile_between(node)
    if isinstance(node, In):
        return _compile_in(node)
    if isinstance(node, Function):
        return _compile_function(node)
    return lambda item: False


def _compile_between(node: Between) -> Predicate:
    value, low, high = (compile_operand(n) for n in (node.operand, node.low, node.high))
    order_key = typed.order_key

    def between(item: Item) -> bool:
        k, lo, hi = order_key(value(item)), order_key(low(item)), order_key(high(item))
        if k is None or lo is None or hi is None or not (k[0] == lo[0] == hi[0]):
            return False
        return lo[1] <= k[1] <= hi[1]
    return between


def _compile_in(node: In) -> Predicate:
    value = compile_operand(node.operand)
    options = [compile_operand(o) for o in node.options]
    equal = typed.equal
    if all(isinstance(o, Value) for o in node.options):
        fixed = [o.value for o in node.options]
        return lambda item: (v := value(item)) is not None and any(equal(v, o) for o in fixed)
    return lambda item: (v := value(item)) is not None and any(equal(v, o(item)) for o in options)


def _compile_function(node: Function) -> Predicate:
    args = [compile_operand(a) for a in node.args]
    name = node.name
    first = args[0]
    if name == "attribute_exists":
        return lambda item: first(item) is not None
    if name == "attribute_not_exists":
        return lambda item: first(item) is None
    second = args[1]
    if name == "attribute_type":
        def has_type(item: Item) -> bool:
            value, wanted = first(item), second(item)
            return value is not None and wanted is not None and wanted.get("S") == next(iter(value))
        return has_type
    if name == "begins_with":
        begins_with = typed.begins_with
        return lambda item: begins_with(first(item), second(item))
    contains = typed.contains
    return lambda item: contains(first(item), second(item))
