"""A test kubelet: storage-node Pods in the Kubernetes API emulator become real processes.

Each Pod (label app.kubernetes.io/component=storage-node) runs as
`python -P -m kynamo.cli storage-node` on free loopback ports with a data directory of its own,
so the operator's end-to-end test drives real Paxos groups. Like a kubelet it binds the pod to a
node of its zone, reports phase Running, podIP 127.0.0.1 and the Ready condition from `/readyz`,
restarts a crashed process in place (restartPolicy Always), and SIGKILLs the process when the Pod
is deleted (an abrupt node loss, the harder case for the group). All nodes share one host, so each
pod's member address `127.0.0.1:port:peer_port` is published in the ANNOTATION the operator reads
(`--member-address-annotation`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.storage_cluster import free_port_pair

ANNOTATION = "kynamo.io/test-member-address"
COMPONENT = ("app.kubernetes.io/component", "storage-node")
log = logging.getLogger("tests.kubelet")


@dataclass
class Container:
    name: str
    uid: str
    zone: str
    port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    ready: bool | None = None
    restarts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}:{self.peer_port}"


class Kubelet:
    """Polls the API for pods (a list every `period`; kmock's watch replays, a list is simpler and honest)."""

    def __init__(self, base: str, namespace: str, root: Path, nodes: dict[str, str],
                 session: aiohttp.ClientSession, *, period: float = 0.2, extra_args: list[str] | None = None) -> None:
        self.base, self.ns, self.root, self.nodes = base.rstrip("/"), namespace, root, nodes  # nodes: zone -> node
        self.http, self.period = session, period
        self.extra_args = list(extra_args or [])
        self.containers: dict[str, Container] = {}  # by pod uid
        self.killed: list[str] = []  # pod names whose process was SIGKILLed on deletion

    def _pods_url(self, name: str = "") -> str:
        return f"{self.base}/api/v1/namespaces/{self.ns}/pods" + (f"/{name}" if name else "")

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sync()
                except (aiohttp.ClientError, TimeoutError) as e:
                    log.info("kubelet sync: %s", e)
                await asyncio.sleep(self.period)
        finally:
            await self.close()

    async def sync(self) -> None:
        async with self.http.get(self._pods_url()) as r:
            items = (await r.json()).get("items") or []
        pods = {p["metadata"]["uid"]: p for p in items
                if (p["metadata"].get("labels") or {}).get(COMPONENT[0]) == COMPONENT[1]
                and not p["metadata"].get("deletionTimestamp") and p["metadata"].get("uid")}
        for uid in [u for u in self.containers if u not in pods]:
            c = self.containers.pop(uid)
            await self._kill(c)
            self.killed.append(c.name)
        for uid, pod in pods.items():
            c = self.containers.get(uid)
            if c is None:
                try:
                    c = self.containers[uid] = await self._start(pod)
                except RuntimeError as e:  # CreateContainerConfigError: retried at the next sync
                    log.warning("%s", e)
                    continue
                await self._report(c, False)
            elif c.proc is not None and c.proc.returncode is not None:
                log.warning("pod %s exited with %s: restarting in place", c.name, c.proc.returncode)
                try:
                    c.env = await self._env(pod)  # a restarted container sees the Secret's current values
                except RuntimeError as e:
                    log.warning("%s", e)
                    continue
                c.restarts += 1
                await self._spawn(c)
            await self._probe(c)

    async def _start(self, pod: dict[str, Any]) -> Container:
        m = pod["metadata"]
        port, peer = free_port_pair()
        data = self.root / f"{m['name']}-{m['uid'][:8]}"
        data.mkdir(parents=True, exist_ok=True)
        env = await self._env(pod)
        c = Container(m["name"], m["uid"], m["labels"]["kynamo.io/zone"], port, peer, data,
                      self.root / f"{m['name']}.log", env)
        await self._spawn(c)
        return c

    async def _env(self, pod: dict[str, Any]) -> dict[str, str]:
        """The container's env as a kubelet resolves it: values, and secretKeyRef read from the Secret.

        A missing Secret or key fails the start (a kubelet's CreateContainerConfigError), never runs open.
        """
        env: dict[str, str] = {}
        for e in pod["spec"]["containers"][0].get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[e["name"]] = e.get("value", "")
                continue
            url = f"{self.base}/api/v1/namespaces/{self.ns}/secrets/{ref['name']}"
            async with self.http.get(url) as r:
                secret = await r.json() if r.status == 200 else {}
            if ref["key"] in (secret.get("stringData") or {}):
                env[e["name"]] = secret["stringData"][ref["key"]]
            elif ref["key"] in (secret.get("data") or {}):
                env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            else:
                raise RuntimeError(f"pod {pod['metadata']['name']}: secret {ref['name']} key {ref['key']} missing")
        return env

    async def _spawn(self, c: Container) -> None:
        # The pod's env as the container would see it; flags put it on this host's ports and directory.
        cmd = [sys.executable, "-P", "-m", "kynamo.cli", "storage-node", "--data-dir", str(c.data_dir),
               "--host", "127.0.0.1", "--advertise-host", "127.0.0.1", "--port", str(c.port),
               "--peer-port", str(c.peer_port), "--scrub-interval", "0", *self.extra_args]
        with open(c.log_path, "ab") as logf:
            c.proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=logf, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **c.env})
        c.ready = None

    async def _kill(self, c: Container) -> None:
        if c.proc is not None and c.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGKILL)
            await c.proc.wait()

    async def _probe(self, c: Container) -> None:
        try:
            async with self.http.get(f"http://127.0.0.1:{c.port}/readyz",
                                     timeout=aiohttp.ClientTimeout(total=1)) as r:
                ready = r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            ready = False
        if ready != c.ready:
            await self._report(c, ready)

    async def _report(self, c: Container, ready: bool) -> None:
        patch = {"metadata": {"annotations": {ANNOTATION: c.address}},
                 "spec": {"nodeName": self.nodes[c.zone]},
                 "status": {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
                            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                            "containerStatuses": [{"name": "storage-node", "ready": ready,
                                                   "restartCount": c.restarts}]}}
        async with self.http.patch(self._pods_url(c.name), json=patch,
                                   headers={"Content-Type": "application/merge-patch+json"}) as r:
            if r.status < 300:
                c.ready = ready

    def pod_address(self, name: str) -> str | None:
        return next((c.address for c in self.containers.values() if c.name == name), None)

    async def close(self) -> None:
        for c in list(self.containers.values()):
            await self._kill(c)
        self.containers.clear()
