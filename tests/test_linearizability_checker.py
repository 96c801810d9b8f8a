"""The checker must accept real concurrency and reject every stale or invented read."""

from __future__ import annotations

try:
    from tests.sim.linearizability import Op, check, check_key
except ImportError:  # tests/ on sys.path rather than the repo root
    from sim.linearizability import Op, check, check_key


def put(v: object, a: float, b: float | None, key: str = "k") -> Op:
    return Op(key, "put", v, a, b)


def get(v: object, a: float, b: float, key: str = "k") -> Op:
    return Op(key, "get", v, a, b)


def test_empty_and_sequential_histories() -> None:
    assert check([]).ok
    assert check_key([put(1, 0, 1), get(1, 2, 3), put(2, 4, 5), get(2, 6, 7)])


def test_initial_value_read() -> None:
    assert check_key([get(None, 0, 1), put(1, 2, 3)])
    assert not check_key([get(1, 0, 1), put(1, 2, 3)])  # read from the future


def test_stale_read_rejected() -> None:
    assert not check_key([put(1, 0, 1), put(2, 2, 3), get(1, 4, 5)])


def test_concurrent_write_may_be_seen_or_not() -> None:
    assert check_key([put(1, 0, 1), put(2, 2, 6), get(1, 3, 4)])
    assert check_key([put(1, 0, 1), put(2, 2, 6), get(2, 3, 4)])


def test_reads_cannot_flip_back() -> None:
    # Once a read saw the concurrent write, a later read may not see the old value.
    assert not check_key([put(1, 0, 1), put(2, 2, 10), get(2, 3, 4), get(1, 5, 6)])


def test_unknown_outcome_write_may_or_may_not_happen() -> None:
    assert check_key([put(1, 0, 1), put(2, 2, None), get(1, 3, 4)])
    assert check_key([put(1, 0, 1), put(2, 2, None), get(2, 30, 40)])
    assert check_key([put(1, 0, 1), put(2, 2, None), get(2, 3, 4), get(2, 30, 40)])
    # ...but once observed it cannot be un-done, and it cannot act before its invocation.
    assert not check_key([put(1, 0, 1), put(2, 2, None), get(2, 3, 4), get(1, 5, 6)])
    assert not check_key([put(1, 0, 1), get(2, 2, 3), put(2, 5, None)])


def test_value_never_written_rejected() -> None:
    assert not check_key([put(1, 0, 1), get(3, 2, 3)])


def test_keys_are_independent_and_failure_names_key() -> None:
    hist = [put(1, 0, 1, "a"), put(1, 0, 1, "b"), get(1, 2, 3, "a"), get(None, 2, 3, "b")]
    verdict = check(hist)
    assert not verdict.ok and verdict.key == "b"
    assert check(hist[:3]).ok


def test_unknown_reads_are_ignored() -> None:
    assert check([put(1, 0, 1), Op("k", "get", 99, 2, None)]).ok


def test_many_concurrent_writes_finish_quickly() -> None:
    ops = [put(i, 0, 100) for i in range(10)] + [get(7, 101, 102), put(99, 103, None), get(7, 104, 105)]
    assert check_key(ops)
    assert not check_key([*ops, get(3, 106, 107)])
