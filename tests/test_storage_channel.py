"""The router channel: client calls multiplexed over one WebSocket per storage node.

Real `kynamo storage-node` processes. GroupClient sends its calls over the
channel; the node's own metrics show they arrived there and not as HTTP requests.
Malformed frames and calls get refusals without stopping the node, a restarted
node's channel is reopened by the next call, and a client with channel=False
(what an older node forces) gets the same answers over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from storage_cluster import Cluster

from kynamo.channel_frames import pack_frames, unpack_frame
from kynamo.node_channel import channels_of
from kynamo.storage_client import GroupClient, StorageError

pytestmark = pytest.mark.slow

PID = "p1"
TOKEN = "channel-test-token"


def key(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i}"}}


def put(i: int, value: str) -> dict[str, Any]:
    return {"op": "put", "key": key(i), "item": {**key(i), "v": {"S": value}}}


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = Cluster(tmp_path, 3, token=TOKEN)
    c.start()
    c.create_partition(PID, c.nodes)
    yield c
    c.stop()


def _calls_seen(c: Cluster) -> float:
    return sum(n.metric("kynamo_storage_channel_calls_total") for n in c.nodes)


def test_calls_travel_over_the_channel_and_answer_as_over_http(cluster: Cluster) -> None:
    c = cluster
    members = [n.member for n in c.nodes]
    c.leader(PID)

    async def run() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            chan = GroupClient(session, PID, members)
            http = GroupClient(session, PID, members, channel=False)
            before = _calls_seen(c)
            # Concurrent writes and reads share frames; each caller still gets its own answer.
            results = await asyncio.gather(*(chan.write(put(i, f"v{i}")) for i in range(200)))
            assert len(results) == 200
            got = await asyncio.gather(*(chan.read(key(i), consistent=bool(i % 2)) for i in range(200)))
            assert [g["item"]["v"]["S"] for g in got] == [f"v{i}" for i in range(200)]
            via_channel = _calls_seen(c) - before
            assert via_channel >= 2, "no call used the channel"
            # The same reads over HTTP answer the same, and do not count as channel calls.
            seen = _calls_seen(c)
            for i in (0, 7, 199):
                assert (await http.read(key(i)))["item"] == (await chan.read(key(i)))["item"]
            assert _calls_seen(c) - seen == 3  # only the three channel reads
            # A query and a scan page, and an error answer (a key outside the schema).
            page = await chan.scan(consistent=True)
            assert len(page["items"]) == 200
            with pytest.raises(Exception) as info:
                await chan.write({"op": "put", "key": {"nope": {"S": "x"}}, "item": {"nope": {"S": "x"}}})
            assert getattr(info.value, "name", None) == "BadRequest"

    asyncio.run(run())


def test_malformed_frames_and_calls_are_refused_and_the_node_serves_on(cluster: Cluster) -> None:
    c = cluster
    leader = c.leader(PID)
    url = f"http://{leader.api}/v1/p/channel"

    async def run() -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            # No token: the opening is refused like any /v1/ request.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
            assert refused.value.status == 401
            async with session.ws_connect(url, headers=auth) as ws:
                # Calls that are not [id, op, pid, body]: unknown op and wrong shapes answer by id,
                # entries without an id are dropped; a good call in the same frame still answers.
                frame = [[1, "drop_table", PID, {}], [2, "get", 5, {}], ["only", "three", 1],
                         [3, "get", PID, {"key": key(1), "consistent": True}]]
                await ws.send_bytes(msgpack.packb(frame, use_bin_type=True))
                answers: dict[Any, Any] = {}
                while len(answers) < 3:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    answers.update(dict(msgpack.unpackb(msg.data, raw=False)))
                assert answers[1]["error"] == "UnknownPath"
                assert answers[2]["error"] == "BadRequest"
                assert answers[3] == {"item": None, "rcu": 1.0}
                # A frame that is not msgpack closes this channel (1003), not the node.
                await ws.send_bytes(b"\xc1 not msgpack")
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1003
            assert leader.metric("kynamo_storage_channel_refused_total", 'reason="frame"') == 1
            assert leader.metric("kynamo_storage_channel_refused_total", 'reason="call"') == 3
            # The node still serves, over a new channel.
            client = GroupClient(session, PID, [n.member for n in c.nodes], token=TOKEN)
            await client.write(put(1, "after"))
            assert (await client.get(key(1)))["v"] == {"S": "after"}

    asyncio.run(run())


def test_a_restarted_node_gets_a_new_channel(cluster: Cluster) -> None:
    c = cluster
    leader = c.leader(PID)

    async def run() -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], deadline=30)
            await client.write(put(1, "one"))
            leader.stop()
            leader.start()
            # The old channel died with the process: the calls retry and a new one opens.
            for i in range(2, 40):
                await client.write(put(i, "after restart"))
            got = await asyncio.gather(*(client.read(key(i)) for i in range(1, 40)))
            assert got[0]["item"]["v"] == {"S": "one"}
            assert all(g["item"]["v"] == {"S": "after restart"} for g in got[1:])
        assert leader.metric("kynamo_storage_channel_calls_total") > 0

    asyncio.run(run())


def test_a_stopped_node_loses_its_channel_and_gets_a_new_one_when_it_wakes(cluster: Cluster) -> None:
    """SIGSTOP keeps the TCP connection up: a call that hears nothing back closes the channel."""
    c = cluster
    leader = c.leader(PID)
    follower = next(n for n in c.nodes if n is not leader)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    read = {"key": key(1), "consistent": False}

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            chan = channels_of(session).get(follower.api, auth)
            await chan.call("get", PID, read)  # opens the channel (the answer itself does not matter here)
            opened = chan._conn
            assert opened is not None and not opened.ws.closed
            assert follower.proc is not None
            os.kill(follower.proc.pid, signal.SIGSTOP)
            try:
                with pytest.raises(TimeoutError):
                    await chan.call("get", PID, read)
                await asyncio.sleep(0.5)
                assert opened.ws.closed, "a silent node's channel stays open"
            finally:
                os.kill(follower.proc.pid, signal.SIGCONT)
            doc = await chan.call("get", PID, {"key": key(1), "consistent": False})
            assert chan._conn is not None and chan._conn is not opened
            assert doc.get("error") in (None, "Unavailable")  # a follower may still be catching up

    asyncio.run(run())


def test_a_burst_of_big_answers_leaves_as_several_frames_in_order() -> None:
    """Frames stay near FRAME_TARGET, so a burst of 1 MB pages never exceeds what a receiver takes."""
    big = [[i, {"items": ["x" * 300_000]}] for i in range(10)]
    small = [[i, {"item": None}] for i in range(100)]
    frames = pack_frames(big + small, target=1 << 20)
    assert len(frames) > 3
    assert all(len(f) <= 1 << 20 for f in frames)
    assert [e for f in frames for e in unpack_frame(f)] == big + small
    # One element over the target still goes, alone; the common case is one frame.
    huge = [[1, {"items": ["y" * (2 << 20)]}]]
    assert [unpack_frame(f) for f in pack_frames(huge, target=1 << 20)] == [huge]
    assert len(pack_frames(small)) == 1


def test_eventual_reads_go_to_the_least_busy_node_and_to_the_leader_among_equals(cluster: Cluster) -> None:
    """An eventually consistent read goes to the member whose node has the fewest of this process's
    calls waiting: on a quiet group that is the leader (reads batch on one node), and a node that
    stops answering (SIGSTOP here; a neighbour's load in production) is left alone while it is busy."""
    c = cluster
    leader = c.leader(PID)
    followers = [n for n in c.nodes if n is not leader]
    gets = 'op="get"'

    def served(nodes: list[Any]) -> float:
        return sum(n.metric("kynamo_storage_requests_total", gets) for n in nodes)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], token=TOKEN)
            await client.write(put(1, "a"))  # the client now knows the leader
            on_leader, on_followers = served([leader]), served(followers)
            for _ in range(10):
                assert (await client.get(key(1), consistent=False) or {}).get("v") == {"S": "a"}
            assert served([leader]) == on_leader + 10 and served(followers) == on_followers
            assert leader.proc is not None
            os.kill(leader.proc.pid, signal.SIGSTOP)
            try:
                stuck = asyncio.ensure_future(client.get(key(1), consistent=False))  # waits on the leader
                await asyncio.sleep(0.05)
                assert not stuck.done()
                started = time.monotonic()
                for _ in range(10):
                    assert (await client.get(key(1), consistent=False) or {}).get("v") == {"S": "a"}
                assert time.monotonic() - started < 2, "reads waited on the stopped leader"
                assert served(followers) == on_followers + 10
            finally:
                os.kill(leader.proc.pid, signal.SIGCONT)
            with contextlib.suppress(StorageError):
                await stuck

    asyncio.run(run())


def test_reads_that_need_no_wait_are_answered_at_once_and_strong_reads_on_followers_never(cluster: Cluster) -> None:
    """A `get`/`mget` that needs no wait is answered inside the frame's callback: eventual reads anywhere,
    strong reads on the leader under its lease. A strong read sent to a follower must not be: it takes
    the normal path and answers NotLeader. The node's counter of calls answered at once tells them apart."""
    c = cluster
    leader = c.leader(PID)
    follower = next(n for n in c.nodes if n is not leader)
    at_once = "kynamo_storage_channel_calls_at_once_total"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def frame(session: aiohttp.ClientSession, node: Any, calls: list[list[Any]]) -> dict[Any, Any]:
        async with session.ws_connect(f"http://{node.api}/v1/p/channel", headers=auth) as ws:
            await ws.send_bytes(msgpack.packb(calls, use_bin_type=True))
            answers: dict[Any, Any] = {}
            while len(answers) < len(calls):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                answers.update(dict(msgpack.unpackb(msg.data, raw=False)))
            return answers

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], token=TOKEN)
            await client.write(put(1, "a"))
            await client.write(put(2, "b"))
            deadline = time.monotonic() + 10
            while (await frame(session, follower, [[0, "get", PID, {"key": key(2), "consistent": False}]]))[0].get(
                    "item") is None:  # the follower has applied the writes
                assert time.monotonic() < deadline, "the follower never caught up"
                await asyncio.sleep(0.05)
            before = follower.metric(at_once)
            answers = await frame(session, follower, [
                [1, "get", PID, {"key": key(1), "consistent": False}],
                [2, "get", PID, {"key": key(1), "consistent": True}],
                [3, "mget", PID, {"keys": [key(1), key(2)], "consistent": False}],
                [4, "get", "no-such-partition", {"key": key(1), "consistent": False}],
            ])
            assert answers[1]["item"]["v"] == {"S": "a"}
            assert answers[2]["error"] == "NotLeader"
            assert [i["v"]["S"] for i in answers[3]["items"]] == ["a", "b"]
            assert "error" in answers[4] and "item" not in answers[4]
            assert follower.metric(at_once) - before == 3  # 1, 3 and 4; never the strong read
            before = leader.metric(at_once)
            for _ in range(5):
                got = await frame(session, leader, [[5, "get", PID, {"key": key(2), "consistent": True}]])
                assert got[5]["item"]["v"] == {"S": "b"}
            assert leader.metric(at_once) - before >= 1  # under a valid lease (one may lapse between heartbeats)

    asyncio.run(run())
