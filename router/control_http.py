"""The local control plane over HTTP, so standalone `kynamo router` processes can share it.

`kynamo local` serves these routes beside the API; `kynamo router --control-url`
uses `RemoteControlPlane`, which keeps a copy of every table's metadata (polled
every `POLL` seconds, fetched fresh when a route is stale) and forwards
CreateTable/DeleteTable/UpdateTable. It is the smallest honest way to run several
routers against one set of storage nodes without Kubernetes; on Kubernetes the
routing comes from the operator's ConfigMaps instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from aiohttp import web
from kynamo.router.gac_http import check_token

from kynamo.control_local import ControlError
from kynamo.keycodec import KeySchema
from kynamo.routing import Partition, RoutingTable, TableCatalog

log = logging.getLogger("kynamo.router.control")

PREFIX = "/kynamo/v1/control"
POLL = 0.5


def control_routes(control: Any, token: str | None) -> list[web.RouteDef]:
    async def tables(request: web.Request) -> web.Response:
        check_token(request, token)
        return web.json_response({"tables": [control.get(n) for n in control.names()]})

    async def table(request: web.Request) -> web.Response:
        check_token(request, token)
        meta = control.get(request.match_info["name"])
        return web.json_response({"table": meta}, status=200 if meta else 404)

    async def stats(request: web.Request) -> web.Response:
        check_token(request, token)
        count, size = await control.stats(request.match_info["name"])
        return web.json_response({"count": count, "size": size})

    async def change(request: web.Request) -> web.Response:
        check_token(request, token)
        doc = await request.json()
        try:
            action = request.match_info["action"]
            if action == "create":
                meta = await control.create_table(doc["spec"])
            elif action == "delete":
                meta = await control.delete_table(doc["name"])
            elif action == "update":
                meta = await control.update_table(doc["name"], doc["changes"])
            else:
                raise web.HTTPNotFound()
        except ControlError as err:
            return web.json_response({"error": err.kind, "message": err.message}, status=400)
        return web.json_response({"table": meta})

    return [
        web.get(PREFIX + "/tables", tables),
        web.get(PREFIX + "/tables/{name}", table),
        web.get(PREFIX + "/tables/{name}/stats", stats),
        web.post(PREFIX + "/{action}", change),
    ]


class RemoteControlPlane(TableCatalog):
    """The router's ControlPlane, backed by another process's control routes."""

    def __init__(self, url: str, session: aiohttp.ClientSession, *, region: str = "us-east-1",
                 account: str = "000000000000", token: str | None = None) -> None:
        self.url = url.rstrip("/") + PREFIX
        self.session = session
        self.region = region
        self.account = account
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.tables: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._refresh()
        self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.url + path, headers=self.headers,
                                    timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status, await resp.json()

    async def _refresh(self) -> None:
        status, doc = await self._get("/tables")
        if status == 200:
            self.tables = {t["name"]: t for t in doc["tables"] if t}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                await self._refresh()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning("control plane unreachable", extra={"ctx": {"err": repr(exc)}})

    async def routing(self, name: str) -> RoutingTable | None:
        status, doc = await self._get(f"/tables/{name}")
        meta = doc.get("table") if status == 200 else None
        if meta is None:
            self.tables.pop(name, None)
            return None
        self.tables[name] = meta
        if meta["status"] not in ("ACTIVE", "UPDATING"):
            return None
        return RoutingTable(table=name, version=int(meta.get("version", 1)),
                            key_schema=KeySchema.from_dict(meta["key_schema"]),
                            partitions=[Partition.from_doc(p) for p in meta["partitions"]])

    async def stats(self, name: str) -> tuple[int, int]:
        status, doc = await self._get(f"/tables/{name}/stats")
        return (int(doc["count"]), int(doc["size"])) if status == 200 else (0, 0)

    async def _post(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url}/{action}", json=body, headers=self.headers) as resp:
            doc = await resp.json()
        if "error" in doc:
            raise ControlError(doc["error"], doc["message"])
        meta = doc["table"]
        self.tables[meta["name"]] = meta
        return meta

    async def create_table(self, spec: dict[str, Any]) -> dict[str, Any]:
        return await self._post("create", {"spec": spec})

    async def delete_table(self, name: str) -> dict[str, Any]:
        return await self._post("delete", {"name": name})

    async def update_table(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return await self._post("update", {"name": name, "changes": changes})
