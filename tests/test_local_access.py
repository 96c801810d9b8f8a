"""`kynamo local` runs with storage tokens on by default; routers present the client token.

A real `kynamo local`: its tokens are generated once per data dir (0600 file, reused on restart),
reach the storage processes through the environment and never appear in any process's argv; the
storage nodes refuse whoever lacks the token. Standalone `kynamo router` processes against it:
with the right token boto3 works; with a wrong one the client gets a DynamoDB-shaped
InternalServerError at once (no hang) and the router logs why.
"""

from __future__ import annotations

import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import router_env
from tests.router_env import LocalKynamo, free_port_block, make_table
from tests.storage_cluster import http_json

pytestmark = pytest.mark.slow

TABLE = "Guarded"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def environ(pid: int) -> dict[str, str]:
    pairs = (e.split(b"=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
    return {k.decode(): v.decode() for k, v in pairs}


def storage_pids(data: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((data / "control").glob("*.pid"))]


def start_router(local: LocalKynamo, port: int, log: Path, token: str) -> subprocess.Popen[bytes]:
    # A storage timeout far beyond the client's read timeout: a router that retried a refused token
    # until its deadline would show as a client timeout, not as the error asserted below.
    return router_env.start_router(port, log, "--control-url", local.endpoint, "--storage-timeout", "300",
                                   "--log-level", "warning", env={"KYNAMO_CLIENT_TOKEN": token})


def client(endpoint: str) -> object:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}, read_timeout=30))


def test_local_tokens_on_by_default_out_of_argv_and_routers_present_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    local = LocalKynamo(data)
    local.start()
    routers: list[subprocess.Popen[bytes]] = []
    try:
        tokens = local.tokens()
        path = data / "control" / "tokens.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert tokens["client"] and tokens["peer"] and tokens["client"] != tokens["peer"]

        # Every storage process got both tokens through its environment, none through argv.
        pids = storage_pids(data)
        assert len(pids) == 3
        assert local.proc is not None
        for pid in [local.proc.pid, *pids]:
            line = cmdline(pid)
            assert tokens["client"] not in line and tokens["peer"] not in line, line
        for pid in pids:
            env = environ(pid)
            assert env["KYNAMO_CLIENT_TOKEN"] == tokens["client"] and env["KYNAMO_PEER_TOKEN"] == tokens["peer"]

        ddb = local.client()
        make_table(ddb, TABLE, sk=None)
        ddb.put_item(TableName=TABLE, Item={"pk": {"S": "a"}, "v": {"N": "1"}})

        # The storage nodes refuse whoever lacks the token, and serve whoever has it.
        api = f"http://127.0.0.1:{local.storage_base}"
        with pytest.raises(urllib.error.HTTPError) as info:
            http_json("GET", f"{api}/v1/partitions")
        assert info.value.code == 401
        assert http_json("GET", f"{api}/v1/partitions", token=tokens["client"])["partitions"]

        # Standalone routers: the right token serves boto3; a wrong one answers an error at once.
        port = free_port_block(2)
        routers.append(start_router(local, port, tmp_path / "good.log", tokens["client"]))
        routers.append(start_router(local, port + 1, tmp_path / "bad.log", "not-the-token"))
        good = client(f"http://127.0.0.1:{port}")
        got = good.get_item(TableName=TABLE, Key={"pk": {"S": "a"}}, ConsistentRead=True)  # type: ignore[attr-defined]
        assert got["Item"]["v"] == {"N": "1"}
        good.put_item(TableName=TABLE, Item={"pk": {"S": "b"}, "v": {"N": "2"}})  # type: ignore[attr-defined]

        bad = client(f"http://127.0.0.1:{port + 1}")
        for call in (lambda: bad.get_item(TableName=TABLE, Key={"pk": {"S": "a"}}),  # type: ignore[attr-defined]
                     lambda: bad.put_item(TableName=TABLE, Item={"pk": {"S": "c"}})):  # type: ignore[attr-defined]
            with pytest.raises(ClientError) as err:
                call()
            assert err.value.response["Error"]["Code"] == "InternalServerError"
            assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert "refused this process's client token" in (tmp_path / "bad.log").read_text()
        assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "c"}})

        # A restart reuses the data dir's tokens: the data and the routers' token stay valid.
        for proc in routers:
            proc.terminate()
            proc.wait(timeout=10)
        routers.clear()
        assert local.stop() == 0
        local.start()
        assert local.tokens() == tokens
        assert {e["KYNAMO_CLIENT_TOKEN"] for e in map(environ, storage_pids(data))} == {tokens["client"]}
        got = local.client().get_item(TableName=TABLE, Key={"pk": {"S": "b"}})
        assert got["Item"]["v"] == {"N": "2"}
    finally:
        for proc in routers:
            proc.terminate()
            proc.wait(timeout=10)
        local.stop()
