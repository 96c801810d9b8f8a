"""Repair of a replica whose log failed its checksum.

A replica with a corrupt WAL may have lost entries it acknowledged, so it must
not vote again under its old identity's promises. It leaves the group through a
membership change, comes back empty, and the leader catches it up with a
snapshot plus the log (the same path that rebuilds a lost replica).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

import aiohttp
from kynamo.storage_node.members import api_address

from kynamo.tokens import bearer

if TYPE_CHECKING:
    from kynamo.storage_node.node import StorageNode
    from kynamo.storage_node.replica import Replica

log = logging.getLogger("kynamo.storage_node.repair")


async def _leader_status(session: aiohttp.ClientSession, peers: list[str], pid: str) -> dict[str, Any] | None:
    for peer in peers:
        try:
            async with session.get(f"http://{api_address(peer)}/v1/partitions/{pid}") as resp:
                if resp.status != 200:
                    continue
                status = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            continue
        leader = status.get("leader")
        if leader and leader in peers:
            try:
                async with session.get(f"http://{api_address(leader)}/v1/partitions/{pid}") as resp:
                    if resp.status == 200:
                        doc = await resp.json()
                        if doc.get("is_leader"):
                            return doc
            except (aiohttp.ClientError, TimeoutError):
                continue
    return None


async def _change(session: aiohttp.ClientSession, leader: str, pid: str, body: dict[str, Any]) -> bool:
    url = f"http://{api_address(leader)}/v1/partitions/{pid}/membership"
    try:
        async with session.post(url, json=body) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def repair_replica(node: StorageNode, replica: Replica) -> None:
    pid = replica.spec.partition_id
    me = node.member_id
    peers = [p for p in (*replica.spec.replicas, *replica.spec.log_replicas) if p != me]
    timeout = aiohttp.ClientTimeout(total=15)
    backoff = 0.5
    async with aiohttp.ClientSession(timeout=timeout, headers=bearer(node.client_token)) as session:
        while True:
            status = await _leader_status(session, peers, pid)
            if status is not None:
                leader = status["leader"]
                members = set(status["replicas"]) | set(status["log_replicas"])
                removed = me not in members or await _change(
                    session, leader, pid, {"action": "remove", "member": me}
                )
                if removed:
                    break
            log.warning(
                "repair waiting for a leader to remove the corrupt replica",
                extra={"ctx": {"partition": pid, "peers": peers}},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        log.warning("corrupt replica left its group; rebuilding empty", extra={"ctx": {"partition": pid}})
        spec = replica.spec
        spec.replicas = tuple(sorted(set(status["replicas"]) | ({me} if spec.role == "replica" else set())))
        spec.log_replicas = tuple(
            sorted(set(status["log_replicas"]) | ({me} if spec.role == "log-replica" else set()))
        )
        await replica.stop()
        node.replicas.pop(pid, None)

        def wipe() -> None:
            for child in replica.dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            tmp = replica.dir / "spec.json.tmp"
            tmp.write_text(json.dumps(spec.to_doc()))
            os.replace(tmp, replica.dir / "spec.json")

        await asyncio.get_running_loop().run_in_executor(node.executor, wipe)
        await node.create_replica(spec)
        while True:
            status = await _leader_status(session, peers, pid)
            if status is not None and await _change(
                session, status["leader"], pid, {"action": "add", "member": me, "role": spec.role}
            ):
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        log.warning("repaired replica rejoined its group", extra={"ctx": {"partition": pid}})
