"""A replica that has not caught up never answers an eventually consistent read with "not found".

Real `kynamo storage-node` processes: a fourth full replica joins a group that holds data (by
snapshot, the log behind it compacted), and a caught-up replica is frozen with SIGSTOP while
writes go on. Each is read directly (no retry) while it is behind: the answer is the item or
`Unavailable`, never a missing item; through GroupClient the read falls over to another member
and the caller sees the item.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from storage_cluster import Cluster, Node, http_json

from kynamo.storage_client import GroupClient, StorageError

pytestmark = pytest.mark.slow

PID = "p1"
REFUSED = "kynamo_storage_reads_refused_total"


def item(i: int) -> dict[str, Any]:
    return {"pk": {"S": f"k{i:04d}"}, "n": {"N": str(i)}}


def eventual_get(node: Node, i: int, timeout: float = 15.0) -> str:
    """One eventually consistent GetItem sent to exactly this node: 'item', 'missing' or the error name."""
    body = msgpack.packb({"key": {"pk": item(i)["pk"]}, "consistent": False}, use_bin_type=True)
    req = urllib.request.Request(f"http://{node.api}/v1/p/{PID}/get", data=body, method="POST",
                                 headers={"Content-Type": "application/x-msgpack"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = msgpack.unpackb(resp.read(), raw=False)
    except urllib.error.HTTPError as exc:
        doc = msgpack.unpackb(exc.read(), raw=False)
    if "error" in doc:
        return str(doc["error"])
    got = doc.get("item")
    if got is None:
        return "missing"
    assert got["n"] == {"N": str(i)}, got
    return "item"


async def write(client: GroupClient, numbers: range) -> None:
    for i in numbers:
        doc = item(i)
        while True:
            try:
                res = await client.write({"op": "put", "key": {"pk": doc["pk"]}, "item": doc})
                break
            except StorageError as err:
                if err.name not in ("OutcomeUnknown", "Unavailable"):
                    raise
        assert res.get("ok"), res


def read_until_served(node: Node, numbers: list[int], timeout: float = 30.0) -> list[str]:
    """Read every key from `node` until it serves them all; returns every answer seen."""
    seen: list[str] = []
    deadline = time.time() + timeout
    pending = list(numbers)
    while pending:
        assert time.time() < deadline, f"{node.member} never served; answers: {sorted(set(seen))}"
        still: list[int] = []
        for i in pending:
            answer = eventual_get(node, i)
            seen.append(answer)
            assert answer in ("item", "Unavailable"), f"key {i} from a lagging replica: {answer}"
            if answer != "item":
                still.append(i)
        pending = still
        if pending:
            time.sleep(0.02)
    return seen


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    # A short log retention: the new member must be caught up by snapshot install.
    c = Cluster(tmp_path, 4, ["--log-retention", "20"])
    c.start()
    yield c
    for node in c.nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
    c.stop()


def test_lagging_replicas_refuse_eventual_reads_never_answer_not_found(cluster: Cluster) -> None:
    full, new = cluster.nodes[:3], cluster.nodes[3]
    cluster.create_partition(PID, full)
    leader = cluster.leader(PID)
    old = list(range(0, 150))

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = GroupClient(session, PID, [n.member for n in full], deadline=20)
            await write(client, range(0, 150))
            st = cluster.status(leader, PID)
            assert st is not None and st["log_start"] > 1, st

            # 1. The new replica exists but the group has not admitted it: it never heard a
            #    leader and holds nothing. It must refuse, not answer "not found".
            http_json("PUT", f"http://{new.api}/v1/partitions/{PID}", {
                "table": "t", "key_schema": {"pk": "pk", "pk_type": "S"},
                "replicas": [*st["replicas"], new.member], "log_replicas": st["log_replicas"],
            })
            assert eventual_get(new, 0) == "Unavailable"
            assert eventual_get(new, 149) == "Unavailable"
            assert new.metric(REFUSED, f'partition="{PID}"') >= 2
            # Through the client the read falls over to a member that has the data: no error.
            both = GroupClient(session, PID, [new.member, leader.member], deadline=20)
            before = new.metric(REFUSED)
            for i in range(0, 150, 5):
                got = await both.get({"pk": item(i)["pk"]}, consistent=False)
                assert got is not None and got["n"] == {"N": str(i)}
            assert new.metric(REFUSED) > before  # it was asked, refused, and the client moved on
            assert both.retries > 0

            # 2. Admitted: read from it at once and until it serves; snapshot install and log
            #    replay run meanwhile. Every answer is the item or a refusal.
            cluster.membership(PID, "add", new.member)
            seen = read_until_served(new, [*old[::7], 149])
            assert new.metric("kynamo_storage_snapshots_installed_total") >= 1
            assert set(seen) <= {"item", "Unavailable"}

            # 3. A caught-up replica loses contact (SIGSTOP, longer than the election timeout)
            #    while writes go on; reads sent meanwhile wait in its socket and are answered
            #    the moment it resumes, before it can have replayed what it missed.
            assert new.proc is not None
            new.proc.send_signal(signal.SIGSTOP)
            try:
                await write(client, range(150, 170))
                await asyncio.sleep(1.0)
                with ThreadPoolExecutor(max_workers=8) as pool:
                    futures = [pool.submit(eventual_get, new, i) for i in range(150, 170, 3)]
                    await asyncio.sleep(0.3)  # the requests reach the stopped process's backlog
                    new.proc.send_signal(signal.SIGCONT)
                    answers = [f.result(timeout=20) for f in futures]
            finally:
                new.proc.send_signal(signal.SIGCONT)
            assert "missing" not in answers, answers
            assert set(answers) <= {"item", "Unavailable"}, answers
            read_until_served(new, list(range(150, 170)))

            # Caught up again: it serves on its own, without a refusal.
            quiet = new.metric(REFUSED)
            assert eventual_get(new, 0) == "item" and eventual_get(new, 169) == "item"
            assert new.metric(REFUSED) == quiet

    asyncio.run(run())
