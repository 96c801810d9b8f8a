"""apply_command: deterministic item operations against an in-memory item map."""

from __future__ import annotations

from typing import Any

import pytest
from kynamo.storage_node.commands import apply_command, decode_command, encode_command

from kynamo import keycodec
from kynamo.keycodec import KeySchema
from kynamo.values import item_size

SCHEMA = KeySchema("pk", "S", "sk", "N")


def _has_expressions() -> bool:
    try:
        from kynamo.expressions import parse_condition  # noqa: F401
    except ImportError:
        return False
    return True


needs_expressions = pytest.mark.skipif(not _has_expressions(), reason="kynamo.expressions not available yet")


class Store:
    """A dict of position -> item that applies writes like the state does."""

    def __init__(self) -> None:
        self.items: dict[bytes, dict] = {}

    def get(self, key: dict) -> dict | None:
        return self.items.get(keycodec.position(SCHEMA, key))

    def run(self, cmd: dict) -> Any:
        """The result without its billing sizes (test_write_results_carry_the_sizes_that_bill checks those)."""
        return _unsized(self.run_sized(cmd))

    def run_sized(self, cmd: dict) -> Any:
        writes, result = apply_command(decode_command(encode_command(cmd)), self.get, SCHEMA)
        for pos, item in writes:
            if item is None:
                self.items.pop(pos, None)
            else:
                self.items[pos] = item
        return result


def _unsized(result: Any) -> Any:
    if isinstance(result, list):
        return [_unsized(r) for r in result]
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k not in ("old_size", "new_size")}
    return result


def key(pk: str = "a", sk: str = "1") -> dict:
    return {"pk": {"S": pk}, "sk": {"N": sk}}


def item(pk: str = "a", sk: str = "1", **attrs: str) -> dict:
    return {**key(pk, sk), **{k: {"S": v} for k, v in attrs.items()}}


def test_write_results_carry_the_sizes_that_bill() -> None:
    """DynamoDB bills a write by the larger of the old and new item, a delete by the deleted item."""
    s = Store()
    big, small = item(v="x" * 5000), item(v="y" * 10)
    assert "old_size" not in s.run_sized({"op": "put", "key": key(), "item": big})  # nothing replaced
    assert s.run_sized({"op": "put", "key": key(), "item": small})["old_size"] == item_size(big)
    r = s.run_sized({"op": "update", "key": key(), "update": ["SET v = :v", None, {":v": {"S": "z" * 3000}}]})
    assert (r["old_size"], r["new_size"]) == (item_size(small), item_size(item(v="z" * 3000)))
    assert s.run_sized({"op": "delete", "key": key()})["old_size"] == item_size(item(v="z" * 3000))
    assert "old_size" not in s.run_sized({"op": "delete", "key": key()})  # nothing deleted
    batch = s.run_sized({"op": "batch", "ops": [{"op": "put", "key": key(), "item": big},
                                                {"op": "put", "key": key(), "item": small}]})
    assert "old_size" not in batch[0] and batch[1]["old_size"] == item_size(big)


def test_encode_round_trip_keeps_bytes() -> None:
    cmd = {"op": "put", "key": key(), "item": {**key(), "b": {"B": b"\x00\xff"}}, "id": b"x"}
    assert decode_command(encode_command(cmd)) == cmd


def test_put_and_return_all_old() -> None:
    s = Store()
    assert s.run({"op": "put", "key": key(), "item": item(v="1"), "rv": "ALL_OLD"}) == {"ok": True, "attrs": None}
    r = s.run({"op": "put", "key": key(), "item": item(v="2"), "rv": "ALL_OLD"})
    assert r == {"ok": True, "attrs": item(v="1")}
    assert s.get(key()) == item(v="2")
    assert s.run({"op": "put", "key": key(), "item": item(v="3")}) == {"ok": True, "attrs": None}


def test_put_rejects_mismatched_key() -> None:
    s = Store()
    r = s.run({"op": "put", "key": key(sk="1"), "item": item(sk="2")})
    assert r["err"] == "ValidationException"
    r = s.run({"op": "put", "key": {"pk": {"S": "a"}}, "item": item()})
    assert r["err"] == "ValidationException"
    assert s.items == {}


def test_delete() -> None:
    s = Store()
    s.run({"op": "put", "key": key(), "item": item(v="1")})
    assert s.run({"op": "delete", "key": key("zz"), "rv": "ALL_OLD"}) == {"ok": True, "attrs": None}
    assert s.run({"op": "delete", "key": key(), "rv": "ALL_OLD"}) == {"ok": True, "attrs": item(v="1")}
    assert s.items == {}


def test_delete_missing_writes_nothing() -> None:
    writes, result = apply_command({"op": "delete", "key": key()}, lambda k: None, SCHEMA)
    assert writes == [] and result == {"ok": True, "attrs": None}


def test_update_without_expression_creates_key_only_item() -> None:
    s = Store()
    assert s.run({"op": "update", "key": key(), "rv": "ALL_NEW"}) == {"ok": True, "attrs": key()}
    assert s.get(key()) == key()


def test_batch_sees_earlier_sub_commands() -> None:
    s = Store()
    r = s.run(
        {
            "op": "batch",
            "ops": [
                {"op": "put", "key": key(), "item": item(v="1")},
                {"op": "put", "key": key(), "item": item(v="2"), "rv": "ALL_OLD"},
                {"op": "delete", "key": key(), "rv": "ALL_OLD"},
                {"op": "put", "key": key("b"), "item": item("b")},
                {"op": "bogus"},
            ],
        }
    )
    assert r[0] == {"ok": True, "attrs": None}
    assert r[1] == {"ok": True, "attrs": item(v="1")}
    assert r[2] == {"ok": True, "attrs": item(v="2")}
    assert r[4]["err"] == "ValidationException"
    assert s.get(key()) is None and s.get(key("b")) == item("b")


def test_scrub_and_unknown_ops() -> None:
    assert apply_command({"op": "scrub", "start": b"", "end": None}, lambda k: None, SCHEMA) == ([], {"ok": True})
    assert apply_command({"op": "nope"}, lambda k: None, SCHEMA)[1]["err"] == "ValidationException"
    assert apply_command("x", lambda k: None, SCHEMA)[1]["err"] == "ValidationException"


def test_apply_is_deterministic() -> None:
    cmd = {"op": "batch", "ops": [{"op": "put", "key": key(str(i)), "item": item(str(i))} for i in range(20)]}
    a = apply_command(cmd, lambda k: None, SCHEMA)
    b = apply_command(cmd, lambda k: None, SCHEMA)
    assert a == b


# ---------------------------------------------------------------- with the expression package


@needs_expressions
def test_condition_failure_returns_old_item_on_request() -> None:
    s = Store()
    s.run({"op": "put", "key": key(), "item": item(v="1")})
    cond = ["attribute_not_exists(pk)", None, None]
    r = s.run({"op": "put", "key": key(), "item": item(v="2"), "cond": cond})
    assert r == {"err": "ConditionalCheckFailedException", "msg": "The conditional request failed", "item": None}
    r = s.run({"op": "put", "key": key(), "item": item(v="2"), "cond": cond, "rcq": "ALL_OLD"})
    assert r["item"] == item(v="1")
    assert s.get(key()) == item(v="1")
    r = s.run({"op": "delete", "key": key(), "cond": ["v = :v", None, {":v": {"S": "1"}}]})
    assert r == {"ok": True, "attrs": None}


@needs_expressions
def test_condition_on_missing_item() -> None:
    s = Store()
    assert s.run({"op": "put", "key": key(), "item": item(), "cond": ["attribute_not_exists(pk)", None, None]})["ok"]
    r = s.run({"op": "delete", "key": key("x"), "cond": ["attribute_exists(pk)", None, None]})
    assert r["err"] == "ConditionalCheckFailedException"


@needs_expressions
def test_update_return_values() -> None:
    s = Store()
    s.run({"op": "put", "key": key(), "item": {**key(), "a": {"N": "1"}, "b": {"S": "x"}}})
    upd = ["SET a = a + :one, c = :c", None, {":one": {"N": "1"}, ":c": {"S": "new"}}]
    r = s.run({"op": "update", "key": key(), "update": upd, "rv": "UPDATED_OLD"})
    assert r == {"ok": True, "attrs": {"a": {"N": "1"}}}
    r = s.run({"op": "update", "key": key(), "update": upd, "rv": "UPDATED_NEW"})
    assert r == {"ok": True, "attrs": {"a": {"N": "3"}, "c": {"S": "new"}}}
    r = s.run({"op": "update", "key": key(), "update": ["REMOVE b", None, None], "rv": "ALL_OLD"})
    assert r["attrs"]["b"] == {"S": "x"}
    r = s.run(
        {"op": "update", "key": key(), "update": ["SET #n = :v", {"#n": "d"}, {":v": {"S": "d"}}], "rv": "ALL_NEW"}
    )
    assert r["attrs"] == {**key(), "a": {"N": "3"}, "c": {"S": "new"}, "d": {"S": "d"}}


@needs_expressions
def test_update_creates_item_and_rejects_key_updates() -> None:
    s = Store()
    r = s.run({"op": "update", "key": key(), "update": ["SET v = :v", None, {":v": {"S": "1"}}], "rv": "ALL_NEW"})
    assert r == {"ok": True, "attrs": item(v="1")}
    r = s.run({"op": "update", "key": key(), "update": ["SET pk = :v", None, {":v": {"S": "1"}}]})
    assert r["err"] == "ValidationException"
    assert s.get(key()) == item(v="1")


@needs_expressions
def test_remove_only_update_does_not_create_item() -> None:
    s = Store()
    r = s.run({"op": "update", "key": key(), "update": ["REMOVE a", None, None], "rv": "ALL_NEW"})
    assert r == {"ok": True, "attrs": None}
    assert s.items == {}


@needs_expressions
def test_invalid_expressions_are_validation_errors() -> None:
    s = Store()
    r = s.run({"op": "put", "key": key(), "item": item(), "cond": ["a = = b", None, None]})
    assert r["err"] == "ValidationException"
    r = s.run({"op": "update", "key": key(), "update": ["SET a = :missing", None, None]})
    assert r["err"] == "ValidationException"
    r = s.run({"op": "update", "key": key(), "update": ["SET a = a + :one", None, {":one": {"S": "x"}}]})
    assert r["err"] == "ValidationException"
    assert s.items == {}


# ---------------------------------------------------------------- conditions, updates and the parse cache


def test_conditions_updates_and_the_parse_cache() -> None:
    """Through the real expressions package: a command's expression is parsed once and cached."""
    from kynamo.storage_node import commands

    commands._CACHE.clear()
    s = Store()
    cond_new = ["attribute_not_exists(pk)", None, None]
    assert s.run({"op": "put", "key": key(), "item": item(v="1"), "cond": cond_new})["ok"]
    r = s.run({"op": "put", "key": key(), "item": item(v="2"), "cond": cond_new, "rcq": "ALL_OLD"})
    assert r == {"err": "ConditionalCheckFailedException", "msg": "The conditional request failed", "item": item(v="1")}
    assert len(commands._CACHE) == 1  # the same expression parsed once
    upd = ["SET #w = :w", {"#w": "w"}, {":w": {"S": "W"}}]
    r = s.run({"op": "update", "key": key(), "update": upd, "rv": "UPDATED_NEW"})
    assert r == {"ok": True, "attrs": {"w": {"S": "W"}}}
    r = s.run({"op": "update", "key": key(), "update": ["REMOVE v", None, None], "rv": "UPDATED_OLD"})
    assert r == {"ok": True, "attrs": {"v": {"S": "1"}}}
    r = s.run({"op": "update", "key": key(), "update": ["REMOVE nothing", None, None], "rv": "UPDATED_OLD"})
    assert r == {"ok": True, "attrs": None}
    r = s.run({"op": "update", "key": key(), "update": ["SET pk = :x", None, {":x": {"S": "z"}}]})
    assert r["err"] == "ValidationException" and "part of the key" in r["msg"]
    r = s.run({"op": "update", "key": key("new"), "update": ["REMOVE v", None, None], "rv": "ALL_NEW"})
    assert r == {"ok": True, "attrs": None} and s.get(key("new")) is None
    big = {":b": {"S": "x" * (400 * 1024)}}
    r = s.run({"op": "update", "key": key(), "update": ["SET big = :b", None, big]})
    assert r["err"] == "ValidationException" and "maximum allowed size" in r["msg"]
    assert s.get(key()) == {**key(), "w": {"S": "W"}}
