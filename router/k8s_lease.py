"""GAC leader election through a `coordination.k8s.io/v1` Lease.

One router replica holds the Lease (holderIdentity = its `host:port`), renews it every
third of the lease duration and serves the GAC; the others read the holder from the
Lease and send their grant requests there. A Lease not renewed for its duration, as
seen on this router's own clock (no clock comparison with the holder, as client-go),
is taken over. Takeover patches carry the observed resourceVersion, so the API server
lets only one contender win. The GAC keeps only ephemeral state: a new holder starts
each table with a full burst, as a restarted GAC does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException
from kynamo.router.gac import GlobalAdmission, Grant, OnDemand
from kynamo.router.gac_http import PATH, HttpGAC, answer, check_token

log = logging.getLogger("kynamo.router.lease")
# The client's default for a dict body is a JSON Patch; a merge patch with metadata.resourceVersion
# is a precondition the API server checks.
MERGE_PATCH = "application/merge-patch+json"


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Keeps `holder` current; `leader` says whether this router serves the GAC."""

    def __init__(self, api: k8s_client.ApiClient, namespace: str, name: str, identity: str, *,
                 duration: float = 10.0) -> None:
        self.coord = k8s_client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.timeout = max(1.0, duration / 3)  # a hung call must not outlive the term it renews
        self.holder: str | None = None
        self.leader = False
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, rv) last seen
        self._observed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self.step()
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.leader:  # hand over at once instead of after a lease duration
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._patch, {"spec": {"holderIdentity": None, "renewTime": None}})
            self.leader = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.duration / 3 if self.leader else min(1.0, self.duration / 5))
            try:
                await self.step()
            except Exception as exc:
                log.warning("lease step failed", extra={"ctx": {"err": repr(exc)}})
                if self.leader and time.monotonic() - self._observed_at > self.duration * 2 / 3:
                    self.leader = False  # cannot renew: stop serving before someone else may take over

    def _read(self) -> dict[str, Any] | None:
        try:
            resp = self.coord.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                    _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _patch(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.coord.patch_namespaced_lease(self.name, self.namespace, body, _preload_content=False,
                                                 _content_type=MERGE_PATCH, _request_timeout=self.timeout)
        return json.loads(resp.data)

    def _spec(self, transitions: int) -> dict[str, Any]:
        now = _now_micro()
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}

    async def step(self) -> None:
        """One round: create, renew or take over the Lease, or just note who holds it."""
        lease = await asyncio.to_thread(self._read)
        now = time.monotonic()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0)}
            try:
                await asyncio.to_thread(self.coord.create_namespaced_lease, self.namespace, body,
                                        _preload_content=False, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 409:
                    return  # someone else created it first
                raise
            self._won(now)
            return
        spec = lease.get("spec") or {}
        holder, renew = spec.get("holderIdentity"), spec.get("renewTime")
        rv = (lease.get("metadata") or {}).get("resourceVersion")
        seen = (holder, renew, rv)
        if seen != self._observed:
            self._observed, self._observed_at = seen, now
        if holder == self.identity:
            await asyncio.to_thread(self._patch, {"metadata": {"resourceVersion": rv},
                                                  "spec": {"renewTime": _now_micro()}})
            self._won(now)
            return
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and now - self._observed_at < duration:
            if self.leader:
                log.warning("lost the GAC lease to %s", holder, extra={"ctx": {"holder": holder}})
            self.leader, self.holder = False, holder
            return
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        try:
            await asyncio.to_thread(self._patch, {"metadata": {"resourceVersion": rv}, "spec": self._spec(transitions)})
        except ApiException as exc:
            if exc.status == 409:
                return  # another router took it over first
            raise
        self._won(now)

    def _won(self, now: float) -> None:
        if not self.leader:
            log.warning("holding the GAC lease as %s", self.identity, extra={"ctx": {"identity": self.identity}})
        self.leader, self.holder = True, self.identity
        self._observed_at = now


class ElectedGAC:
    """The GAC a router's admission asks: its own ledgers while it holds the Lease, else the holder's."""

    def __init__(self, elector: LeaseElector, session: aiohttp.ClientSession, token: str | None = None,
                 on_demand: OnDemand | None = None) -> None:
        self.elector = elector
        self.on_demand = on_demand
        self.local = GlobalAdmission(on_demand=on_demand)
        self.session = session
        self.token = token
        self._remote: HttpGAC | None = None

    async def grant(self, router: str, table: str, kind: str, rate: float, want: float,
                    burst_seconds: float, label: str, peak: float = 0.0) -> Grant:
        if self.elector.leader:
            return self.local.grant(router, table, kind, rate, want, burst_seconds, label, peak)
        holder = self.elector.holder
        if not holder:
            raise ConnectionError("no router holds the GAC lease")
        if self._remote is None or self._remote.url != f"http://{holder}{PATH}":
            self._remote = HttpGAC(f"http://{holder}", self.session, self.token)
            if self.local.ledgers:
                # a later term starts afresh, not from stale balances
                self.local = GlobalAdmission(on_demand=self.on_demand)
        return await self._remote.grant(router, table, kind, rate, want, burst_seconds, label, peak)

    def routes(self, token: str | None) -> list[web.RouteDef]:
        """`POST /kynamo/v1/gac/grant`, answered only while this router holds the Lease."""
        async def grant(request: web.Request) -> web.Response:
            check_token(request, token)
            if not self.elector.leader:
                raise web.HTTPServiceUnavailable(text=f"not the GAC holder (holder: {self.elector.holder})")
            return await answer(request, self.local)

        return [web.post(PATH, grant)]
