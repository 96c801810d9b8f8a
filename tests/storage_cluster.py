"""Real `kynamo storage-node` processes on loopback, for the integration tests.

Each node is a separate OS process started through the `kynamo` CLI with its
own data directory, so `kill -9`, restarts and on-disk corruption are real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HANDED: set[int] = set()  # ports this process handed out: free now, maybe not once their process binds


def free_port_pair() -> tuple[int, int]:
    """Two consecutive free ports (HTTP, peer), never a pair this process handed out before.

    Free is only "free now": a pair whose process has not bound it yet (the test kubelet starts
    pods back to back) would otherwise be handed out twice, and two members share one address.
    """
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000 or port in _HANDED or port + 1 in _HANDED:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        _HANDED.update((port, port + 1))
        return port, port + 1
    raise RuntimeError("no free port pair")


@dataclass
class Node:
    index: int
    data_dir: Path
    port: int
    peer_port: int
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # e.g. KYNAMO_CLIENT_TOKEN: secrets stay out of argv
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def member(self) -> str:
        return f"127.0.0.1:{self.port}:{self.peer_port}"

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"node-{self.index}.log"
        cmd = [
            sys.executable, "-P", "-m", "kynamo.cli", "storage-node",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--peer-port", str(self.peer_port),
            "--scrub-interval", "0",
            "--log-level", "info",
            # Replication tests and benchmarks drive one group far past a partition's 1,000 WCU:
            # no physical cap here (admission tests use `kynamo local`, which keeps it).
            "--partition-max-rcu", "0", "--partition-max-wcu", "0",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as out:  # the child keeps the file; we close our copy
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.index} exited: {self.log_path.read_text()[-2000:]}")
            try:
                http_json("GET", f"http://{self.api}/healthz")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"node {self.index} did not become healthy")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of a Prometheus sample family on this node (matching an optional label substring)."""
        with urllib.request.urlopen(f"http://{self.api}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {") and labels in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


def http_json(method: str, url: str, body: Any = None, timeout: float = 15, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class Cluster:
    def __init__(self, root: Path, size: int, extra_args: list[str] | None = None, *,
                 token: str | None = None, peer_token: str | None = None) -> None:
        self.root = root
        self.token = token  # the nodes' client token: the admin calls below present it
        self.env = {k: v for k, v in (("KYNAMO_CLIENT_TOKEN", token), ("KYNAMO_PEER_TOKEN", peer_token)) if v}
        self.nodes: list[Node] = []
        for _ in range(size):
            self.add_node(extra_args)

    def add_node(self, extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> Node:
        i = len(self.nodes)
        port, peer = free_port_pair()
        node = Node(i, self.root / f"node-{i}", port, peer, list(extra_args or []), {**self.env, **(env or {})})
        self.nodes.append(node)
        return node

    def start(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def create_partition(
        self,
        pid: str,
        nodes: list[Node],
        *,
        key_schema: dict[str, Any] | None = None,
        log_replicas: list[Node] = (),  # type: ignore[assignment]
    ) -> dict[str, Any]:
        spec = {
            "table": "t",
            "key_schema": key_schema or {"pk": "pk", "pk_type": "S", "sk": None, "sk_type": None},
            "epoch": 1,
            "replicas": [n.member for n in nodes],
            "log_replicas": [n.member for n in log_replicas],
        }
        # The last full replica created campaigns at once: by then its peers exist to answer.
        for i, node in enumerate([*log_replicas, *nodes]):
            last = i == len(nodes) + len(log_replicas) - 1
            http_json("PUT", f"http://{node.api}/v1/partitions/{pid}", {**spec, "campaign": last}, token=self.token)
        return spec

    def status(self, node: Node, pid: str) -> dict[str, Any] | None:
        try:
            return http_json("GET", f"http://{node.api}/v1/partitions/{pid}", timeout=2, token=self.token)
        except (OSError, urllib.error.URLError):
            return None

    def leader(self, pid: str, timeout: float = 10.0, among: list[Node] | None = None) -> Node:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for node in among or self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                st = self.status(node, pid)
                if st and st.get("is_leader"):
                    return node
            time.sleep(0.05)
        raise AssertionError(f"no leader for {pid} within {timeout}s")

    def membership(self, pid: str, action: str, member: str, role: str = "replica") -> dict[str, Any]:
        deadline = time.time() + 20
        last: Exception | None = None
        while time.time() < deadline:
            leader = self.leader(pid)
            try:
                return http_json(
                    "POST",
                    f"http://{leader.api}/v1/partitions/{pid}/membership",
                    {"action": action, "member": member, "role": role},
                    token=self.token,
                )
            except urllib.error.HTTPError as exc:
                last = exc
                time.sleep(0.2)
        raise AssertionError(f"membership {action} {member} failed: {last}")
