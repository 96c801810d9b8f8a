"""UpdateExpression: parse SET/REMOVE/ADD/DELETE sections, then apply to an item.

Every operand is read from the item as it was before the update (DynamoDB's
rule), so SET values are computed first and written afterwards. List elements
removed by index are removed highest index first, so ``REMOVE l[0], l[2]``
removes the elements that were at 0 and 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .. import values as _values
from .ast import Arith, Call, Path, Value
from .condition import BOOL_FUNCTIONS, UPDATE_FUNCTIONS
from .errors import ExpressionError
from .lexer import ATTR_VALUE, EOF, NAME
from .parser import BaseParser, is_call, undefined
from .typed import copy_value, get_path

SECTIONS = ("SET", "REMOVE", "ADD", "DELETE")
CONDITION_FUNCTIONS = frozenset({*BOOL_FUNCTIONS, "size"})  # "not allowed in an update expression"
TYPE_WORDS = {"S": "STRING", "N": "NUMBER", "B": "BINARY", "NULL": "NULL", "BOOL": "BOOLEAN",
              "L": "LIST", "M": "MAP"}

MISSING_ATTRIBUTE = "The provided expression refers to an attribute that does not exist in the item"
WRONG_TYPE = "An operand in the update expression has an incorrect data type"
INVALID_PATH = "The document path provided in the update expression is invalid for update"


@dataclass(slots=True)
class UpdatePlan:
    """A parsed UpdateExpression; reusable across items."""

    expression: str
    sets: list[tuple[Path, Any]] = field(default_factory=list)
    removes: list[Path] = field(default_factory=list)
    adds: list[tuple[Path, Value]] = field(default_factory=list)
    deletes: list[tuple[Path, Value]] = field(default_factory=list)
    names_used: frozenset[str] = frozenset()
    values_used: frozenset[str] = frozenset()
    read_paths: tuple[Path, ...] = ()  # every document path the expression names, operands included

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.sets] + list(self.removes) + [p for p, _ in self.adds] + \
            [p for p, _ in self.deletes]

    @property
    def top_level_names(self) -> set[str]:
        return {str(p.elements[0]) for p in self.paths}


# What DynamoDB Local reports of an update's faults: a reserved word and a function it cannot run
# first (in the text's order), then overlapping paths, then an undefined name in a target, then
# the rest (an undefined name or value, an operand's type, a function's operands) of the last
# action that has any.
_ACTION_ORDER = ("name", "value", "operand", "operand_add", "operand_delete", "function", "distinct", "path_required",
                 "misused")


class UpdateParser(BaseParser):
    error_order = ("reserved", "unknown_function", "section", "overlap", "conflict", "target", "late")
    _in_target = False  # parsing an action's target path
    _action: dict[str, str] | None = None  # the faults of the action being parsed, by category

    def error(self, category: str, message: str) -> None:
        if category == "name" and self._in_target:
            super().error("target", message)
        elif category in _ACTION_ORDER and self._action is not None:
            self._action.setdefault(category, message)
        else:
            super().error("late" if category in _ACTION_ORDER else category, message)

    def parse(self) -> UpdatePlan:
        plan = UpdatePlan(self.expr)
        seen: set[str] = set()
        while self.peek().kind != EOF:
            tok = self.peek()
            word = tok.text.upper() if tok.kind == NAME else ""
            if word not in SECTIONS:
                raise self.syntax_error()
            self.advance()
            if word in seen:
                self.error("section", f'The "{word}" section can only be used once in an update expression;')
            seen.add(word)
            self.parse_action(word, plan)
            while self.at_op(","):
                self.advance()
                self.parse_action(word, plan)
        self.check_overlaps(plan.paths)
        self.finish()
        plan.names_used = frozenset(self.names_used)
        plan.values_used = frozenset(self.values_used)
        plan.read_paths = tuple(self.paths)
        return plan

    def parse_action(self, section: str, plan: UpdatePlan) -> None:
        """One action. Of its own faults the first by kind counts (an undefined name before an
        operand's type); of the actions', the last one's with any."""
        self._action = {}
        try:
            self._parse_action(section, plan)
        finally:
            faults, self._action = self._action, None
            for category in _ACTION_ORDER:
                if category in faults:
                    self.errors["late"] = faults[category]
                    break

    def _parse_action(self, section: str, plan: UpdatePlan) -> None:
        self._in_target = True
        try:
            path = self.parse_path()
        finally:
            self._in_target = False
        if section == "SET":
            self.expect_op("=")
            plan.sets.append((path, self.parse_set_value()))
        elif section == "REMOVE":
            plan.removes.append(path)
        else:
            if self.peek().kind != ATTR_VALUE:
                raise self.syntax_error()
            value = self.parse_value()
            kind = value.type
            if not undefined(value) and kind in TYPE_WORDS and not (section == "ADD" and kind == "N"):
                # DynamoDB reports by section, SET's operands first, then ADD's, then DELETE's.
                self.error(f"operand_{section.lower()}", "Incorrect operand type for operator or function; "
                           f"operator: {section}, operand type: {TYPE_WORDS[kind]}, "
                           f"typeSet: ALLOWED_FOR_{section}_OPERAND")
            (plan.adds if section == "ADD" else plan.deletes).append((path, value))

    def parse_set_value(self) -> Any:
        left = self.parse_operand()
        if self.at_op("+") or self.at_op("-"):
            op = self.advance().text
            right = self.parse_operand()
            for arg in () if undefined(left, right) else (left, right):
                if isinstance(arg, Value) and arg.type != "N":
                    self._operand_type(op, arg.type)
            return Arith(op, left, right)
        return left

    def _operand_type(self, name: str, kind: str) -> None:
        self.error("operand", "Incorrect operand type for operator or function; "
                   f"operator or function: {name}, operand type: {kind}")

    def parse_operand(self) -> Any:
        tok = self.peek()
        if tok.is_op("("):
            start = self.pos
            self.advance()
            node = self.parse_set_value()
            self.expect_op(")")
            self.check_redundant(start, operand=True)
            return node
        if tok.kind == ATTR_VALUE:
            return self.parse_value()
        if is_call(tok, self.peek(1)):
            return self.parse_call()
        return self.parse_path()

    def parse_call(self) -> Call:
        name = self.advance().text
        if name in CONDITION_FUNCTIONS:
            self.error("unknown_function", f"The function is not allowed in an update expression; function: {name}")
        elif name not in UPDATE_FUNCTIONS:
            self.error("unknown_function", f"Invalid function name; function: {name}")
        self.expect_op("(")
        args = [self.parse_operand()]
        while self.at_op(","):
            self.advance()
            args.append(self.parse_operand())
        self.expect_op(")")
        if name in UPDATE_FUNCTIONS:
            if len(args) != UPDATE_FUNCTIONS[name]:
                self.error("function", "Incorrect number of operands for operator or function; "
                           f"operator or function: {name}, number of operands: {len(args)}")
            elif name == "if_not_exists" and not isinstance(args[0], Path):
                self.error("path_required", "Operator or function requires a document path; "
                           "operator or function: if_not_exists")
            elif name == "if_not_exists" and args[0] == args[1]:
                self.error("distinct", "The first operand must be distinct from the remaining operands for this "
                           f"operator or function; operator: if_not_exists, first operand: {args[0]}")
            elif name == "list_append" and not undefined(*args):
                for arg in args:
                    if isinstance(arg, Value) and arg.type != "L":
                        self._operand_type(name, arg.type)
        return Call(name, tuple(args))


def parse_update(expr: str, names: dict | None = None, values: dict | None = None) -> UpdatePlan:
    """Parse an UpdateExpression; raises ExpressionError worded as DynamoDB."""
    return UpdateParser(expr, names, values, "UpdateExpression").parse()


# ----------------------------------------------------------------------- apply

def _evaluate(node: Any, item: dict) -> dict:
    if isinstance(node, Value):
        return node.value
    if isinstance(node, Path):
        value = get_path(item, node.elements)
        if value is None:
            raise ExpressionError(MISSING_ATTRIBUTE)
        return value
    if isinstance(node, Arith):
        left, right = _evaluate(node.left, item), _evaluate(node.right, item)
        if "N" not in left or "N" not in right:
            raise ExpressionError(WRONG_TYPE)
        combine = _values.number_add if node.op == "+" else _values.number_sub
        try:
            return {"N": combine(left["N"], right["N"])}
        except _values.ValueValidationError as exc:
            raise ExpressionError(exc.message) from None
    if node.name == "if_not_exists":
        existing = get_path(item, node.args[0].elements)
        fallback = _evaluate(node.args[1], item)  # DynamoDB requires it to exist either way
        return existing if existing is not None else fallback
    # list_append
    left, right = _evaluate(node.args[0], item), _evaluate(node.args[1], item)
    if "L" not in left or "L" not in right:
        raise ExpressionError(WRONG_TYPE)
    return {"L": left["L"] + right["L"]}


def _walk_to_parent(root: dict, elements: tuple) -> tuple[dict | None, bool]:
    """(the typed value holding the last element or None if a step is missing, whether a step had
    the wrong type: a map where a list index goes, or the reverse)."""
    value = root.get(elements[0])
    for element in elements[1:-1]:
        if value is None:
            return None, False
        if isinstance(element, int):
            if "L" not in value:
                return None, True
            items = value["L"]
            value = items[element] if element < len(items) else None
        else:
            if "M" not in value:
                return None, True
            value = value["M"].get(element)
    return value, False


def _parent(root: dict, elements: tuple) -> dict | None:
    """The typed value holding the last element; None if a step is missing."""
    parent, wrong_type = _walk_to_parent(root, elements)
    if wrong_type:
        raise ExpressionError(INVALID_PATH)
    return parent


def _parent_present(root: dict, elements: tuple) -> bool:
    """Whether every step to the last element's parent exists (a wrong type is reported when the action runs)."""
    parent, wrong_type = _walk_to_parent(root, elements)
    return wrong_type or parent is not None


def key_not_scalar(name: str) -> str:
    return f"Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: {name}"


def _read(root: dict, elements: tuple) -> dict | None:
    if len(elements) == 1:
        return root.get(elements[0])
    parent = _parent(root, elements)
    return None if parent is None else get_path({"x": parent}, ("x", elements[-1]))


def _assign(root: dict, elements: tuple, value: dict) -> None:
    if len(elements) == 1:
        root[elements[0]] = value
        return
    parent = _parent(root, elements)
    last = elements[-1]
    if parent is None:
        raise ExpressionError(INVALID_PATH)
    if isinstance(last, int):
        if "L" not in parent:
            raise ExpressionError(INVALID_PATH)
        items = parent["L"]
        if last < len(items):
            items[last] = value
        else:
            items.append(value)
    else:
        if "M" not in parent:
            raise ExpressionError(INVALID_PATH)
        parent["M"][last] = value


def _remove(root: dict, elements: tuple) -> None:
    if len(elements) == 1:
        root.pop(elements[0], None)
        return
    parent = _parent(root, elements)
    if parent is None:
        return
    last = elements[-1]
    if isinstance(last, int):
        if "L" not in parent:
            raise ExpressionError(INVALID_PATH)
        if last < len(parent["L"]):
            del parent["L"][last]
    else:
        if "M" not in parent:
            raise ExpressionError(INVALID_PATH)
        parent["M"].pop(last, None)


def _union(kind: str, existing: list, extra: list) -> list:
    if kind == "NS":
        seen = {Decimal(n) for n in existing}
        out = list(existing)
        for n in extra:
            if Decimal(n) not in seen:
                seen.add(Decimal(n))
                out.append(n)
        return out
    have = set(existing)
    return list(existing) + [m for m in extra if m not in have]


def _difference(kind: str, existing: list, removed: list) -> list:
    if kind == "NS":
        gone = {Decimal(n) for n in removed}
        return [n for n in existing if Decimal(n) not in gone]
    gone_set = set(removed)
    return [m for m in existing if m not in gone_set]


def _add(root: dict, elements: tuple, value: dict) -> None:
    existing = _read(root, elements)
    if existing is None:
        _assign(root, elements, copy_value(value))
        return
    kind = next(iter(value))
    if kind not in existing:
        raise ExpressionError(WRONG_TYPE)
    if kind == "N":
        try:
            result = {"N": _values.number_add(existing["N"], value["N"])}
        except _values.ValueValidationError as exc:
            raise ExpressionError(exc.message) from None
    else:
        result = {kind: _union(kind, existing[kind], value[kind])}
    _assign(root, elements, result)


def _delete(root: dict, elements: tuple, value: dict) -> None:
    existing = _read(root, elements)
    if existing is None:
        if len(elements) > 1:
            parent = _parent(root, elements)
            if parent is not None and ("L" if isinstance(elements[-1], int) else "M") not in parent:
                raise ExpressionError(INVALID_PATH)  # e.g. an index into a set
        return
    kind = next(iter(value))
    if kind not in existing:
        raise ExpressionError(WRONG_TYPE)
    remaining = _difference(kind, existing[kind], value[kind])
    if remaining:
        _assign(root, elements, {kind: remaining})
    else:
        _remove(root, elements)


def _sort_key(path: Path) -> tuple:
    return tuple((1, e) if isinstance(e, int) else (0, e) for e in path.elements)


def apply_update(plan: UpdatePlan, item: dict | None, key_names: Iterable[str]
                 ) -> tuple[dict, set[str]]:
    """Apply ``plan`` to ``item`` (None: no item yet) without mutating it.

    Returns the new item and the top-level names the update touched. For a new
    item the caller adds the key attributes (they cannot appear in the update).
    """
    written = {path.elements[0] for path in plan.paths}
    for name in key_names:  # in key schema order when ordered: DynamoDB names the partition key first
        if name in written:
            raise ExpressionError("One or more parameter values were invalid: Cannot update attribute "
                                  f"{name}. This attribute is part of the key")
    targets = set(plan.paths)
    for path in plan.read_paths:
        # Checked here, after the condition, as DynamoDB does for an update's operands (a
        # condition's or projection's paths are refused when the request is validated).
        if len(path.elements) > 1 and path.elements[0] in key_names and path not in targets:
            raise ExpressionError(key_not_scalar(str(path.elements[0])))
    old = item or {}
    for path in plan.paths:
        # A target whose parent is missing is reported before any operand is evaluated; a parent
        # of the wrong type only when its action runs (SET, REMOVE, ADD, DELETE in that order).
        if len(path.elements) > 1 and not _parent_present(old, path.elements):
            raise ExpressionError(INVALID_PATH)
    touched = plan.top_level_names
    new = dict(old)
    for name in touched:
        if name in new:
            new[name] = copy_value(new[name])
    computed = [(path.elements, copy_value(_evaluate(node, old))) for path, node in plan.sets]
    for elements, value in computed:
        _assign(new, elements, value)
    for path in sorted(plan.removes, key=_sort_key, reverse=True):
        _remove(new, path.elements)
    for path, value in plan.adds:
        _add(new, path.elements, value.value)
    for path, value in plan.deletes:
        _delete(new, path.elements, value.value)
    return new, touched
