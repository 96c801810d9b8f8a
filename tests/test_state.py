"""PartitionState against real RocksDB under tmp_path."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from kynamo.storage_node.commands import encode_command
from kynamo.storage_node.state import PartitionState

from kynamo import keycodec
from kynamo.keycodec import KeySchema

SCHEMA_N = KeySchema("pk", "S", "sk", "N")
SCHEMA_S = KeySchema("pk", "S", "sk", "S")


def put(pk: str, sk: str, sk_type: str = "N", **attrs: object) -> bytes:
    it = {"pk": {"S": pk}, "sk": {sk_type: sk}, **{k: {"S": str(v)} for k, v in attrs.items()}}
    return encode_command({"op": "put", "key": {"pk": it["pk"], "sk": it["sk"]}, "item": it})


def delete(pk: str, sk: str, sk_type: str = "N") -> bytes:
    return encode_command({"op": "delete", "key": {"pk": {"S": pk}, "sk": {sk_type: sk}}})


def entries(cmds: list[bytes | None], start: int = 1) -> list[tuple[int, bytes | None]]:
    return list(enumerate(cmds, start))


@pytest.fixture
def st(tmp_path: Path):
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    yield s
    s.close()


def sks(page) -> list[str]:
    return [i["sk"]["N"] if "N" in i["sk"] else i["sk"]["S"] for i in page.items]


def test_apply_and_replay_is_idempotent(st: PartitionState) -> None:
    results = st.apply(entries([put("a", "1", v=1), None, put("a", "2", v=2)]))
    assert results == [{"ok": True, "attrs": None}, None, {"ok": True, "attrs": None}]
    assert st.applied_index == 3
    # Replaying the same entries (after a crash the log is replayed from an older point) changes nothing.
    assert st.apply(entries([put("a", "1", v=9), None, put("a", "2", v=9), delete("a", "1")])) == [
        None,
        None,
        None,
        {"ok": True, "attrs": None, "old_size": 9},  # the deleted item's size (what the delete bills)
    ]
    assert st.applied_index == 4
    assert st.get({"pk": {"S": "a"}, "sk": {"N": "1"}}) is None
    assert st.get({"pk": {"S": "a"}, "sk": {"N": "2"}})["v"] == {"S": "2"}
    assert st.item_count() == 1


def test_counters_track_puts_overwrites_deletes(st: PartitionState, tmp_path: Path) -> None:
    st.apply(entries([put("a", str(i), v="x" * i) for i in range(10)]))
    assert st.item_count() == 10
    size = st.size_estimate()
    assert size > 0
    st.apply([(11, put("a", "3", v="y")), (12, delete("a", "4")), (13, delete("zz", "1"))])
    assert st.item_count() == 9
    assert st.size_estimate() < size
    expected = (st.item_count(), st.size_estimate())
    st.close()
    again = PartitionState.open(tmp_path / "db")
    assert (again.item_count(), again.size_estimate()) == expected
    assert again.key_schema == SCHEMA_N
    again.close()


def test_reopen_keeps_index_and_data(tmp_path: Path) -> None:
    s = PartitionState.open(tmp_path / "db", SCHEMA_N, partition_id="p1", start=b"", end=b"\x80", epoch=3)
    s.apply(entries([put("a", "1"), put("b", "1")]), ballot=(2, "n1"))
    s.flush()
    s.close()
    s.close()  # idempotent
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    assert s.applied_index == 2
    assert s.applied_ballot == (2, "n1")
    assert s.partition_meta == {"id": "p1", "start": b"", "end": b"\x80", "epoch": 3}
    assert s.get({"pk": {"S": "b"}, "sk": {"N": "1"}}) is not None
    with pytest.raises(ValueError):
        PartitionState.open(tmp_path / "other", None)
    s.close()
    with pytest.raises(ValueError):
        PartitionState.open(tmp_path / "db", SCHEMA_S)


def _die_after_applying(tmp_path: Path, count: int, *, flush_at: int | None) -> None:
    """A child process applies `count` puts (flushing after `flush_at`) and dies without closing."""
    script = textwrap.dedent(
        f"""
        import os
        from kynamo.keycodec import KeySchema
        from kynamo.storage_node.commands import encode_command
        from kynamo.storage_node.state import PartitionState
        s = PartitionState.open({str(tmp_path / "db")!r}, KeySchema("pk", "S", "sk", "N"))
        for i in range(1, {count} + 1):
            key = {{"pk": {{"S": "a"}}, "sk": {{"N": str(i)}}}}
            s.apply([(i, encode_command({{"op": "put", "key": key, "item": key}}))])
            if i == {flush_at!r}:
                s.flush()
        os._exit(0)  # no close, no flush
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def _log(count: int) -> list[tuple[int, bytes]]:
    return [(i, put("a", str(i))) for i in range(1, count + 1)]


def test_process_death_after_apply_keeps_index_and_data_together(tmp_path: Path) -> None:
    """Applied batches skip RocksDB's WAL: a death loses the unflushed tail, index and data alike,
    and replaying the log from the start restores it without applying anything twice."""
    _die_after_applying(tmp_path, 200, flush_at=None)
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    page = s.query({"S": "a"}, None)
    assert s.applied_index == page.count == s.item_count() <= 200
    s.apply(_log(200))
    assert s.applied_index == s.query({"S": "a"}, None).count == s.item_count() == 200
    s.close()


def test_flush_makes_applied_state_survive_process_death(tmp_path: Path) -> None:
    """The replica cuts its log only behind a flush(): what was flushed survives a death."""
    _die_after_applying(tmp_path, 200, flush_at=150)
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    assert 150 <= s.applied_index == s.query({"S": "a"}, None).count == s.item_count() <= 200
    s.apply(_log(200))
    assert s.applied_index == s.item_count() == 200
    s.close()


def test_failed_write_leaves_nothing_half_applied(st: PartitionState) -> None:
    st.apply(entries([put("a", "1")]))

    class Boom(Exception):
        pass

    real = st._db

    class Dying:
        def __getattr__(self, name: str):
            return getattr(real, name)

        def write(self, batch, options=None) -> None:
            raise Boom

    st._db = Dying()  # type: ignore[assignment]
    with pytest.raises(Boom):
        st.apply([(2, put("a", "2")), (3, delete("a", "1"))])
    st._db = real
    assert st.applied_index == 1 and st.item_count() == 1
    assert st.get({"pk": {"S": "a"}, "sk": {"N": "1"}}) is not None
    assert st.get({"pk": {"S": "a"}, "sk": {"N": "2"}}) is None
    # The replayed entries apply normally afterwards.
    st.apply([(2, put("a", "2")), (3, delete("a", "1"))])
    assert st.applied_index == 3 and st.item_count() == 1


NUMS = ["-1e10", "-12.5", "-12", "-0.001", "0", "0.0001", "1", "1.5", "2", "10", "12.25", "1e20"]


def test_query_orders_numbers_and_applies_key_conditions(st: PartitionState) -> None:
    shuffled = NUMS[:]
    random.Random(1).shuffle(shuffled)
    st.apply(entries([put("p", n) for n in shuffled] + [put("q", "5")]))

    def q(cond=None, **kw) -> list[Decimal]:
        return [Decimal(x) for x in sks(st.query({"S": "p"}, cond, **kw))]

    ordered = sorted(Decimal(n) for n in NUMS)
    assert q() == ordered
    assert q(forward=False) == ordered[::-1]
    assert q(("=", {"N": "1.50"})) == [Decimal("1.5")]
    assert q(("<", {"N": "0"})) == [d for d in ordered if d < 0]
    assert q(("<=", {"N": "0"})) == [d for d in ordered if d <= 0]
    assert q((">", {"N": "1"})) == [d for d in ordered if d > 1]
    assert q((">=", {"N": "1"})) == [d for d in ordered if d >= 1]
    assert q(("between", {"N": "-12"}, {"N": "2"})) == [d for d in ordered if -12 <= d <= 2]
    assert q(("between", {"N": "3"}, {"N": "2"})) == []
    assert q((">", {"N": "1e20"})) == []


def test_begins_with_on_strings(tmp_path: Path) -> None:
    s = PartitionState.open(tmp_path / "db", SCHEMA_S)
    words = ["", "a", "ab", "ab\x00", "ab\x00c", "abc", "abd", "b", "日本", "日本語", "日", "旦", "\x00", "\x00\x01"]
    s.apply(entries([put("p", w, "S") for w in words] + [put("pp", "abc", "S")]))
    for prefix in ["", "a", "ab", "ab\x00", "日", "日本", "\x00", "zz"]:
        got = sks(s.query({"S": "p"}, ("begins_with", {"S": prefix})))
        assert got == sorted((w for w in words if w.startswith(prefix)), key=lambda w: w.encode())
        back = sks(s.query({"S": "p"}, ("begins_with", {"S": prefix}), forward=False))
        assert back == got[::-1]
    s.close()


@pytest.mark.parametrize("forward", [True, False])
def test_limit_and_resume_cover_everything_once(st: PartitionState, forward: bool) -> None:
    n = 57
    st.apply(entries([put("p", str(i)) for i in range(n)]))
    for limit in (1, 5, 10, 57, 100):
        seen: list[str] = []
        start = None
        pages = 0
        while True:
            page = st.query({"S": "p"}, None, forward=forward, limit=limit, start_position=start)
            pages += 1
            seen += sks(page)
            assert page.scanned_count <= limit
            if page.last_position is None:
                break
            start = page.last_position
            assert keycodec.decode_position(SCHEMA_N, start)["sk"] == page.items[-1]["sk"]
        expected = [str(i) for i in (range(n) if forward else reversed(range(n)))]
        assert seen == expected
        assert pages == n // limit + 1


def test_limit_counts_items_before_filter(st: PartitionState) -> None:
    st.apply(entries([put("p", str(i), v=i % 2) for i in range(10)]))

    class OddOnly:
        def evaluate(self, item: dict) -> bool:
            return item["v"] == {"S": "1"}

    page = st.query({"S": "p"}, None, limit=4, filter=OddOnly(), projection=lambda it: {"sk": it["sk"]})
    assert page.scanned_count == 4 and page.count == 2
    assert page.items == [{"sk": {"N": "1"}}, {"sk": {"N": "3"}}]
    assert page.last_position is not None
    page = st.query({"S": "p"}, None, filter=lambda it: it["v"] == {"S": "0"})
    assert page.count == 5 and page.scanned_count == 10 and page.last_position is None


def test_page_stops_at_max_bytes(st: PartitionState) -> None:
    blob = "x" * 100_000
    st.apply(entries([put("p", str(i), v=blob) for i in range(25)]))
    page = st.query({"S": "p"}, None)
    assert page.bytes_read >= 1 << 20
    assert page.count == 11  # the item that crosses 1 MB is the page's last
    assert page.last_position is not None
    rest = st.query({"S": "p"}, None, start_position=page.last_position)
    assert sks(rest)[0] == "11"
    small = st.query({"S": "p"}, None, max_bytes=1)
    assert small.count == 1


@pytest.mark.parametrize("forward", [True, False])
def test_page_read_in_steps_equals_page_read_at_once(st: PartitionState, forward: bool) -> None:
    """The node reads a page's start inline and the rest in a thread: the steps must add up to one read."""
    st.apply(entries([put("p", str(i), v="y" * (1000 + 37 * i)) for i in range(60)]))
    for kwargs in ({}, {"limit": 17}, {"max_bytes": 20_000}):
        whole = st.query({"S": "p"}, None, forward=forward, **kwargs)
        reader = st.query_reader({"S": "p"}, None, forward=forward, **kwargs)
        steps = 0
        while not reader.step(3000):
            steps += 1
            # writes between steps do not show: both steps walk the iterator's view
            st.apply(entries([put("p", str(1000 + steps), v="y" * 2000)], start=st.applied_index + 1))
        assert steps > 1
        assert reader.page == whole
    scanned = st.scan_reader(forward=forward, limit=5)
    assert not scanned.step(1) and scanned.step() and scanned.page == st.scan(forward=forward, limit=5)


def test_scan_over_position_range(st: PartitionState) -> None:
    st.apply(entries([put(f"k{i}", "1") for i in range(200)]))
    bounds = keycodec.hash_space_boundaries(4)
    ranges = list(zip([b"", *bounds], [*bounds, None], strict=True))
    total: list[str] = []
    for lo, hi in ranges:
        page = st.scan(lo, hi)
        positions = [keycodec.position(SCHEMA_N, i) for i in page.items]
        assert positions == sorted(positions)
        assert all(lo <= p and (hi is None or p < hi) for p in positions)
        total += [i["pk"]["S"] for i in page.items]
    assert sorted(total) == sorted(f"k{i}" for i in range(200))
    # Paged scan with a limit, resumed by position, in both directions.
    for forward in (True, False):
        seen, start = [], None
        while True:
            page = st.scan(bounds[0], bounds[2], limit=7, start_position=start, forward=forward)
            seen += [keycodec.position(SCHEMA_N, i) for i in page.items]
            if page.last_position is None:
                break
            start = page.last_position
        full = [keycodec.position(SCHEMA_N, i) for i in st.scan(bounds[0], bounds[2]).items]
        assert seen == (full if forward else full[::-1])


def test_checkpoint_and_install_round_trip(tmp_path: Path) -> None:
    a = PartitionState.open(tmp_path / "a", SCHEMA_N)
    a.apply(entries([put("p", str(i)) for i in range(30)]))
    info = a.checkpoint(tmp_path / "ckpt")
    assert info.index == 30
    a.apply([(31, put("p", "999"))])  # after the checkpoint: not in it

    b = PartitionState.open(tmp_path / "b", SCHEMA_N)
    b.apply(entries([put("other", "1")]))
    b.close()
    b = PartitionState.install(tmp_path / "b", info.path, SCHEMA_N)
    assert b.applied_index == 30
    assert b.item_count() == 30
    assert b.get({"pk": {"S": "other"}, "sk": {"N": "1"}}) is None
    assert sks(b.query({"S": "p"}, None)) == [str(i) for i in range(30)]
    b.apply([(31, put("p", "999"))])
    assert a.digest(b"", None) == b.digest(b"", None)
    assert not (tmp_path / "b.old").exists() and not (tmp_path / "b.incoming").exists()
    a.close()
    b.close()


def test_interrupted_install_rolls_back(tmp_path: Path) -> None:
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    s.apply(entries([put("p", "1")]))
    s.close()
    # Crash between moving the old state aside and renaming the checkpoint in.
    (tmp_path / "db").rename(tmp_path / "db.old")
    (tmp_path / "db.incoming").mkdir()
    s = PartitionState.open(tmp_path / "db", SCHEMA_N)
    assert s.applied_index == 1
    assert not (tmp_path / "db.incoming").exists()
    s.close()


def test_digest_equal_for_same_commands_and_differs_on_one_item(tmp_path: Path) -> None:
    cmds = [put(f"k{i}", str(i), v=i) for i in range(50)]
    a = PartitionState.open(tmp_path / "a", SCHEMA_N)
    b = PartitionState.open(tmp_path / "b", SCHEMA_N)
    a.apply(entries(cmds))
    for i, c in enumerate(cmds, 1):  # different batching, same result
        b.apply([(i, c)])
    assert a.digest(b"", None) == b.digest(b"", None)
    assert a.digest(b"", None)[2] == 50
    b._db.put(b"d" + keycodec.position(SCHEMA_N, {"pk": {"S": "k7"}, "sk": {"N": "7"}}), b"\x80")  # bit rot
    assert a.digest(b"", None)[1] != b.digest(b"", None)[1]
    mid = keycodec.hash_space_boundaries(2)[0]
    assert a.digest(b"", mid)[2] + a.digest(mid, None)[2] == 50
    a.close()
    b.close()


def test_scrub_records_digest_at_its_exact_index(tmp_path: Path) -> None:
    a = PartitionState.open(tmp_path / "a", SCHEMA_N)
    b = PartitionState.open(tmp_path / "b", SCHEMA_N)
    scrub = encode_command({"op": "scrub", "start": b"", "end": None})
    log = [put("p", "1"), put("p", "2"), scrub, put("p", "3"), delete("p", "1")]
    assert a.apply(entries(log))[2] == {"ok": True}
    assert a.applied_index == 5
    b.apply(entries(log[:3]))
    expected = b.digest(b"", None)
    b.apply([(4, log[3]), (5, log[4])])
    assert a.scrub_result(3) == expected
    assert b.scrub_result(3) == expected
    assert a.latest_scrub() == expected
    assert a.scrub_result(4) is None
    a.close()
    a = PartitionState.open(tmp_path / "a", SCHEMA_N)
    assert a.scrub_result(3) == expected  # kept in meta once computed
    for i in range(6, 16):
        a.apply([(i, scrub)])
        a.scrub_result(i)
    assert a.scrub_result(3) is None  # only the last few are kept
    assert a.latest_scrub()[0] == 15
    a.close()
    b.close()


def test_reads_during_concurrent_apply_see_whole_batches(st: PartitionState) -> None:
    """Each batch writes 10 items atomically, so a page never sees a partial batch."""

    done = threading.Event()

    def writer() -> None:
        index = 0
        for b in range(100):
            batch = []
            for j in range(10):
                index += 1
                batch.append((index, put("p", str(b * 10 + j))))
            st.apply(batch)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    while not done.is_set():
        page = st.query({"S": "p"}, None, max_bytes=1 << 30)
        assert page.count % 10 == 0
    t.join()
    assert st.query({"S": "p"}, None).count == 1000


def test_prepared_batches_apply_as_apply_does(tmp_path: Path) -> None:
    """The node prepares a batch on its loop and writes it in a thread: the same state and results as apply()."""
    a = PartitionState.open(tmp_path / "a", SCHEMA_N)
    b = PartitionState.open(tmp_path / "b", SCHEMA_N)
    try:
        rounds = [entries([put("p", "1", v=1), put("p", "2", v=2)]),
                  entries([put("p", "1", v=3), delete("p", "2"), None], start=3),
                  entries([put("p", "2", v=4)], start=6)]
        for batch in rounds:
            prepared = b.prepare(batch, (1, "n"))
            assert prepared is not None
            assert b.applied_index == batch[0][0] - 1  # nothing written yet
            b.write_prepared(prepared)
            assert prepared.results == a.apply(batch, (1, "n"))
        assert a.applied_index == b.applied_index == 6
        assert (a.item_count(), a.size_estimate()) == (b.item_count(), b.size_estimate())
        assert sks(a.query({"S": "p"}, None)) == sks(b.query({"S": "p"}, None)) == ["1", "2"]
        assert b.applied_ballot == (1, "n")
        # A batch prepared before another was written is stale: refused, nothing written.
        first = b.prepare(entries([put("p", "3")], start=7))
        second = b.prepare(entries([put("p", "4")], start=7))
        assert first is not None and second is not None
        b.write_prepared(first)
        with pytest.raises(RuntimeError, match="since the batch was prepared"):
            b.write_prepared(second)
        assert b.applied_index == 7 and b.get({"pk": {"S": "p"}, "sk": {"N": "4"}}) is None
        # A scrub entry needs its pinned view: prepare declines, apply() handles it.
        scrub = encode_command({"op": "scrub"})
        assert b.prepare(entries([put("p", "5"), scrub], start=8)) is None
    finally:
        a.close()
        b.close()


def test_try_write_prepared_writes_only_when_it_cannot_block(tmp_path: Path) -> None:
    """The loop's write: done at once when free; refused, with nothing written, while an apply holds the lock."""
    st = PartitionState.open(tmp_path / "s", SCHEMA_N)
    try:
        prepared = st.prepare(entries([put("p", "1", v=1)]), (1, "n"))
        assert prepared is not None
        assert st.try_write_prepared(prepared)
        assert st.applied_index == 1 and st.item_count() == 1
        held, release = threading.Event(), threading.Event()

        def apply_holding_lock() -> None:
            with st._lock:  # what an apply or scrub running in the node's executor does
                held.set()
                release.wait(10)

        t = threading.Thread(target=apply_holding_lock)
        t.start()
        held.wait(10)
        busy = st.prepare(entries([put("p", "2", v=2)], start=2))
        assert busy is not None
        assert not st.try_write_prepared(busy)
        release.set()
        t.join()
        assert st.applied_index == 1 and st.get({"pk": {"S": "p"}, "sk": {"N": "2"}}) is None
        # The fallback prepares again (the refused batch may be consumed) and writes.
        again = st.prepare(entries([put("p", "2", v=2)], start=2))
        assert again is not None and st.try_write_prepared(again)
        assert st.applied_index == 2 and st.item_count() == 2
        # A batch prepared on an older state is refused too.
        stale = st.prepare(entries([put("p", "3")], start=3))
        newer = st.prepare(entries([put("p", "4")], start=3))
        assert stale is not None and newer is not None and st.try_write_prepared(newer)
        assert not st.try_write_prepared(stale)
        assert st.get({"pk": {"S": "p"}, "sk": {"N": "3"}}) is None
    finally:
        st.close()
