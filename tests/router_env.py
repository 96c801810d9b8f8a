"""A real `kynamo local` (router + three storage-node processes) for the router tests.

Each test module starts one on free ports with its own data directory and talks
to it with boto3, exactly as a user would; `post` sends raw requests for the
malformed-input tests that boto3's own validation would never let through.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

TARGET = "DynamoDB_20120810."


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int) -> int:
    """The first of n consecutive free ports."""
    for _ in range(500):
        base = random.randrange(10000, 32000)  # below Linux's ephemeral range: no outgoing socket takes them
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process whose stdout and stderr append to `log` (the child keeps the file; we close our copy)."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_router(port: int, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A `kynamo router` process on `port` (more flags in `args`), once it answers `GET /`."""
    cmd = [sys.executable, "-P", "-m", "kynamo.cli", "router", "--port", str(port), *args]
    proc = spawn(cmd, log, env)
    deadline = time.time() + 30
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text())


@dataclass
class LocalKynamo:
    data_dir: Path
    port: int = 0
    storage_base: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        """Start and wait for the API; with auto-picked ports, retry on new ones if a port was taken."""
        auto = not self.port
        for attempt in range(3):
            if auto:
                base = free_port_block(7)
                self.port, self.storage_base = base, base + 1
            try:
                self._start_once(timeout)
                return
            except RuntimeError:
                self.stop()
                if not auto or attempt == 2:
                    raise

    def _start_once(self, timeout: float) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        cmd = [
            sys.executable, "-P", "-m", "kynamo.cli", "local",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--storage-base-port", str(self.storage_base),
            "--log-level", "warning",
        ]
        self.proc = spawn(cmd, self.log_path, self.extra_env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kynamo local exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"kynamo local did not come up: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tokens(self) -> dict[str, str]:
        """The storage nodes' client and peer tokens `kynamo local` generated for this data dir."""
        return json.loads((self.data_dir / "control" / "tokens.json").read_text())

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path and self.log_path.exists() else ""

    def client(self, *, consistent: bool = True, **kwargs: Any) -> Any:
        """A boto3 client; `consistent` makes reads strongly consistent unless a call says otherwise.

        Eventually consistent reads may go to a follower a heartbeat behind, so tests that read
        right after writing would be timing-dependent without it.
        """
        client = boto3.client("dynamodb", **self._conn(**kwargs))
        if consistent:
            _default_consistent(client)
        return client

    def resource(self, *, consistent: bool = True, **kwargs: Any) -> Any:
        resource = boto3.resource("dynamodb", **self._conn(**kwargs))
        if consistent:
            _default_consistent(resource.meta.client)
        return resource

    def _conn(self, retries: int = 2) -> dict[str, Any]:
        return dict(
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"max_attempts": retries, "mode": "standard"}, read_timeout=30),
        )

    def post(self, op: str | None, body: Any, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """A raw JSON 1.0 request; returns (status, parsed body)."""
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/x-amz-json-1.0"}
        if op is not None:
            hdrs["X-Amz-Target"] = TARGET + op
        hdrs.update(headers or {})
        req = urllib.request.Request(self.endpoint + "/", data=data, headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload or b"{}")
            except ValueError:
                return err.code, {"raw": payload.decode(errors="replace")}


def _default_consistent(client: Any) -> None:
    def inject(params: dict[str, Any], **_: Any) -> None:
        if "RequestItems" in params:
            for spec in params["RequestItems"].values():
                if isinstance(spec, dict):
                    spec.setdefault("ConsistentRead", True)
        else:
            params.setdefault("ConsistentRead", True)

    for op in ("GetItem", "Query", "Scan", "BatchGetItem"):
        client.meta.events.register(f"provide-client-params.dynamodb.{op}", inject)


def error_type(doc: dict[str, Any]) -> str:
    return str(doc.get("__type", "")).rsplit("#", 1)[-1]


@pytest.fixture(scope="module")
def kynamo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    env = LocalKynamo(tmp_path_factory.mktemp("kynamo") / "data")
    env.start()
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="module")
def ddb(kynamo: LocalKynamo) -> Any:
    return kynamo.client()


def make_table(client: Any, name: str, *, sk: str | None = "sk", pk_type: str = "S", sk_type: str = "S",
               wcu: int | None = None) -> str:
    """Create a table and wait until it is ACTIVE."""
    ks = [{"AttributeName": "pk", "KeyType": "HASH"}]
    defs = [{"AttributeName": "pk", "AttributeType": pk_type}]
    if sk:
        ks.append({"AttributeName": sk, "KeyType": "RANGE"})
        defs.append({"AttributeName": sk, "AttributeType": sk_type})
    kwargs: dict[str, Any] = {"TableName": name, "KeySchema": ks, "AttributeDefinitions": defs}
    if wcu:
        kwargs["ProvisionedThroughput"] = {"ReadCapacityUnits": 5, "WriteCapacityUnits": wcu}
    else:
        kwargs["BillingMode"] = "PAY_PER_REQUEST"
    client.create_table(**kwargs)
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 200})
    return name


class KubeRouter:
    """`kynamo router --routing-source kubernetes` as a subprocess, for the tests against the Kubernetes emulator.

    Its kubeconfig is `kubeconfig`, else the KUBECONFIG the test set; `args` are more router flags.
    """

    def __init__(self, tmp: Path, namespace: str, *args: str, name: str = "router",
                 kubeconfig: Path | None = None) -> None:
        self.port = free_port_block(1)
        self.log = tmp / f"{name}.log"
        cmd = [sys.executable, "-P", "-m", "kynamo.cli", "router", "--routing-source", "kubernetes",
               "--namespace", namespace, "--port", str(self.port), "--log-level", "info", "--log-format", "text",
               *args]
        self.proc = spawn(cmd, self.log, {"KUBECONFIG": str(kubeconfig)} if kubeconfig else None)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def identity(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                await asyncio.to_thread(urllib.request.urlopen, self.endpoint + "/", timeout=1)
                return
            except (OSError, urllib.error.URLError):
                await asyncio.sleep(0.1)
        raise AssertionError(f"router did not come up: {self.log.read_text()[-3000:]}")

    def client(self) -> Any:
        return boto3.client("dynamodb", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="x", aws_secret_access_key="x",
                            config=Config(retries={"max_attempts": 10, "mode": "standard"},
                                          connect_timeout=5, read_timeout=15))

    def stop(self) -> None:
        stop_process(self.proc)
