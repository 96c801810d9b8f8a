"""`kynamo local`'s storage-node processes: which exist, and keeping them alive.

The registry (`control/nodes.json`) lists every process `kynamo local` runs: one
per simulated zone, spares that host log-replicas during a repair, and retired
processes that were lost and replaced. It is what a restart starts again.

The supervisor plays kubelet and node controller at once: a process that exits
is restarted at once (it catches up from its own WAL and RocksDB), and one not
healthy again within `heal_after` seconds is declared lost, as a pod on a dead
node would be: it is retired for good, a fresh process takes its zone, and a
spare is started if none runs, so the control plane can heal every partition it
hosted (log-replica on the spare, full rebuild in the zone, log-replica retired).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kynamo.tokens import CLIENT_TOKEN_ENV, PEER_TOKEN_ENV

ACTIVE, SPARE, RETIRED = "active", "spare", "retired"
SPARE_ZONE = "spare"


@dataclass
class NodeInfo:
    """One storage-node process: its name (also its data directory), zone and ports."""

    name: str
    zone: str
    host: str
    port: int
    peer_port: int
    state: str = ACTIVE

    @property
    def member(self) -> str:
        return f"{self.host}:{self.port}:{self.peer_port}"

    @property
    def api(self) -> str:
        return f"{self.host}:{self.port}"


def _port_pair_free(host: str, port: int) -> bool:
    try:
        with socket.socket() as a, socket.socket() as b:
            a.bind((host, port))
            b.bind((host, port + 1))
        return True
    except OSError:
        return False


def free_port_pair(host: str, taken: set[int]) -> int:
    """Two consecutive free ports below Linux's ephemeral range (no outgoing socket takes them later)."""
    for _ in range(500):
        port = random.randrange(20000, 32000)
        if port not in taken and port + 1 not in taken and _port_pair_free(host, port):
            return port
    raise RuntimeError("no free port pair for a storage node")


class Registry:
    """The processes of one `kynamo local` data directory, persisted as JSON."""

    def __init__(self, data_dir: Path, host: str, zones: int, base_port: int) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "control" / "nodes.json"
        self.nodes: list[NodeInfo] = []
        if self.path.exists():
            self.nodes = [NodeInfo(**d) for d in json.loads(self.path.read_text())["nodes"]]
        else:  # first start, or a data dir from before the registry: zone-i on base+2i
            self.nodes = [NodeInfo(f"zone-{i}", f"zone-{i}", host, base_port + 2 * i, base_port + 2 * i + 1)
                          for i in range(zones)]
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps({"nodes": [asdict(n) for n in self.nodes]}, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def running(self) -> list[NodeInfo]:
        return [n for n in self.nodes if n.state != RETIRED]

    def add(self, zone: str, state: str, host: str) -> NodeInfo:
        taken = {p for n in self.nodes for p in (n.port, n.peer_port)}
        zone = SPARE_ZONE if state == SPARE else zone
        k = sum(1 for n in self.nodes if n.zone == zone)
        port = free_port_pair(host, taken)
        node = NodeInfo(f"{zone}-{k}" if state == SPARE else f"{zone}.{k}", zone, host, port, port + 1, state)
        self.nodes.append(node)
        self.save()
        return node

    def view(self, healthy: set[str]) -> tuple[dict[str, list[str]], list[str], set[str], dict[str, str]]:
        """(zone -> healthy active members, healthy spares, lost members, member -> zone) for the control plane."""
        zones: dict[str, list[str]] = {}
        for n in self.nodes:
            if n.state == ACTIVE:
                zones.setdefault(n.zone, [])
                if n.member in healthy:
                    zones[n.zone].append(n.member)
        for n in self.nodes:  # a zone whose every process was retired is still a zone
            if n.state == RETIRED:
                zones.setdefault(n.zone, [])
        spares = [n.member for n in self.nodes if n.state == SPARE and n.member in healthy]
        lost = {n.member for n in self.nodes if n.state == RETIRED}
        zone_of = {n.member: n.zone for n in self.nodes}
        return zones, spares, lost, zone_of


def _die_with_parent() -> None:
    """Linux: a storage node gets SIGTERM if `kynamo local` itself is killed, so no orphan keeps its ports."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Starts, restarts and, past `heal_after`, replaces the storage-node processes."""

    def __init__(self, args: Any, registry: Registry, *, heal_after: float = 5.0, spares: int = 0,
                 on_change: Callable[[], None] | None = None, tokens: dict[str, str] | None = None) -> None:
        self.args = args
        self.registry = registry
        self.heal_after = heal_after
        self.spares = spares
        self.on_change = on_change
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.healthy: set[str] = set()  # members whose /healthz answered at the last check
        self.down_since: dict[str, float] = {}
        self.next_start: dict[str, float] = {}
        self.env = dict(os.environ)
        # Secrets reach the children through the environment: argv is readable by every user (`ps`).
        if tokens:
            self.env[CLIENT_TOKEN_ENV] = tokens["client"]
            self.env[PEER_TOKEN_ENV] = tokens["peer"]

    def command(self, node: NodeInfo) -> list[str]:
        a = self.args
        return [
            sys.executable, "-P", "-m", "kynamo.cli", "storage-node",
            "--data-dir", str(self.registry.data_dir / node.name),
            "--host", a.host, "--port", str(node.port), "--peer-port", str(node.peer_port),
            "--log-level", a.log_level, "--log-format", a.log_format,
            "--partition-max-rcu", str(a.partition_max_rcu), "--partition-max-wcu", str(a.partition_max_wcu),
        ]

    def _spawn(self, node: NodeInfo) -> None:
        # A new session keeps a terminal's Ctrl-C away from the children: we stop them in order.
        proc = subprocess.Popen(self.command(node), env=self.env, start_new_session=True,
                                preexec_fn=_die_with_parent)
        self.procs[node.name] = proc
        pid_file = self.registry.data_dir / "control" / f"{node.name}.pid"
        with contextlib.suppress(OSError):
            pid_file.write_text(str(proc.pid))

    def start(self) -> None:
        while sum(1 for n in self.registry.nodes if n.state == SPARE) < self.spares:
            self.registry.add(SPARE_ZONE, SPARE, self.args.host)
        for node in self.registry.running():
            self._spawn(node)

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            await self._probe(session)
            pending = [n.member for n in self.registry.running() if n.member not in self.healthy]
            if not pending:
                return
            for node in self.registry.running():
                proc = self.procs.get(node.name)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"storage node {node.name} exited with {proc.returncode} during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"storage nodes not healthy after {timeout}s: {sorted(pending)}")
            await asyncio.sleep(0.05)

    async def _probe(self, session: aiohttp.ClientSession) -> None:
        async def one(node: NodeInfo) -> tuple[str, bool]:
            proc = self.procs.get(node.name)
            if proc is None or proc.poll() is not None:
                return node.member, False
            try:
                async with session.get(f"http://{node.api}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    return node.member, r.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                return node.member, False

        results = await asyncio.gather(*(one(n) for n in self.registry.running()))
        self.healthy = {m for m, ok in results if ok}

    async def check(self, session: aiohttp.ClientSession) -> None:
        """One supervision round: restart what exited, replace what stayed down too long."""
        now = time.monotonic()
        changed = False
        for node in self.registry.running():
            proc = self.procs.get(node.name)
            if proc is not None and proc.poll() is not None and now >= self.next_start.get(node.name, 0):
                print(f"kynamo local: {node.name} exited ({proc.returncode}); restarting", flush=True)
                self._spawn(node)
                self.next_start[node.name] = now + 1.0  # a process that cannot start is not respawned in a spin
        before = set(self.healthy)
        await self._probe(session)
        changed |= before != self.healthy
        for node in self.registry.running():
            if node.member in self.healthy:
                self.down_since.pop(node.name, None)
                continue
            since = self.down_since.setdefault(node.name, now)
            if self.heal_after > 0 and now - since >= self.heal_after:
                self._replace(node)
                changed = True
        if changed and self.on_change is not None:
            self.on_change()

    def _replace(self, node: NodeInfo) -> None:
        """A process down for `heal_after`: retire it for good; a fresh one takes its place."""
        proc = self.procs.pop(node.name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        self.down_since.pop(node.name, None)
        was = node.state
        node.state = RETIRED
        self.registry.save()
        fresh = [self.registry.add(node.zone, was, self.args.host)]
        if was != SPARE and not any(n.state == SPARE for n in self.registry.nodes):
            fresh.append(self.registry.add(SPARE_ZONE, SPARE, self.args.host))  # log-replicas go here
        for f in fresh:
            self._spawn(f)
        print(f"kynamo local: {node.name} ({node.member}) down for {self.heal_after:g}s: lost; "
              f"started {', '.join(f'{f.name} ({f.member})' for f in fresh)}; its partitions are being healed",
              flush=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
