"""`kynamo local` spreads leaders over its storage processes and puts them back when they drift.

A real `kynamo local` (three storage processes, --load-interval 1): three tables created one after
another lead on three different processes; when every leadership is handed to one process (as
happens when the others restart), the control plane's leader balance hands them back, one
handover at a time, until each process leads one again. Writes work throughout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.router_env import LocalKynamo
from tests.storage_cluster import http_json

pytestmark = pytest.mark.slow
TABLES = ("Alpha", "Beta", "Gamma")


def parts(data: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((data / "control" / "tables.json").read_text())
    return {t["name"]: t["partitions"][0] for t in doc["tables"] if t["name"] in TABLES}


def api(member: str) -> str:
    host, port, _ = member.rsplit(":", 2)
    return f"http://{host}:{port}"


def leaders(data: Path, token: str) -> dict[str, str]:
    """Table -> the member whose storage node says it leads that table's partition."""
    out = {}
    for table, part in parts(data).items():
        for m in part["replicas"]:
            if http_json("GET", f"{api(m)}/v1/partitions/{part['id']}", timeout=2, token=token).get("is_leader"):
                out[table] = m
    return out


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


@pytest.mark.timeout(120)
def test_new_tables_lead_on_different_processes_and_drifted_leaders_come_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = LocalKynamo(data, extra_env={"KYNAMO_LOAD_INTERVAL": "1"})
    env.start()
    try:
        ddb = env.client(retries=8)
        for name in TABLES:
            ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                             KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                             AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
            ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
        token = env.tokens()["client"]
        spread = wait_for(lambda: (lambda ls: len(ls) == 3 and ls)(leaders(data, token)), 10, "three leaders")
        assert len(set(spread.values())) == 3, spread  # one table each

        # Everything handed to one process, as when the other two restarted.
        target = spread[TABLES[0]]
        for table in TABLES[1:]:
            part = parts(data)[table]
            doc = http_json("POST", f"{api(spread[table])}/v1/partitions/{part['id']}/handover", {"to": target},
                            token=token)
            assert doc["handed_over"] is True, doc
        assert set(leaders(data, token).values()) == {target}

        balanced = wait_for(lambda: (lambda ls: len(set(ls.values())) == 3 and ls)(leaders(data, token)), 30,
                            "leaders spread again")
        assert len(set(balanced.values())) == 3
        assert env.log_tail(100000).count("(balancing leaders)") >= 2
        for name in TABLES:
            ddb.put_item(TableName=name, Item={"pk": {"S": "after"}})
            assert ddb.get_item(TableName=name, Key={"pk": {"S": "after"}}, ConsistentRead=True)["Item"]
    finally:
        env.stop()
