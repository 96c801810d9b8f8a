"""The expression parameters of one request, checked at the router.

Conditions and updates are evaluated at the partition leader; the router only
parses them (so a syntax error never reaches the log) and enforces the
request-level rules no single parser can see: every ExpressionAttributeNames /
ExpressionAttributeValues entry must be used by some expression of the request.
"""

from __future__ import annotations

import re
from typing import Any

from kynamo.router.attrs import value_from_wire
from kynamo.router.protocol import DynamoError, ValidationException
from kynamo.router.validate import mapping, string

from kynamo.expressions.update import key_not_scalar
from kynamo.values import SentNumber

_NAME_RE = re.compile(r"#[A-Za-z0-9_]+")
_VALUE_RE = re.compile(r":[A-Za-z0-9_]+")

MAX_EXPRESSION_BYTES = 4096  # DynamoDB's limit on any one expression string
Spec = list[Any]  # [expression, names or None, values or None], as the storage commands take it


def _module() -> Any:
    try:
        from kynamo import expressions as ex

        ex.parse_condition  # noqa: B018 - fails fast while the package is still empty
        return ex
    except (ImportError, AttributeError):
        return None


class Expressions:
    """Names, values and expression strings of one request, validated together."""

    def __init__(self, body: dict[str, Any], fields: tuple[str, ...] = ()) -> None:
        """`fields`: the operation's expression parameters, in DynamoDB's order (names and values
        given without any of them are refused up front, naming the ones values could serve)."""
        names = mapping(body, "ExpressionAttributeNames")
        raw_values = mapping(body, "ExpressionAttributeValues")
        if names is not None and not names:
            raise ValidationException("ExpressionAttributeNames must not be empty")
        if raw_values is not None and not raw_values:
            raise ValidationException("ExpressionAttributeValues must not be empty")
        for k, v in (names or {}).items():
            if not isinstance(v, str):
                raise ValidationException(f"ExpressionAttributeNames contains invalid value for key {k}")
            if not k.startswith("#"):
                raise ValidationException(
                    f'ExpressionAttributeNames contains invalid key: Syntax error; key: "{k}"'
                )
        values: dict[str, Any] = {}
        for k, v in (raw_values or {}).items():
            if not k.startswith(":"):
                raise ValidationException(f'ExpressionAttributeValues contains invalid key: Syntax error; key: "{k}"')
            try:
                values[k] = value_from_wire(v)
                sent = v.get("N") if isinstance(v, dict) else None
                if isinstance(sent, str) and values[k].get("N") != sent:
                    values[k] = {"N": SentNumber(values[k]["N"], sent)}  # messages quote it as sent
            except DynamoError as exc:
                if exc.type_name != "ValidationException":
                    raise
                raise ValidationException(
                    f"ExpressionAttributeValues contains invalid value: {exc.message} for key {k}"
                ) from None
        self.body = body
        self.names = names
        self.values = values if raw_values is not None else None
        if fields:
            _check_params(body, fields, names is not None, raw_values is not None)
        self.texts: list[str] = []
        self.paths: list[tuple[str, Any]] = []  # (field, document path) read by conditions and projections
        self.used_names: set[str] = set()
        self.used_values: set[str] = set()

    def text(self, field: str) -> str | None:
        expr = string(self.body, field)
        if expr is None:
            return None
        if not expr.strip():
            raise ValidationException(f"Invalid {field}: The expression can not be empty;")
        size = len(expr.encode("utf-8"))
        if size > MAX_EXPRESSION_BYTES:
            raise ValidationException(
                f"Invalid {field}: Expression size has exceeded the maximum allowed size; expression size: {size}"
            )
        self.texts.append(expr)
        self.used_names.update(_NAME_RE.findall(expr))
        self.used_values.update(_VALUE_RE.findall(expr))
        return expr

    def _parse(self, field: str, fn: str, *args: Any) -> Any:
        ex = _module()
        if ex is None:
            return None
        try:
            parsed = getattr(ex, fn)(*args)
        except ex.ExpressionError as exc:
            msg = str(getattr(exc, "message", None) or exc)
            if not msg.startswith(("Invalid ", "One or more", "Value provided")):
                msg = f"Invalid {field}: {msg}"
            raise ValidationException(msg) from None
        except RecursionError:
            raise ValidationException(f"Invalid {field}: The expression is nested too deeply") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise ValidationException(f"Invalid {field}: {exc}") from None
        if fn != "parse_update" and field != "KeyConditionExpression":
            # an update's paths are checked at the leader, after the condition; a key condition's
            # by its own rules, once the key schema is known
            self.paths.extend((field, path) for path in parsed.paths)
        return parsed

    def condition(self, field: str = "ConditionExpression") -> Spec | None:
        expr = self.text(field)
        if expr is None:
            return None
        self._parse(field, "parse_condition", expr, self.names, self.values, field)
        return [expr, self.names, self.values]

    def key_condition_grammar(self, expr: str, field: str = "KeyConditionExpression") -> Any:
        """Parse a key condition as far as no key schema is needed (syntax, reserved words, undefined
        placeholders, BETWEEN's bounds): DynamoDB reports those faults before unused names and values,
        and those before the faults the key schema shows. `keycond.parse` takes the result."""
        return self._parse(field, "parse_condition", expr, self.names, self.values, field)

    def update(self, field: str = "UpdateExpression") -> Spec | None:
        expr = self.text(field)
        if expr is None:
            return None
        self._parse(field, "parse_update", expr, self.names, self.values)
        return [expr, self.names, self.values]

    def projection(self, field: str = "ProjectionExpression") -> tuple[Spec | None, Any]:
        """The storage spec and a parsed projection the router can apply itself (GetItem)."""
        expr = self.text(field)
        if expr is None:
            return None, None
        parsed = self._parse(field, "parse_projection", expr, self.names)
        return [expr, self.names], parsed

    def check_keys(self, key_names: tuple[str, ...]) -> None:
        """No expression reaches inside a key attribute (they are scalars): a rule that needs the
        table's key schema, applied as soon as it is known. Expressions in the order they were read
        (a filter before a projection), and in each the partition key first, as DynamoDB reports."""
        reached: dict[str, set[str]] = {}
        for field, path in self.paths:
            if len(path.elements) > 1:
                reached.setdefault(field, set()).add(str(path.elements[0]))
        for names in reached.values():
            for name in key_names:
                if name in names:
                    raise ValidationException(key_not_scalar(name))

    def check_filter_keys(self, key_names: tuple[str, ...]) -> None:
        """A Query's filter may not name a key attribute (the key condition is where keys are
        matched); DynamoDB checks it after the key condition itself."""
        named = {path.elements[0] for field, path in self.paths if field == "FilterExpression"}
        for name in key_names:  # partition key first, as DynamoDB reports it
            if name in named:
                raise ValidationException("Filter Expression can only contain non-primary key attributes: "
                                          f"Primary key attribute: {name}")

    def finish(self) -> None:
        """After every expression of the request was read: no unused or orphan names/values."""
        if self.names is not None and not self.texts:
            raise ValidationException("ExpressionAttributeNames can only be specified when using expressions")
        if self.values is not None and not self.texts:
            raise ValidationException("ExpressionAttributeValues can only be specified when using expressions")
        unused = sorted(set(self.names or {}) - self.used_names)
        if unused:
            raise ValidationException(
                f"Value provided in ExpressionAttributeNames unused in expressions: keys: {{{', '.join(unused)}}}"
            )
        unused = sorted(set(self.values or {}) - self.used_values)
        if unused:
            raise ValidationException(
                f"Value provided in ExpressionAttributeValues unused in expressions: keys: {{{', '.join(unused)}}}"
            )


def project(item: dict[str, Any], parsed: Any) -> dict[str, Any]:
    """Apply a parsed projection (GetItem, BatchGetItem) with the shared evaluator."""
    ex = _module()
    if ex is None or parsed is None:
        return item
    return ex.project(item, parsed)


def _check_params(body: dict[str, Any], fields: tuple[str, ...], names: bool, values: bool) -> None:
    """Names need some expression; values one that can use them (a projection cannot)."""
    if names and all(body.get(f) is None for f in fields):
        raise ValidationException("ExpressionAttributeNames can only be specified when using expressions")
    takers = [f for f in fields if f != "ProjectionExpression"]
    if values and takers and all(body.get(f) is None for f in takers):
        raise ValidationException(
            f"ExpressionAttributeValues can only be specified when using expressions: {' and '.join(takers)} "
            f"{'are' if len(takers) > 1 else 'is'} null"
        )


def raise_mixed(legacy: str, modern: str) -> None:
    """A legacy parameter beside an expression parameter (each a comma-separated list, in DynamoDB's order)."""
    raise ValidationException(
        f"Can not use both expression and non-expression parameters in the same request: "
        f"Non-expression parameters: {{{legacy}}} Expression parameters: {{{modern}}}"
    )


def refuse_mixed(body: dict[str, Any], legacy: str, fields: tuple[str, ...]) -> None:
    """A legacy parameter given beside any of the operation's expression parameters is refused."""
    present = [f for f in fields if body.get(f) is not None]
    if body.get(legacy) is not None and present:
        raise_mixed(legacy, ", ".join(present))
