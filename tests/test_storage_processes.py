"""Real storage-node processes on loopback: failover, log-replicas, corruption.

Every test starts `kynamo storage-node` processes, drives them through the
same client API a router uses, and checks that no acknowledged write is lost.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from storage_cluster import Cluster, Node, http_json

from kynamo.storage_client import GroupClient, StorageError

pytestmark = pytest.mark.slow

PID = "p1"


def item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i:05d}"}, "n": {"N": str(i)}, "v": {"S": "x" * 100}}


async def write_range(
    client: GroupClient,
    numbers: range,
    acked: dict[str, int],
    *,
    concurrency: int = 32,
    on_ack: Any = None,
) -> None:
    it = iter(numbers)

    async def worker() -> None:
        for i in it:
            doc = item(i)
            sent = time.monotonic()
            while True:
                try:
                    res = await client.write({"op": "put", "key": {"pk": doc["pk"]}, "item": doc})
                    break
                except StorageError as err:
                    if err.name not in ("OutcomeUnknown", "Unavailable"):
                        raise
            assert res.get("ok"), res
            acked[doc["pk"]["S"]] = i
            if on_ack is not None:
                on_ack(len(acked), sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def verify_all(client: GroupClient, acked: dict[str, int]) -> None:
    keys = list(acked)
    missing: list[str] = []

    async def worker(chunk: list[str]) -> None:
        for key in chunk:
            got = await client.get({"pk": {"S": key}}, consistent=True)
            if got is None or got["n"]["N"] != str(acked[key]):
                missing.append(key)

    await asyncio.gather(*(worker(keys[i::16]) for i in range(16)))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def wait_caught_up(cluster: Cluster, node: Node, leader: Node, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    st: dict[str, Any] | None = None
    while time.time() < deadline:
        lead = cluster.status(leader, PID)
        st = cluster.status(node, PID)
        if st and lead and st.get("serving") and st.get("applied_index", -1) >= lead["commit_index"]:
            return st
        time.sleep(0.1)
    raise AssertionError(f"{node.member} did not catch up: {st}")


def scrub(leader: Node) -> dict[str, Any]:
    return http_json("POST", f"http://{leader.api}/v1/partitions/{PID}/scrub", {})


@pytest.fixture
def cluster_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Cluster] = []

    def make(size: int, extra: list[str] | None = None) -> Cluster:
        c = Cluster(tmp_path, size, extra)
        made.append(c)
        c.start()
        return c

    yield make
    for c in made:
        c.stop()


@pytest.mark.parametrize("sync_flag", ["--aio-fsync", "--no-aio-fsync"])
def test_kill9_leader_midway_loses_no_acknowledged_write(cluster_factory, sync_flag: str) -> None:  # type: ignore[no-untyped-def]
    """Both ways of syncing the WAL: the event loop's native AIO, and a thread (the fallback)."""
    cluster = cluster_factory(3, [sync_flag])
    cluster.create_partition(PID, cluster.nodes)
    old_leader = cluster.leader(PID)
    acked: dict[str, int] = {}
    killed_at: list[float] = []
    first_ack_after_kill: list[float] = []

    def on_ack(count: int, sent: float) -> None:
        # Only a write sent after the kill proves the new leader: earlier replies may
        # still sit in the client's socket buffers.
        if killed_at and not first_ack_after_kill and sent > killed_at[0]:
            first_ack_after_kill.append(time.monotonic())
        if count == 5000 and not killed_at:
            old_leader.kill9()
            killed_at.append(time.monotonic())

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in cluster.nodes], deadline=20)
            await write_range(client, range(10_000), acked, on_ack=on_ack)
            assert len(acked) == 10_000
            gap = first_ack_after_kill[0] - killed_at[0]
            print(f"\nfailover: first write acknowledged by the new leader {gap * 1000:.0f} ms after kill -9")
            assert gap < 2.0, f"new leader took {gap:.2f}s to accept writes"
            old_leader.start()
            new_leader = cluster.leader(PID)
            assert new_leader is not old_leader
            wait_caught_up(cluster, old_leader, new_leader)
            await verify_all(client, acked)
            report = scrub(new_leader)
            assert report["divergent"] == [], report
            assert len(report["digests"]) == 3, report

    asyncio.run(run())


def test_log_replica_keeps_quorum_then_full_rebuild_by_snapshot(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(5, ["--log-retention", "20"])
    full = cluster.nodes[:3]
    log_node, spare = cluster.nodes[3], cluster.nodes[4]
    cluster.create_partition(PID, full)
    leader = cluster.leader(PID)
    followers = [n for n in full if n is not leader]
    acked: dict[str, int] = {}

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in cluster.nodes], deadline=20)
            await write_range(client, range(0, 600), acked)

            lost = followers[0]
            lost.kill9()
            # Restore the quorum's width at once with a log-replica, then drop the dead member.
            spec = cluster.status(leader, PID)
            assert spec is not None
            http_json(
                "PUT",
                f"http://{log_node.api}/v1/partitions/{PID}",
                {
                    "table": "t",
                    "key_schema": {"pk": "pk", "pk_type": "S"},
                    "replicas": spec["replicas"],
                    "log_replicas": [log_node.member],
                },
            )
            cluster.membership(PID, "add", log_node.member, "log-replica")
            cluster.membership(PID, "remove", lost.member)
            await write_range(client, range(600, 1200), acked)

            # The log-replica's acknowledgements count: with the other full follower down,
            # the leader and the log-replica alone still commit.
            other = followers[1]
            other.kill9()
            await write_range(client, range(1200, 1500), acked)
            log_status = cluster.status(log_node, PID)
            assert log_status is not None and log_status["role"] == "log-replica"
            assert log_status["last_index"] >= cluster.status(leader, PID)["commit_index"] - 5
            other.start()
            wait_caught_up(cluster, other, leader)

            # Rebuild a full replica on a fresh process: the log has been compacted
            # behind a 20-entry retention, so it must arrive by snapshot install.
            st = cluster.status(leader, PID)
            assert st is not None and st["log_start"] > 1, st
            http_json(
                "PUT",
                f"http://{spare.api}/v1/partitions/{PID}",
                {
                    "table": "t",
                    "key_schema": {"pk": "pk", "pk_type": "S"},
                    "replicas": [*st["replicas"], spare.member],
                    "log_replicas": st["log_replicas"],
                },
            )
            cluster.membership(PID, "add", spare.member)
            wait_caught_up(cluster, spare, leader)
            assert spare.metric("kynamo_storage_snapshots_installed_total") >= 1
            cluster.membership(PID, "remove", log_node.member)
            http_json("DELETE", f"http://{log_node.api}/v1/partitions/{PID}")
            await write_range(client, range(1500, 1700), acked)

            final = cluster.status(leader, PID)
            assert final is not None
            assert sorted(final["replicas"]) == sorted([leader.member, other.member, spare.member])
            assert final["log_replicas"] == []
            await verify_all(client, acked)
            report = scrub(leader)
            assert report["divergent"] == [] and len(report["digests"]) == 3, report

    asyncio.run(run())


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x5A]))


def test_wal_corruption_detected_refused_and_repaired(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    leader = cluster.leader(PID)
    victim = next(n for n in cluster.nodes if n is not leader)
    acked: dict[str, int] = {}

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in cluster.nodes], deadline=20)
            await write_range(client, range(0, 400), acked)
            victim.stop()
            segments = sorted((victim.data_dir / "partitions" / PID / "wal").glob("*.log"))
            assert segments, "no WAL segment on disk"
            seg = segments[0]
            records = len(seg.read_bytes().rstrip(b"\0"))  # the segment is preallocated: zeros follow
            flip_byte(seg, records // 3)
            victim.start()
            # Detected: counted in a metric (and logged), refused until repaired.
            deadline = time.time() + 10
            while time.time() < deadline and victim.metric("kynamo_storage_wal_corruption_total") < 1:
                time.sleep(0.1)
            assert victim.metric("kynamo_storage_wal_corruption_total") >= 1
            # Writes go on meanwhile; the replica comes back through remove + snapshot + add.
            await write_range(client, range(400, 600), acked)
            st = wait_caught_up(cluster, victim, cluster.leader(PID), timeout=40)
            assert st["corrupt"] is None
            await verify_all(client, acked)
            report = scrub(cluster.leader(PID))
            assert report["divergent"] == [] and len(report["digests"]) == 3, report
            log_text = victim.log_path.read_text() if victim.log_path else ""
            assert "WAL corruption" in log_text

    asyncio.run(run())


def test_client_api_errors_router_can_act_on(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    leader = cluster.leader(PID)
    follower = next(n for n in cluster.nodes if n is not leader)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            direct = GroupClient(session, PID, [follower.member], deadline=0.5)
            with pytest.raises(StorageError) as err:
                await direct._post(follower.api, "write", {"cmd": {"op": "put", "key": {"pk": {"S": "a"}},
                                                                     "item": {"pk": {"S": "a"}}}})
            assert err.value.name == "NotLeader"
            assert err.value.doc["leader_api"] == leader.api
            stale = GroupClient(session, PID, [leader.member], epoch=7)
            with pytest.raises(StorageError) as err:
                await stale.write({"op": "put", "key": {"pk": {"S": "a"}}, "item": {"pk": {"S": "a"}}})
            assert err.value.name == "StaleEpoch" and err.value.doc["epoch"] == 1
            missing = GroupClient(session, "nope", [leader.member], deadline=0.3)
            with pytest.raises(StorageError) as err:
                await missing.get({"pk": {"S": "a"}})
            assert err.value.name == "NoSuchPartition"
            ok = GroupClient(session, PID, [n.member for n in cluster.nodes])
            res = await ok.write({"op": "put", "key": {"pk": {"S": "a"}}, "item": {"pk": {"S": "a"}, "x": {"N": "1"}},
                                  "cond": ["attribute_not_exists(pk)", None, None], "rv": "NONE"})
            assert res.get("ok"), res
            res = await ok.write({"op": "put", "key": {"pk": {"S": "a"}}, "item": {"pk": {"S": "a"}},
                                  "cond": ["attribute_not_exists(pk)", None, None], "rv": "NONE"})
            assert res["err"] == "ConditionalCheckFailedException"
            res = await ok.write({"op": "update", "key": {"pk": {"S": "a"}},
                                  "update": ["SET x = x + :one", None, {":one": {"N": "41"}}], "rv": "ALL_NEW"})
            assert res["ok"] and res["attrs"]["x"] == {"N": "42"}
            # Garbage bodies get a 400 with a name, never a 500.
            async with session.post(f"http://{leader.api}/v1/p/{PID}/write", data=b"\xc1\xff") as resp:
                assert resp.status == 400
            with pytest.raises(urllib.error.HTTPError) as http_err:
                http_json("PUT", f"http://{leader.api}/v1/partitions/x", {"nonsense": 1})
            assert http_err.value.code == 400

    asyncio.run(run())


def test_corrupt_peer_frame_is_dropped_counted_and_never_applied(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    import socket

    from kynamo.storage_node.codec import encode_frame
    from kynamo.storage_node.commands import encode_command
    from kynamo.storage_node.paxos_types import Accept, Entry, EntryKind
    from kynamo.storage_node.transport import handshake_bytes

    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    leader = cluster.leader(PID)
    follower = next(n for n in cluster.nodes if n is not leader)
    acked: dict[str, int] = {}

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in cluster.nodes])
            await write_range(client, range(0, 50), acked)
            st = cluster.status(follower, PID)
            assert st is not None
            # A well-formed Accept from the real leader's id and ballot, carrying a forged
            # write; one flipped bit in transit must keep it out of the log.
            forged = {"op": "put", "key": {"pk": {"S": "forged"}}, "item": {"pk": {"S": "forged"}}}
            index = st["last_index"] + 1
            ballot = (st["ballot"][0], st["ballot"][1])
            entry = Entry(index, ballot, EntryKind.COMMAND, encode_command(forged))
            accept = Accept(leader.member, follower.member, ballot, index, (entry,), st["commit_index"], 0.0)
            frame = bytearray(encode_frame([(PID, accept)]))
            frame[len(frame) // 2] ^= 0x01
            before = follower.metric("kynamo_storage_corrupt_frames_total")
            with socket.create_connection(("127.0.0.1", follower.peer_port)) as sock:
                sock.sendall(handshake_bytes(f"127.0.0.1:{leader.peer_port}", None))
                sock.recv(1)
                sock.sendall(bytes(frame))
                deadline = time.time() + 5
                while time.time() < deadline and follower.metric("kynamo_storage_corrupt_frames_total") <= before:
                    time.sleep(0.05)
            assert follower.metric("kynamo_storage_corrupt_frames_total") == before + 1
            await write_range(client, range(50, 100), acked)
            await verify_all(client, acked)
            assert await client.get({"pk": {"S": "forged"}}, consistent=True) is None
            eventual = GroupClient(session, PID, [follower.member])
            assert await eventual.get({"pk": {"S": "forged"}}, consistent=False) is None
            assert scrub(leader)["divergent"] == []

    asyncio.run(run())


def test_many_groups_per_process_reopen_after_restart_and_export_metrics(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(3)
    groups = [f"g{i:02d}" for i in range(20)]
    for i, pid in enumerate(groups):
        # Spread first leaders over the processes, as a control plane would.
        order = cluster.nodes[i % 3 :] + cluster.nodes[: i % 3]
        cluster.create_partition(pid, order)
    for pid in groups:
        cluster.leader(pid)

    async def write_all() -> None:
        async with aiohttp.ClientSession() as session:
            for pid in groups:
                client = GroupClient(session, pid, [n.member for n in cluster.nodes])
                for j in range(10):
                    doc = {"pk": {"S": f"{pid}-{j}"}, "v": {"N": str(j)}}
                    res = await client.write({"op": "put", "key": {"pk": doc["pk"]}, "item": doc})
                    assert res.get("ok"), res

    asyncio.run(write_all())
    victim = cluster.nodes[1]
    victim.stop()
    victim.start()
    hosted = http_json("GET", f"http://{victim.api}/v1/partitions")["partitions"]
    assert sorted(p["partition_id"] for p in hosted) == groups

    async def read_all() -> None:
        async with aiohttp.ClientSession() as session:
            for pid in groups:
                client = GroupClient(session, pid, [n.member for n in cluster.nodes])
                for j in range(10):
                    got = await client.get({"pk": {"S": f"{pid}-{j}"}}, consistent=True)
                    assert got is not None and got["v"] == {"N": str(j)}
            # After catching up, the restarted process serves eventually consistent reads itself.
            deadline = time.time() + 15
            local = GroupClient(session, groups[0], [victim.member])
            while time.time() < deadline:
                if await local.get({"pk": {"S": f"{groups[0]}-9"}}, consistent=False) is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("restarted replica never caught up")

    asyncio.run(read_all())
    leader = cluster.leader(groups[0])
    for name in (
        "kynamo_storage_requests_total",
        "kynamo_storage_request_seconds_count",
        "kynamo_storage_commit_index",
        "kynamo_storage_applied_index",
        "kynamo_storage_is_leader",
        "kynamo_storage_ballot_round",
        "kynamo_storage_elections_started_total",
        "kynamo_storage_wal_bytes_total",
        "kynamo_storage_wal_fsync_seconds_count",
        "kynamo_storage_consumed_write_capacity_units_total",
        "kynamo_storage_consumed_read_capacity_units_total",
        "kynamo_storage_item_count",
        "kynamo_storage_size_bytes",
        "kynamo_storage_hot_key_share",
    ):
        assert leader.metric(name) > 0, f"{name} missing or zero on the leader"
    assert leader.metric("kynamo_storage_item_count", f'partition="{groups[0]}"') == 10


def test_concurrent_writes_share_batches_but_keep_their_own_results(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    leader = cluster.leader(PID)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [leader.member])
            await client.write({"op": "put", "key": {"pk": {"S": "taken"}}, "item": {"pk": {"S": "taken"}}})
            before = leader.metric("kynamo_storage_requests_total", 'op="write"')
            cmds = [
                {"op": "put", "key": {"pk": {"S": f"b{i}"}}, "item": {"pk": {"S": f"b{i}"}, "i": {"N": str(i)}}}
                for i in range(64)
            ]
            # One write in the crowd fails its condition; only it may fail.
            cmds[17] = {"op": "put", "key": {"pk": {"S": "taken"}}, "item": {"pk": {"S": "taken"}},
                        "cond": ["attribute_not_exists(pk)", None, None]}
            results = await asyncio.gather(*(client.write(c) for c in cmds))
            requests = leader.metric("kynamo_storage_requests_total", 'op="write"') - before
            assert results[17]["err"] == "ConditionalCheckFailedException"
            assert all(r.get("ok") for i, r in enumerate(results) if i != 17)
            assert requests < 64 / 4, f"{requests} requests for 64 concurrent writes: no batching"
            for i in range(64):
                if i != 17:
                    got = await client.get({"pk": {"S": f"b{i}"}})
                    assert got is not None and got["i"] == {"N": str(i)}

    asyncio.run(run())


def test_concurrent_reads_share_mget_requests_but_keep_their_own_answers(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    leader = cluster.leader(PID)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [leader.member])
            await asyncio.gather(*(client.write({"op": "put", "key": {"pk": {"S": f"r{i}"}},
                                                 "item": {"pk": {"S": f"r{i}"}, "i": {"N": str(i)}}})
                                   for i in range(0, 64, 2)))
            before = leader.metric("kynamo_storage_requests_total", 'op="mget"')
            keys: list[Any] = [{"pk": {"S": f"r{i}"}} for i in range(64)]
            keys[5] = {"nope": {"S": "x"}}  # a bad key fails alone
            results = await asyncio.gather(*(client.read(k, consistent=True) for k in keys),
                                           return_exceptions=True)
            assert isinstance(results[5], StorageError) and results[5].name == "BadRequest"
            for i, doc in enumerate(results):
                if i == 5:
                    continue
                assert isinstance(doc, dict), doc
                if i % 2:
                    assert doc["item"] is None and doc["rcu"] == 1
                else:
                    assert doc["item"]["i"] == {"N": str(i)} and doc["rcu"] == 1
            assert leader.metric("kynamo_storage_requests_total", 'op="mget"') - before >= 1
            # A write acknowledged before a strong read starts is always seen by it.
            for n in range(20):
                await client.write({"op": "put", "key": {"pk": {"S": "r0"}},
                                    "item": {"pk": {"S": "r0"}, "i": {"N": str(n)}}})
                got = await asyncio.gather(*(client.get({"pk": {"S": "r0"}}) for _ in range(8)))
                assert all(g is not None and g["i"] == {"N": str(n)} for g in got)

    asyncio.run(run())


def test_handover_moves_leadership_under_writes_and_loses_nothing(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    """`POST /v1/partitions/{pid}/handover` while writers run: the named follower leads within moments
    (no election timeout waited out), writers only retry, every acknowledged write is there after."""
    cluster = cluster_factory(3)
    cluster.create_partition(PID, cluster.nodes)
    old = cluster.leader(PID)
    target = next(n for n in cluster.nodes if n is not old)
    acked: dict[str, int] = {}
    handed: list[dict[str, Any]] = []

    def on_ack(count: int, sent: float) -> None:
        if count == 1500 and not handed:
            started = time.monotonic()
            doc = http_json("POST", f"http://{old.api}/v1/partitions/{PID}/handover", {"to": target.member})
            handed.append({**doc, "took": time.monotonic() - started})

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in cluster.nodes], deadline=20)
            await write_range(client, range(3000), acked, on_ack=on_ack, concurrency=8)
            assert len(acked) == 3000
            assert handed and handed[0]["handed_over"] is True, handed
            print(f"\nhandover under writes: {handed[0]['took'] * 1000:.0f} ms")
            assert handed[0]["took"] < 0.45, handed  # under the 0.5 s election timeout: none was waited out
            assert cluster.leader(PID) is target
            await verify_all(client, acked)
            report = scrub(target)
            assert report["divergent"] == [], report
        assert old.metric("kynamo_storage_handovers_total", 'outcome="done"') == 1
        # A follower cannot hand over, and a log-replica or stranger is no target.
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_json("POST", f"http://{old.api}/v1/partitions/{PID}/handover", {"to": "nobody:1:2"})
        assert refused.value.code in (400, 409, 421, 503)

    asyncio.run(run())
