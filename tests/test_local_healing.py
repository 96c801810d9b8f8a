"""`kynamo local` heals a storage process killed with `kill -9`, as the operator heals a lost pod.

Started as the README says (a subprocess on free ports, its own data dir), driven with boto3:
a killed process that comes back is just restarted; one prevented from coming back (its port
taken) is declared lost after --heal-after, and each of its partitions gets a log-replica on a
spare process, a full replica rebuilt in a fresh process, and the log-replica retired, while
writes go on. Every acknowledged write reads back, then again after a restart of `kynamo local`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.router_env import LocalKynamo
from tests.storage_cluster import http_json

TABLE = "Healing"


def nodes(data: Path) -> list[dict[str, Any]]:
    return json.loads((data / "control" / "nodes.json").read_text())["nodes"]


def partitions(data: Path) -> list[dict[str, Any]]:
    doc = json.loads((data / "control" / "tables.json").read_text())
    return next(t for t in doc["tables"] if t["name"] == TABLE)["partitions"]


def pid_of(data: Path, name: str) -> int:
    return int((data / "control" / f"{name}.pid").read_text())


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


class Writer(threading.Thread):
    """Puts items with increasing ids; remembers which were acknowledged."""

    def __init__(self, client: Any, prefix: str) -> None:
        super().__init__(daemon=True)
        self.client, self.prefix = client, prefix
        self.acked: list[str] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"{self.prefix}-{i:06d}"
            try:
                self.client.put_item(TableName=TABLE, Item={"pk": {"S": key}, "v": {"N": str(i)}})
                self.acked.append(key)
            except Exception:  # a write that failed is simply not acknowledged
                self.failed += 1
            i += 1


def block_port(data: Path, name: str, port: int) -> socket.socket:
    """kill -9 a storage process and take its port, so its restarts fail (kill again any that won the race)."""
    deadline = time.time() + 10
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid_of(data, name), signal.SIGKILL)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            return sock
        except OSError:
            sock.close()
            if time.time() > deadline:
                raise
            time.sleep(0.02)


def read_all(client: Any, keys: list[str]) -> None:
    missing = []
    for key in keys:
        item = client.get_item(TableName=TABLE, Key={"pk": {"S": key}}).get("Item")
        if item is None:
            missing.append(key)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


@pytest.mark.timeout(240)
def test_kill9_restart_then_lost_process_healed_and_data_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = LocalKynamo(data, extra_env={"KYNAMO_HEAL_AFTER": "3"})
    env.start()
    blocker: socket.socket | None = None
    try:
        ddb = env.client(retries=8)
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        ddb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 0.2})
        writer = Writer(env.client(retries=8), "a")
        writer.start()
        wait_for(lambda: len(writer.acked) > 50, 30, "first writes")

        # 1. kill -9 and let it come back: restarted in place, catches up from its own disk.
        first = pid_of(data, "zone-0")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pid_of(data, "zone-0") != first, 10, "zone-0 restarted")
        zone0 = next(n for n in nodes(data) if n["name"] == "zone-0")
        wait_for(lambda: http_json("GET", f"http://127.0.0.1:{zone0['port']}/healthz"), 10, "zone-0 healthy")
        assert all(n["state"] != "retired" for n in nodes(data))

        # 2. kill -9 and keep it down (its port taken): past --heal-after it is replaced.
        victim = next(n for n in nodes(data) if n["name"] == "zone-1")
        lost = f"127.0.0.1:{victim['port']}:{victim['peer_port']}"
        blocker = block_port(data, "zone-1", victim["port"])
        at_kill = len(writer.acked)

        def replaced() -> bool:
            ns = {n["name"]: n for n in nodes(data)}
            return ns["zone-1"]["state"] == "retired" and "zone-1.1" in ns and "spare-0" in ns

        wait_for(replaced, 20, "zone-1 declared lost and replaced")
        ns = {n["name"]: n for n in nodes(data)}
        fresh = f"127.0.0.1:{ns['zone-1.1']['port']}:{ns['zone-1.1']['peer_port']}"
        spare = f"127.0.0.1:{ns['spare-0']['port']}:{ns['spare-0']['peer_port']}"

        def healed() -> bool:
            parts = partitions(data)
            return all(lost not in p["replicas"] and not p["log_replicas"] and not p.get("pending")
                       and fresh in p["replicas"] and len(p["replicas"]) == 3 for p in parts)

        wait_for(healed, 60, "every partition healed")
        # the log-replica path ran: the spare was used and then retired (it hosts nothing now)
        log_text = env.log_tail(200000)
        assert f"add log-replica {spare}" in log_text and f"remove log-replica {spare}" in log_text
        token = env.tokens()["client"]  # the storage nodes' client token kynamo local generated
        listing = http_json("GET", f"http://127.0.0.1:{ns['spare-0']['port']}/v1/partitions", token=token)
        assert listing["partitions"] == []
        wait_for(lambda: len(writer.acked) > at_kill + 100, 30, "writes continuing after the loss")
        writer.stop.set()
        writer.join(30)
        assert len(writer.acked) > at_kill

        # the rebuilt replica holds the data (installed by snapshot, then the log)
        pid = partitions(data)[0]["id"]
        def rebuilt() -> bool:
            st = http_json("GET", f"http://127.0.0.1:{ns['zone-1.1']['port']}/v1/partitions/{pid}", token=token)
            return st["item_count"] == len(set(writer.acked)) or st["item_count"] >= len(writer.acked)

        wait_for(rebuilt, 20, "rebuilt replica caught up")
        read_all(ddb, writer.acked)

        # 3. restart `kynamo local`: same data, the lost process stays retired.
        assert env.stop() == 0
        blocker.close()
        blocker = None
        env.start()
        ddb = env.client(retries=8)
        read_all(ddb, writer.acked)
        assert {n["name"]: n["state"] for n in nodes(data)}["zone-1"] == "retired"
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": "after-restart"}})
        read_all(ddb, ["after-restart"])
    finally:
        if blocker is not None:
            blocker.close()
        env.stop()
