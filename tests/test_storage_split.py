"""Splitting a partition through its own log, on real storage-node processes.

Writes keep flowing while the split commits: whatever the parent acknowledged is
in a child, writes refused by the frozen parent are retried on the child that
owns the key, and the parent keeps serving reads of its final state.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from storage_cluster import Cluster, http_json

from kynamo.keycodec import KeySchema, position
from kynamo.storage_client import GroupClient, StorageError

pytestmark = pytest.mark.slow

SCHEMA = KeySchema("pk", "S")


def key(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i:04d}"}}


def test_split_under_writes_loses_nothing_and_survives_restart(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.start()
    try:
        cluster.create_partition("p", cluster.nodes)
        leader = cluster.leader("p")
        positions = sorted(position(SCHEMA, key(i)) for i in range(400))
        at = positions[200]
        acked: dict[str, int] = {}
        refused: list[str] = []

        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                members = [n.member for n in cluster.nodes]
                parent = GroupClient(session, "p", members)
                children = {
                    "p-a": GroupClient(session, "p-a", members, epoch=2),
                    "p-b": GroupClient(session, "p-b", members, epoch=2),
                }

                def owner(i: int) -> GroupClient:
                    return children["p-a"] if position(SCHEMA, key(i)) < at else children["p-b"]

                async def put(i: int) -> None:
                    cmd = {"op": "put", "key": key(i), "item": {**key(i), "n": {"N": str(i)}}}
                    try:
                        res = await parent.write(cmd)
                    except StorageError as err:
                        assert err.name == "WrongPartition", err
                        assert err.doc["split_into"] == ["p-a", "p-b"] and err.doc["epoch"] == 2
                        refused.append(key(i)["pk"]["S"])
                        res = await owner(i).write(cmd)
                    assert res.get("ok"), res
                    acked[key(i)["pk"]["S"]] = i

                async def writer(numbers: range) -> None:
                    for i in numbers:
                        await put(i)

                first = asyncio.gather(*(writer(range(j, 400, 8)) for j in range(8)))
                await asyncio.sleep(0.05)
                split = await asyncio.get_running_loop().run_in_executor(
                    None,
                    lambda: http_json(
                        "POST",
                        f"http://{leader.api}/v1/partitions/p/split",
                        {"at": at.hex(), "children": [{"partition_id": "p-a"}, {"partition_id": "p-b"}], "epoch": 2},
                    ),
                )
                await first
                assert [c["partition_id"] for c in split["children"]] == ["p-a", "p-b"]
                assert split["children"][0]["end"] == at.hex() and split["children"][1]["start"] == at.hex()
                assert len(acked) == 400

                # Every acknowledged write is in the child that owns its key.
                for name, i in acked.items():
                    got = await owner(i).get(key(i), consistent=True)
                    assert got is not None and got["n"] == {"N": str(i)}, name
                # The frozen parent still serves reads of its final state and refuses writes.
                st = cluster.status(leader, "p")
                assert st is not None and st["frozen"] and st["split"]["children"] == ["p-a", "p-b"]
                with pytest.raises(StorageError) as err:
                    await parent.write({"op": "put", "key": key(9999), "item": key(9999)})
                assert err.value.name == "WrongPartition"
                # Children hold exactly their halves.
                counts = {}
                for cid in ("p-a", "p-b"):
                    lead = cluster.leader(cid)
                    counts[cid] = cluster.status(lead, cid)["item_count"]
                    report = http_json("POST", f"http://{lead.api}/v1/partitions/{cid}/scrub", {})
                    assert report["divergent"] == [] and len(report["digests"]) == 3, report
                assert counts["p-a"] == sum(1 for i in acked.values() if position(SCHEMA, key(i)) < at)
                assert counts["p-a"] + counts["p-b"] == 400

        asyncio.run(run())
        print(f"\n{len(refused)} writes refused by the frozen parent and retried on a child")

        # A restarted process reopens the frozen parent and both children.
        victim = cluster.nodes[0]
        victim.stop()
        victim.start()
        hosted = {p["partition_id"]: p for p in http_json("GET", f"http://{victim.api}/v1/partitions")["partitions"]}
        assert set(hosted) == {"p", "p-a", "p-b"} and hosted["p"]["frozen"]
        deadline = time.time() + 15
        while time.time() < deadline:
            st = cluster.status(victim, "p-b")
            lead = cluster.status(cluster.leader("p-b"), "p-b")
            if st and lead and st["applied_index"] >= lead["commit_index"]:
                break
            time.sleep(0.1)
        assert cluster.status(victim, "p-a")["item_count"] + cluster.status(victim, "p-b")["item_count"] == 400
    finally:
        cluster.stop()


def test_split_requests_that_make_no_sense_are_refused(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    cluster.start()
    try:
        cluster.create_partition("p", cluster.nodes)
        leader = cluster.leader("p")
        follower = next(n for n in cluster.nodes if n is not leader)
        url = f"http://{leader.api}/v1/partitions/p/split"
        good = {"at": "80", "children": [{"partition_id": "x"}, {"partition_id": "y"}], "epoch": 2}
        for bad in (
            {**good, "at": ""},  # not inside the range
            {**good, "epoch": 1},  # epoch must grow
            {**good, "children": [{"partition_id": "x"}, {"partition_id": "x"}]},
            {**good, "children": [{"partition_id": "p"}, {"partition_id": "y"}]},
            {"at": "zz"},
        ):
            with pytest.raises(Exception) as err:
                http_json("POST", url, bad)
            assert getattr(err.value, "code", None) == 400, bad
        with pytest.raises(Exception) as err:
            http_json("POST", f"http://{follower.api}/v1/partitions/p/split", good)
        assert getattr(err.value, "code", None) == 409
        load = http_json("GET", f"http://{leader.api}/v1/partitions/p/load")
        assert load["epoch"] == 1 and load["frozen"] is False and load["is_leader"] is True
    finally:
        cluster.stop()
