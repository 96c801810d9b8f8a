"""Storage nodes serve their HTTP API only to holders of the client token, frames only to peers.

Real `kynamo storage-node` processes with KYNAMO_CLIENT_TOKEN / KYNAMO_PEER_TOKEN in their
environment; requests without the token or with a wrong one get 401 `Unauthorized` in the wire
shape of the API called (msgpack for clients, JSON for admin) and change nothing, read back with
the right token. Peers with the token install snapshots and scrub; a peer with the wrong peer
token never joins.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from storage_cluster import Cluster

from kynamo.storage_client import GroupClient, StorageError

pytestmark = pytest.mark.slow

TOKEN = "client-token-for-tests"
PEER = "peer-token-for-tests"
PID = "p1"
KEY = {"pk": {"S": "k"}}


def item(value: str) -> dict[str, Any]:
    return {**KEY, "v": {"S": value}}


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Cluster] = []

    def make(size: int, extra: list[str] | None = None, **kw: Any) -> Cluster:
        c = Cluster(tmp_path, size, extra, token=TOKEN, peer_token=PEER, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


async def raw(session: aiohttp.ClientSession, method: str, url: str, body: Any = None, *,
              token: str | None = None, msgpack_body: bool = False) -> tuple[int, dict[str, Any], str]:
    """(status, decoded body, content type) of one request, presenting `token` if given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if msgpack_body:
        data = msgpack.packb(body, use_bin_type=True)
        headers["Content-Type"] = "application/x-msgpack"
    else:
        data = None if body is None else json.dumps(body).encode()
    async with session.request(method, url, data=data, headers=headers) as resp:
        payload = await resp.read()
        ctype = resp.content_type
        if ctype == "application/x-msgpack":
            doc = msgpack.unpackb(payload, raw=False)
        else:
            doc = json.loads(payload or b"{}")
        return resp.status, doc, ctype


async def refused(c: Cluster, token: str) -> None:
    """A GroupClient presenting `token` gets Unauthorized from the group."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(StorageError) as info:
            await GroupClient(session, PID, [n.member for n in c.nodes], token=token).get(KEY)
        assert info.value.name == "Unauthorized"


def test_without_the_client_token_nothing_reaches_a_replica(cluster) -> None:  # type: ignore[no-untyped-def]
    c = cluster(3)
    c.start()
    c.create_partition(PID, c.nodes)
    leader = c.leader(PID)
    base = f"http://{leader.api}"

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], token=TOKEN)
            await client.write({"op": "put", "key": KEY, "item": item("original")})
            served_before = leader.metric("kynamo_storage_requests_total")
            refused_before = leader.metric("kynamo_storage_unauthorized_requests_total")
            before = c.status(leader, PID)
            assert before is not None

            client_calls = [
                ("write", {"cmd": {"op": "put", "key": KEY, "item": item("overwritten")}}),
                ("write", {"cmd": {"op": "delete", "key": KEY}}),
                ("get", {"key": KEY, "consistent": True}),
                ("mget", {"keys": [KEY], "consistent": False}),
                ("query", {"pk": KEY["pk"]}),
                ("scan", {}),
            ]
            admin_calls = [
                ("GET", "/v1/partitions", None),
                ("GET", f"/v1/partitions/{PID}", None),
                ("PUT", "/v1/partitions/intruder", {"table": "t", "key_schema": {"pk": "pk", "pk_type": "S"},
                                                     "replicas": [leader.member]}),
                ("POST", f"/v1/partitions/{PID}/membership", {"action": "remove", "member": c.nodes[0].member}),
                ("POST", f"/v1/partitions/{PID}/campaign", {}),
                ("POST", f"/v1/partitions/{PID}/scrub", {}),
                ("POST", f"/v1/partitions/{PID}/split", {"at": "80", "children": ["a", "b"], "epoch": 2}),
                ("GET", f"/v1/partitions/{PID}/load", None),
                ("POST", f"/v1/partitions/{PID}/snapshot", None),
                ("DELETE", f"/v1/partitions/{PID}", None),
            ]
            refused = 0
            for token in (None, "wrong-token", "", TOKEN + "x"):
                for op, body in client_calls:
                    status, doc, ctype = await raw(session, "POST", f"{base}/v1/p/{PID}/{op}", body, token=token,
                                                   msgpack_body=True)
                    assert (status, doc.get("error"), ctype) == (401, "Unauthorized", "application/x-msgpack"), doc
                    refused += 1
                for method, path, body in admin_calls:
                    status, doc, ctype = await raw(session, method, base + path, body, token=token)
                    assert (status, doc.get("error"), ctype) == (401, "Unauthorized", "application/json"), doc
                    refused += 1
            # A token in another scheme is no token.
            async with session.get(f"{base}/v1/partitions", headers={"Authorization": f"Basic {TOKEN}"}) as r:
                assert r.status == 401
                refused += 1

            # Probes and metrics stay open.
            for path in ("/healthz", "/readyz", "/metrics"):
                async with session.get(base + path) as r:
                    assert r.status == 200, path

            assert leader.metric("kynamo_storage_unauthorized_requests_total") - refused_before == refused
            assert leader.metric("kynamo_storage_requests_total") == served_before, "a refused request was served"
            # Nothing changed: the item, the group, the hosted partitions (read with the token).
            got = await client.get(KEY, consistent=True)
            assert got is not None and got["v"] == {"S": "original"}
            after = c.status(leader, PID)
            assert after is not None and after["replicas"] == before["replicas"]
            assert after["commit_index"] == before["commit_index"], "a refused request reached the log"
            status, doc, _ = await raw(session, "GET", f"{base}/v1/partitions", token=TOKEN)
            assert status == 200 and [p["partition_id"] for p in doc["partitions"]] == [PID], doc
            # And a GroupClient without the token gets the error at once, not a retry loop.
            stranger = GroupClient(session, PID, [n.member for n in c.nodes], deadline=30)
            with pytest.raises(StorageError) as info:
                await stranger.get(KEY)
            assert info.value.name == "Unauthorized" and stranger.retries == 0

    asyncio.run(run())


def test_peers_present_the_token_for_snapshots_and_scrub(cluster) -> None:  # type: ignore[no-untyped-def]
    """A new replica behind a compacted log catches up by snapshot: the leader's HTTP call carries the token."""
    c = cluster(4, ["--log-retention", "20"])
    c.start()
    full, spare = c.nodes[:3], c.nodes[3]
    c.create_partition(PID, full)
    leader = c.leader(PID)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in full], token=TOKEN)
            for i in range(120):
                await client.write({"op": "put", "key": {"pk": {"S": f"k{i}"}}, "item": {"pk": {"S": f"k{i}"}}})
            st = c.status(leader, PID)
            assert st is not None and st["log_start"] > 1, st
            await raw(session, "PUT", f"http://{spare.api}/v1/partitions/{PID}", {
                "table": "t", "key_schema": {"pk": "pk", "pk_type": "S"},
                "replicas": [*st["replicas"], spare.member], "log_replicas": []}, token=TOKEN)
            c.membership(PID, "add", spare.member)
            deadline = time.time() + 30
            while time.time() < deadline:
                mine, lead = c.status(spare, PID), c.status(leader, PID)
                if mine and lead and mine.get("serving") and mine["applied_index"] >= lead["commit_index"]:
                    break
                await asyncio.sleep(0.1)
            assert spare.metric("kynamo_storage_snapshots_installed_total") >= 1
            assert spare.metric("kynamo_storage_unauthorized_requests_total") == 0
            status, report, _ = await raw(session, "POST", f"http://{leader.api}/v1/partitions/{PID}/scrub", {},
                                          token=TOKEN)
            assert status == 200 and report["divergent"] == [] and len(report["digests"]) == 4, report
            eventual = GroupClient(session, PID, [spare.member], token=TOKEN)
            assert await eventual.get({"pk": {"S": "k7"}}, consistent=False) == {"pk": {"S": "k7"}}

    asyncio.run(run())


def test_a_peer_with_the_wrong_peer_token_never_joins(cluster) -> None:  # type: ignore[no-untyped-def]
    c = cluster(2)
    intruder = c.add_node(env={"KYNAMO_PEER_TOKEN": "not-the-peer-token"})
    c.start()
    good = c.nodes[:2]
    # The intruder is listed as a member, but every frame to or from it is refused at the handshake.
    c.create_partition(PID, [intruder, *good])
    leader = c.leader(PID, among=good)

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in good], token=TOKEN)
            for i in range(20):
                await client.write({"op": "put", "key": {"pk": {"S": f"k{i}"}}, "item": {"pk": {"S": f"k{i}"}}})
            lead = c.status(leader, PID)
            assert lead is not None and lead["commit_index"] >= 20
            mine = c.status(intruder, PID)
            assert mine is not None and not mine["is_leader"] and mine["applied_index"] == 0, mine
            assert intruder.metric("kynamo_storage_peer_frames_total", 'direction="received"') == 0
            # The members counted the frames they exchanged (exported at scrape, so read twice).
            sent = leader.metric("kynamo_storage_peer_frames_total", 'direction="sent"')
            follower = next(n for n in good if n is not leader)
            assert sent >= 20 and follower.metric("kynamo_storage_peer_frames_total", 'direction="received"') >= 20
            await client.write({"op": "put", "key": {"pk": {"S": "again"}}, "item": {"pk": {"S": "again"}}})
            assert leader.metric("kynamo_storage_peer_frames_total", 'direction="sent"') > sent
            # It never heard the leader: it refuses eventual reads rather than serve its empty state.
            eventual = GroupClient(session, PID, [intruder.member], token=TOKEN, deadline=0.5)
            with pytest.raises(StorageError) as err:
                await eventual.get({"pk": {"S": "k1"}}, consistent=False)
            assert err.value.name == "Unavailable" and "catching up" in str(err.value), err.value
        assert intruder.log_path is not None and "rejected" in intruder.log_path.read_text()

    asyncio.run(run())


def test_rotation_is_a_restart_with_the_new_tokens(cluster) -> None:  # type: ignore[no-untyped-def]
    """The documented rotation: stop, restart every node with new tokens; data stays, the old token is refused."""
    c = cluster(3)
    c.start()
    c.create_partition(PID, c.nodes)
    c.leader(PID)

    async def write_then_read(token: str, value: str | None, expect: str) -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], deadline=20, token=token)
            if value is not None:
                await client.write({"op": "put", "key": KEY, "item": item(value)})
            got = await client.get(KEY, consistent=True)
            assert got is not None and got["v"] == {"S": expect}

    asyncio.run(write_then_read(TOKEN, "before", "before"))
    c.stop()
    new = {"KYNAMO_CLIENT_TOKEN": "rotated-client", "KYNAMO_PEER_TOKEN": "rotated-peer"}
    for node in c.nodes:
        node.env.update(new)
        node.proc = None
    c.token = new["KYNAMO_CLIENT_TOKEN"]
    c.start()
    c.leader(PID, timeout=20)  # the peers agree on the new peer token: the group elects again
    asyncio.run(write_then_read("rotated-client", None, "before"))  # the data survived the rotation
    asyncio.run(write_then_read("rotated-client", "after", "after"))

    asyncio.run(refused(c, TOKEN))  # the old token no longer opens anything


def test_rotation_without_downtime_by_rolling_restarts_with_token_lists(cluster) -> None:  # type: ignore[no-untyped-def]
    """Token lists: a node accepts any listed token, a caller presents the first.

    Three rolling restarts, one node at a time, each waiting until the restarted node has caught up
    (so its peers took its frames and it took theirs): "old,new" (accept both, present old), then
    "new,old" (present new), then "new". Writes succeed after every restart; the old token ends refused.
    """
    c = cluster(3)
    c.start()
    c.create_partition(PID, c.nodes)
    c.leader(PID)
    writes = 0

    async def write_and_read(token: str) -> None:
        nonlocal writes
        writes += 1
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in c.nodes], deadline=20, token=token)
            await client.write({"op": "put", "key": KEY, "item": item(f"w{writes}")})
            got = await client.get(KEY, consistent=True)
            assert got is not None and got["v"] == {"S": f"w{writes}"}

    def caught_up(node: Any) -> None:
        deadline = time.time() + 20
        while time.time() < deadline:
            lead = c.status(c.leader(PID, timeout=20), PID)
            mine = c.status(node, PID)
            if lead and mine and mine["applied_index"] >= lead["commit_index"] > 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"node {node.index} did not catch up after its restart")

    asyncio.run(write_and_read(TOKEN))
    steps = [(f"{TOKEN},rotated-client", f"{PEER},rotated-peer", TOKEN),
             (f"rotated-client,{TOKEN}", f"rotated-peer,{PEER}", f"rotated-client,{TOKEN}"),
             ("rotated-client", "rotated-peer", "rotated-client")]
    for client_tokens, peer_tokens, caller in steps:
        for node in c.nodes:
            node.stop()
            node.env.update({"KYNAMO_CLIENT_TOKEN": client_tokens, "KYNAMO_PEER_TOKEN": peer_tokens})
            node.proc = None
            node.start()
            c.token = "rotated-client" if caller != TOKEN else TOKEN  # the admin calls of the cluster helper
            asyncio.run(write_and_read(caller))
            caught_up(node)
    asyncio.run(write_and_read("rotated-client"))

    asyncio.run(refused(c, TOKEN))  # the old token no longer opens anything
    for node in c.nodes:  # frames flowed under the new peer token: every replica has the last write
        caught_up(node)
