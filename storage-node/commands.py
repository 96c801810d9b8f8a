"""Item commands: their wire encoding and their deterministic application.

Every replica applies the same committed command to the same state, so
apply_command must depend only on the command and the current items: no clock,
no randomness, no iteration over unordered input that could differ by replica.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack

from kynamo import keycodec
from kynamo.keycodec import KeySchema

Item = dict[str, Any]
Write = tuple[bytes, Item | None]
GetItem = Callable[[dict], Item | None]

CCF = "ConditionalCheckFailedException"
CCF_MSG = "The conditional request failed"
VALIDATION = "ValidationException"
MAX_ITEM_SIZE = 400 * 1024


def encode_command(cmd: dict) -> bytes:
    return msgpack.packb(cmd, use_bin_type=True)


def decode_command(data: bytes) -> dict:
    cmd = msgpack.unpackb(data, raw=False)
    if not isinstance(cmd, dict):
        raise ValueError("a command must be a map")
    return cmd


class Key(dict):
    """A command's key with its position computed once: the state's lookups reuse `pos`."""

    __slots__ = ("pos",)

    def __init__(self, key: dict, pos: bytes) -> None:
        super().__init__(key)
        self.pos = pos


def position_of(key: dict, schema: KeySchema) -> bytes:
    """A key's position, free when it is a `Key` from `_key_of`."""
    pos = getattr(key, "pos", None)
    return pos if pos is not None else keycodec.position(schema, key)


class CommandError(Exception):
    """A command the state machine rejects as a whole (becomes a ValidationException result)."""


def _validation(msg: str) -> dict:
    return {"err": VALIDATION, "msg": msg}


# ---------------------------------------------------------------- parsed-expression cache


class _LRU:
    """Parsed expressions by msgpack of (kind, expr, names, values): replicas parse each once."""

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._data: OrderedDict[bytes, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_parse(self, key: bytes, parse: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit
        value = parse()  # outside the lock: parsing may be slow; a duplicate parse is harmless
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_CACHE = _LRU()


def _expr_parts(spec: Any) -> tuple[str, dict | None, dict | None]:
    if not isinstance(spec, list | tuple) or not spec or not isinstance(spec[0], str):
        raise CommandError("an expression must be [expression, names, values]")
    names = spec[1] if len(spec) > 1 else None
    values = spec[2] if len(spec) > 2 else None
    return spec[0], names, values


def _parsed(kind: str, spec: Any) -> Any:
    from kynamo.expressions import parse_condition, parse_update

    expr, names, values = _expr_parts(spec)
    key = msgpack.packb([kind, expr, names, values], use_bin_type=True)
    parse = parse_condition if kind == "c" else parse_update
    return _CACHE.get_or_parse(key, lambda: parse(expr, names, values))


def _check(cond: Any, item: Item | None) -> bool:
    if cond is None:
        return True
    from kynamo.expressions import evaluate_condition

    return bool(evaluate_condition(_parsed("c", cond), item))


# ---------------------------------------------------------------- apply


def _item_size(item: Item) -> int:
    from kynamo.values import item_size

    return item_size(item)


def _with_old_size(result: dict, old: Item | None) -> dict:
    """A write bills the larger of the old and new item (a delete: the old one): the router needs the old size."""
    if old is not None:
        result["old_size"] = _item_size(old)
    return result


def _wants_old_on_failure(cmd: dict) -> bool:
    rcq = cmd.get("rcq")
    if isinstance(rcq, dict):
        rcq = rcq.get("ReturnValuesOnConditionCheckFailure")
    return rcq == "ALL_OLD"


def _failed(cmd: dict, old: Item | None) -> dict:
    return {"err": CCF, "msg": CCF_MSG, "item": old if _wants_old_on_failure(cmd) else None}


def _key_of(cmd: dict, schema: KeySchema) -> tuple[bytes, Key]:
    key = cmd.get("key")
    if not isinstance(key, dict):
        raise CommandError("The provided key element does not match the schema")
    names = schema.key_names()
    if set(key) != names:
        raise CommandError("The provided key element does not match the schema")
    try:
        pos = keycodec.position(schema, key)
    except ValueError as exc:
        raise CommandError(f"The provided key element does not match the schema: {exc}") from exc
    return pos, Key(key, pos)


def _put(cmd: dict, get_item: GetItem, schema: KeySchema) -> tuple[list[Write], dict]:
    pos, key = _key_of(cmd, schema)
    item = cmd.get("item")
    if not isinstance(item, dict):
        raise CommandError("put needs an item")
    # Identical key attributes encode identically: only a differing spelling needs the encoder.
    if any(item.get(name) != value for name, value in key.items()):
        try:
            if keycodec.position(schema, item) != pos:
                raise CommandError("the item's key attributes differ from the command key")
        except ValueError as exc:
            raise CommandError(f"One or more parameter values were invalid: {exc}") from exc
    old = get_item(key)
    if not _check(cmd.get("cond"), old):
        return [], _failed(cmd, old)
    return [(pos, item)], _with_old_size({"ok": True, "attrs": old if cmd.get("rv") == "ALL_OLD" else None}, old)


def _delete(cmd: dict, get_item: GetItem, schema: KeySchema) -> tuple[list[Write], dict]:
    pos, key = _key_of(cmd, schema)
    old = get_item(key)
    if not _check(cmd.get("cond"), old):
        return [], _failed(cmd, old)
    writes: list[Write] = [(pos, None)] if old is not None else []
    return writes, _with_old_size({"ok": True, "attrs": old if cmd.get("rv") == "ALL_OLD" else None}, old)


def _update(cmd: dict, get_item: GetItem, schema: KeySchema) -> tuple[list[Write], dict]:
    pos, key = _key_of(cmd, schema)
    old = get_item(key)
    # Parse before the condition so a bad update expression is reported even when the condition fails.
    plan = _parsed("u", cmd["update"]) if cmd.get("update") is not None else None
    if not _check(cmd.get("cond"), old):
        return [], _failed(cmd, old)
    base = dict(old) if old is not None else dict(key)
    new = base
    if plan is not None:
        from kynamo.expressions import apply_update

        new, _ = apply_update(plan, base, schema.ordered_names())
        new = dict(new)
        for name in schema.key_names():  # key attributes are immutable; the plan may not drop them
            new[name] = base[name]
    if old is None and plan is not None and set(new) == schema.key_names():
        # DynamoDB does not create an item from an update that only removes/deletes attributes.
        return [], {"ok": True, "attrs": None}
    new_size = _item_size(new)
    if new_size > MAX_ITEM_SIZE:
        raise CommandError("Item size to update has exceeded the maximum allowed size")
    rv = cmd.get("rv") or "NONE"
    attrs: Item | None
    if rv == "ALL_OLD":
        attrs = old
    elif rv == "ALL_NEW":
        attrs = new
    elif rv == "UPDATED_OLD":
        attrs = {k: old[k] for k in sorted(updated_names(plan, old))} if old is not None else None
    elif rv == "UPDATED_NEW":
        attrs = {k: new[k] for k in sorted(updated_names(plan, new))}
    else:
        attrs = None
    return [(pos, new)], _with_old_size({"ok": True, "attrs": attrs or None, "new_size": new_size}, old)


def updated_names(plan: Any, item: dict) -> set[str]:
    """UPDATED_OLD / UPDATED_NEW: the top-level attributes holding an updated path that exists in
    `item` (the item before, or after). DynamoDB Local returns the whole top-level attribute, and
    nothing for a path that did not exist (a REMOVE's new value, a SET's old one, a list append
    past the end)."""
    if plan is None:
        return set()
    from kynamo.expressions.typed import get_path

    return {str(p.elements[0]) for p in plan.paths if get_path(item, p.elements) is not None}


def _batch(cmd: dict, get_item: GetItem, schema: KeySchema) -> tuple[list[Write], list[dict]]:
    ops = cmd.get("ops")
    if not isinstance(ops, list):
        raise CommandError("batch ops must be a list")
    overlay: dict[bytes, Item | None] = {}

    def layered(key: dict) -> Item | None:
        pos = position_of(key, schema)
        return overlay[pos] if pos in overlay else get_item(key)

    writes: list[Write] = []
    results: list[dict] = []
    for sub in ops:
        if isinstance(sub, dict) and sub.get("op") == "batch":
            results.append(_validation("batches do not nest"))
            continue
        sub_writes, result = apply_command(sub, layered, schema)
        for pos, item in sub_writes:
            overlay[pos] = item
        writes.extend(sub_writes)
        results.append(result)  # type: ignore[arg-type]
    return writes, results


_OPS = {"put": _put, "delete": _delete, "update": _update, "batch": _batch}


def apply_command(cmd: Any, get_item: GetItem, key_schema: KeySchema) -> tuple[list[Write], Any]:
    """The writes [(position, item or None)] and the client result of one command."""
    if not isinstance(cmd, dict):
        return [], _validation("a command must be a map")
    op = cmd.get("op")
    if op in ("scrub", "noop", "split"):  # scrub/split are handled around the state; noop is a read barrier
        return [], {"ok": True}
    handler = _OPS.get(op)  # type: ignore[arg-type]
    if handler is None:
        return [], _validation(f"unknown command op {op!r}")
    try:
        return handler(cmd, get_item, key_schema)
    except CommandError as exc:
        return [], _validation(str(exc))
    except Exception as exc:
        # Same code and same state on every replica, so this outcome is as deterministic as a success;
        # raising instead would wedge the apply loop on this entry forever.
        if _is_expression_error(exc):
            return [], _validation(str(exc))
        return [], {"err": "InternalServerError", "msg": f"command failed: {exc!r}"}


def _is_expression_error(exc: Exception) -> bool:
    try:
        from kynamo.expressions import ExpressionError
    except ImportError:
        return False
    return isinstance(exc, ExpressionError)
