"""ConditionExpression / FilterExpression: parse once, evaluate per item.

Precedence (highest first), as DynamoDB documents it: comparators, IN, BETWEEN,
functions, parentheses, NOT, AND, OR.
"""

from __future__ import annotations

from typing import Any

from ..values import as_sent
from . import typed
from .ast import And, Between, Call, Compare, Function, In, Not, Or, Path, Value
from .errors import ExpressionError
from .evaluate import compile_condition
from .lexer import ATTR_NAME, ATTR_VALUE, NAME, OP
from .parser import BaseParser, RedundantParentheses, is_call, undefined

COMPARATORS = frozenset({"=", "<>", "<", "<=", ">", ">="})
BOOL_FUNCTIONS = {"attribute_exists": 1, "attribute_not_exists": 1, "attribute_type": 2,
                  "begins_with": 2, "contains": 2}
UPDATE_FUNCTIONS = {"if_not_exists": 2, "list_append": 2}
ALL_FUNCTIONS = {**BOOL_FUNCTIONS, **UPDATE_FUNCTIONS, "size": 1}
VALID_TYPES = ("B", "NULL", "SS", "BOOL", "L", "BS", "N", "NS", "S", "M")
MAX_IN_OPERANDS = 100
ATTRIBUTE_TYPE_OPERAND = "{" + ",".join(sorted((
    "M", "DECIMAL", "DICT", "DOUBLESET", "N", "BS", "NULL", "INT", "HD", "INTSET", "B", "SS", "HDS", "BOOL", "L",
    "FLOAT", "DOUBLE", "S", "NS", "DECIMALSET", "FS"))) + "}"
_EMPTY: dict[str, Any] = {}


def _render(value: Value) -> str:
    kind = value.type
    return f"AttributeValue: {{{kind}:{as_sent(value.value[kind])}}}"


_TYPED = frozenset({"name", "operand", "value", "function", "path_required", "distinct", "between", "in"})


class ConditionParser(BaseParser):
    """Recursive descent over the condition grammar, producing an ``ast`` tree."""

    # In a condition DynamoDB Local reports the first, in the text, of an operand's type, an
    # undefined #name or :value, an attribute type name, a function missing its path, a first
    # operand repeated, BETWEEN's bounds and IN's operand count: one category, the first recorded kept.
    error_order = ("reserved", "unknown_function", "misused", "typed")  # the categories a condition records

    def error(self, category: str, message: str) -> None:
        super().error("typed" if category in _TYPED else category, message)

    def parse(self) -> Any:
        node = self.parse_or()
        self.expect_eof()
        self.finish()
        return node

    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.at_keyword("OR"):
            self.advance()
            node = Or(node, self.parse_and())
        return node

    def parse_and(self) -> Any:
        node = self.parse_not()
        while self.at_keyword("AND"):
            self.advance()
            node = And(node, self.parse_not())
        return node

    def parse_not(self) -> Any:
        if self.at_keyword("NOT"):
            self.advance()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Any:
        if self.at_op("("):
            # A parenthesis opens a condition, `(a = :v)`, or an operand, `(a) < :v`: try both and
            # report the syntax error found furthest in, as DynamoDB's parser does.
            state = self.save()
            try:
                self.advance()
                node = self.parse_or()
                self.expect_op(")")
                self.check_redundant(state[0])
                if not self._at_comparison():
                    return node
                reached, after = self.pos, self.save()
            except RedundantParentheses:
                raise
            except ExpressionError as as_condition:
                reached = self.pos
                self.restore(state)
                try:
                    return self.parse_comparison(self.parse_operand())
                except RedundantParentheses:
                    raise
                except ExpressionError as as_operand:
                    if self.pos > reached:
                        raise as_operand from None
                    raise as_condition from None
            # `(...) <` : a condition cannot be compared, so the parenthesis may hold an operand. If it
            # cannot, the condition reading went further: its caller fails at the comparator.
            self.restore(state)
            try:
                return self.parse_comparison(self.parse_operand())
            except ExpressionError as exc:
                if self.pos > reached or isinstance(exc, RedundantParentheses):
                    raise
                self.restore(after)
                return node
        tok = self.peek()
        if tok.kind == NAME and tok.text in BOOL_FUNCTIONS and self.peek(1).is_op("("):
            name, args = self.parse_call()
            node = self.check_bool_function(name, args)
            if self._at_comparison():
                self.misused(name)
                return self.parse_comparison(Call(name, args))
            return node
        return self.parse_comparison(self.parse_operand())

    def _at_comparison(self) -> bool:
        tok = self.peek()
        return (tok.kind == OP and tok.text in COMPARATORS) or tok.is_keyword("BETWEEN") \
            or tok.is_keyword("IN")

    def parse_comparison(self, left: Any) -> Any:
        tok = self.peek()
        if tok.kind == OP and tok.text in COMPARATORS:
            self.advance()
            right = self.parse_operand()
            if tok.text not in ("=", "<>"):
                self.check_ordered(tok.text, (left, right))
            self.check_distinct(tok.text, left, right)
            return Compare(tok.text, left, right)
        if tok.is_keyword("BETWEEN"):
            self.advance()
            low = self.parse_operand()
            if not self.at_keyword("AND"):
                raise self.syntax_error()
            self.advance()
            high = self.parse_operand()
            self.check_ordered("BETWEEN", (left, low, high))
            self.check_distinct("BETWEEN", left, low, high)
            self.check_between(low, high)
            return Between(left, low, high)
        if tok.is_keyword("IN"):
            self.advance()
            self.expect_op("(")
            options = [self.parse_operand()]
            while self.at_op(","):
                self.advance()
                options.append(self.parse_operand())
            self.expect_op(")")
            if len(options) > MAX_IN_OPERANDS:
                self.error("in", "The IN operator is provided with too many operands; "
                           f"number of operands: {len(options)}")
            self.check_distinct("IN", left, *options)
            return In(left, tuple(options))
        if isinstance(left, Call):
            # A bare size(...) or an unknown function: the error is semantic, not syntax.
            if left.name == "size":
                self.misused("size")
            return Function("attribute_exists", (left,))
        raise self.syntax_error()

    def parse_operand(self) -> Any:
        tok = self.peek()
        if tok.kind == ATTR_VALUE:
            return self.parse_value()
        if is_call(tok, self.peek(1)):
            name, args = self.parse_call()
            if name == "size":
                self.check_size(args)
            elif name in BOOL_FUNCTIONS:
                self.misused(name)
            return Call(name, args)
        if tok.kind in (NAME, ATTR_NAME):
            return self.parse_path()
        if tok.is_op("("):
            start = self.pos
            self.advance()
            node = self.parse_operand()
            self.expect_op(")")
            self.check_redundant(start, operand=True)
            return node
        raise self.syntax_error()

    def parse_call(self) -> tuple[str, tuple[Any, ...]]:
        name = self.advance().text
        if name in UPDATE_FUNCTIONS:
            self.error("unknown_function", f"The function is not allowed in a condition expression; function: {name}")
        elif name not in ALL_FUNCTIONS:
            self.error("unknown_function", f"Invalid function name; function: {name}")
        self.expect_op("(")
        args = [self.parse_operand()]
        while self.at_op(","):
            self.advance()
            args.append(self.parse_operand())
        self.expect_op(")")
        return name, tuple(args)

    # -- semantic checks
    def misused(self, name: str) -> None:
        self.error("misused", f"The function is not allowed to be used this way in an expression; "
                   f"function: {name}")

    def check_arity(self, name: str, args: tuple[Any, ...]) -> bool:
        if len(args) != ALL_FUNCTIONS[name]:
            self.error("function", "Incorrect number of operands for operator or function; "
                       f"operator or function: {name}, number of operands: {len(args)}")
            return False
        return True

    def operand_type_error(self, name: str, kind: str) -> None:
        self.error("operand", "Incorrect operand type for operator or function; "
                   f"operator or function: {name}, operand type: {kind}")

    def check_size(self, args: tuple[Any, ...]) -> None:
        if not self.check_arity("size", args):
            return
        arg = args[0]
        if isinstance(arg, Value):
            if not undefined(arg) and arg.type in ("N", "BOOL", "NULL"):
                self.operand_type_error("size", arg.type)
        elif not isinstance(arg, Path):
            self.error("path_required", "Operator or function requires a document path; "
                       "operator or function: size")

    def check_bool_function(self, name: str, args: tuple[Any, ...]) -> Any:
        node = Function(name, args)
        if not self.check_arity(name, args):
            return node
        first = args[0]
        if name in ("attribute_exists", "attribute_not_exists", "attribute_type") \
                and not isinstance(first, Path):
            self.error("path_required", "Operator or function requires a document path; "
                       f"operator or function: {name}")
        for arg in args:
            if isinstance(arg, Call) and arg.name != "size":
                self.misused(arg.name)
        if name == "attribute_type":
            wanted = args[1]
            if not isinstance(wanted, Value):
                # A path for the type name: DynamoDB Local names the operand's possible types
                self.operand_type_error(name, ATTRIBUTE_TYPE_OPERAND)
            elif not undefined(wanted):
                if wanted.type != "S":
                    self.operand_type_error(name, wanted.type)
                elif wanted.value["S"] not in VALID_TYPES:
                    self.error("function", f"Invalid attribute type name found; type: {wanted.value['S']}, "
                               "valid types: {B,NULL,SS,BOOL,L,BS,N,NS,S,M}")
        elif name == "begins_with" and not undefined(*args):
            for arg in args:
                if isinstance(arg, Value) and arg.type not in ("S", "B"):
                    self.operand_type_error(name, arg.type)
        if name in ("begins_with", "contains"):
            self.check_distinct(name, args[0], args[1])
        return node

    def check_ordered(self, op: str, operands: tuple[Any, ...]) -> None:
        """Ordering operators (<, <=, >, >=, BETWEEN) take only S, N and B values: any other value
        is refused when parsing, as DynamoDB does, rather than simply never matching."""
        if undefined(*operands):
            return
        for arg in operands:
            if isinstance(arg, Value) and arg.type not in ("S", "N", "B"):
                self.operand_type_error(op, arg.type)
                return

    def check_distinct(self, op: str, left: Any, *rest: Any) -> None:
        if isinstance(left, Path) and left in rest:
            self.error("distinct", "The first operand must be distinct from the remaining operands for "
                       f"this operator or function; operator: {op}, first operand: {left}")

    def check_between(self, low: Any, high: Any) -> None:
        if not (isinstance(low, Value) and isinstance(high, Value)) or undefined(low, high):
            return
        if low.type != high.type:
            self.error("between", "The BETWEEN operator requires same data type for lower and upper bounds; "
                       f"lower bound operand: {_render(low)}, upper bound operand: {_render(high)}")
            return
        lo, hi = typed.order_key(low.value), typed.order_key(high.value)
        if lo is not None and hi is not None and lo[1] > hi[1]:
            self.error("between", "The BETWEEN operator requires upper bound to be greater than or equal "
                       f"to lower bound; lower bound operand: {_render(low)}, "
                       f"upper bound operand: {_render(high)}")


class Condition:
    """A parsed condition. ``evaluate(item)`` with None meaning "no item".

    Compiled on its first evaluation: the router parses conditions, filters and key conditions
    only to judge them, and never evaluates them."""

    __slots__ = ("_predicate", "ast", "expression", "names_used", "paths", "values_used")

    def __init__(self, expression: str, ast: Any, names_used: set[str], values_used: set[str],
                 paths: tuple[Path, ...] = ()) -> None:
        self.expression = expression
        self.paths = paths  # every document path it reads
        self.ast = ast
        self.names_used = frozenset(names_used)
        self.values_used = frozenset(values_used)
        self._predicate: Any = None

    def evaluate(self, item: dict | None) -> bool:
        predicate = self._predicate
        if predicate is None:  # two threads may both compile it: the same closures either way
            predicate = self._predicate = compile_condition(self.ast)
        return predicate(_EMPTY if item is None else item)

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"


def parse_condition(expr: str, names: dict | None = None, values: dict | None = None,
                    kind: str = "ConditionExpression") -> Condition:
    """Parse a ConditionExpression (or FilterExpression with ``kind="FilterExpression"``)."""
    parser = ConditionParser(expr, names, values, kind)
    ast = parser.parse()
    return Condition(expr, ast, parser.names_used, parser.values_used, tuple(parser.paths))


def evaluate_condition(cond: Condition, item: dict | None) -> bool:
    """Whether ``item`` (None for no item) satisfies ``cond``."""
    return cond.evaluate(item)
