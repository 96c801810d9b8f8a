"""Admission control at one router: a local share of each provisioned table's capacity.

Each (table, read|write) has a local balance refilled in chunks from the global
admission controller (in-process `GlobalAdmission`, or a remote one through
`gac_http.HttpGAC`). A request is admitted when the balance is positive and a
unit is reserved at once (so a burst of concurrent requests cannot all pass on
the same last token); when it finishes it is charged what it really consumed (a
Query's cost is known only once it has run), and a request that failed before
consuming anything gets its reservation back.

On-demand tables are admitted the same way, at the rate the GAC sets for them
(twice their previous peak, at least the initial floor); the router learns it from
each grant.

If the GAC cannot be reached, the router keeps serving on what it holds; once
that is spent and the GAC has been silent for `GRACE` seconds, it falls back to
a bucket of rate / N (N = routers the GAC last reported, no burst), so the
routers together still stay within the table's rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kynamo.router import metrics
from kynamo.router.gac import GlobalAdmission, Grant, OnDemand
from kynamo.router.protocol import ProvisionedThroughputExceededException

log = logging.getLogger("kynamo.router.admission")

BURST_SECONDS = 300.0
CHUNK_SECONDS = 0.1  # a grant is about this much of the table's rate
MIN_ASK_INTERVAL = 0.02  # a starved router asks the GAC at most this often
GRACE = 2.0  # seconds without the GAC before degrading to rate / N
ASK_TIMEOUT = 0.5  # longest a request waits for the GAC on an empty balance


class RemoteGAC(Protocol):
    async def grant(self, router: str, table: str, kind: str, rate: float, want: float,
                    burst_seconds: float, label: str, peak: float = 0.0) -> Grant: ...


@dataclass(slots=True)
class Share:
    rate: float
    tokens: float = 0.0
    routers: int = 1
    last_ok: float = 0.0
    last_ask: float = -1e9
    pending: asyncio.Task[Any] | None = None
    starved: bool = False
    fallback: float = 0.0
    fallback_stamp: float = 0.0
    on_demand: bool = False  # the rate is the GAC's, learned from grants
    refusing: bool = False  # the last decision was a refusal (listed in Admission.refusing)


@dataclass(slots=True)
class TokenBucket:
    """Kept for callers that want a plain bucket (benchmarks, tests)."""

    rate: float
    tokens: float
    stamp: float

    @property
    def capacity(self) -> float:
        return self.rate * BURST_SECONDS

    def refill(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens


def recorded_peak(meta: dict[str, Any], kind: str) -> float:
    """An on-demand table's previous peak as the control plane recorded it ([rcu, wcu]; 0 if none)."""
    peak = meta.get("peak") or (0.0, 0.0)
    try:
        return float(peak[0 if kind == "read" else 1])
    except (TypeError, ValueError, IndexError):
        return 0.0


def rate_of(meta: dict[str, Any], kind: str) -> float:
    """A provisioned table's rate; 0 for an on-demand one (the GAC decides its rate)."""
    if meta.get("billing_mode") != "PROVISIONED":
        return 0.0
    return float(meta.get("rcu" if kind == "read" else "wcu") or 0)


class Admission:
    """Local shares keyed by (table id, read|write), refilled from a GAC."""

    def __init__(self, gac: GlobalAdmission | RemoteGAC | None = None, *, router_id: str = "local",
                 burst_seconds: float = BURST_SECONDS, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic, on_demand: OnDemand | None = None) -> None:
        """`on_demand`: admit PAY_PER_REQUEST tables too, starting from this floor (None: never throttle them)."""
        self.on_demand = on_demand
        self.gac = gac if gac is not None else GlobalAdmission(clock, on_demand)
        self.inline = isinstance(self.gac, GlobalAdmission)
        self.router_id = router_id
        self.burst_seconds = burst_seconds
        self.enabled = enabled
        self.clock = clock
        self._shares: dict[tuple[str, str], Share] = {}
        # (table name, kind) of the shares whose last decision was a refusal: the HTTP front refuses
        # their next requests before parsing them (refuse_now); empty, it costs one truth test.
        self.refusing: set[tuple[str, str]] = set()

    def _share(self, meta: dict[str, Any], kind: str) -> tuple[str, Share] | None:
        if not self.enabled:
            return None
        rate = rate_of(meta, kind)
        on_demand = meta.get("billing_mode") != "PROVISIONED"
        if (on_demand and self.on_demand is None) or (not on_demand and rate <= 0):
            return None
        table = str(meta.get("id") or meta["name"])
        share = self._shares.get((table, kind))
        if share is not None and share.on_demand != on_demand:  # UpdateTable switched the billing mode
            share = None
        if on_demand:
            if share is None:
                assert self.on_demand is not None
                share = self._shares[(table, kind)] = Share(self.on_demand.floor(kind), last_ok=self.clock(),
                                                             on_demand=True)
            return table, share
        if share is None:
            share = self._shares[(table, kind)] = Share(rate, last_ok=self.clock())
            metrics.PROVISIONED.labels(meta["name"], kind).set(rate)
        elif share.rate != rate and self.inline:  # UpdateTable: the GAC accrues at the new rate from now on
            assert isinstance(self.gac, GlobalAdmission)
            self.gac.grant(self.router_id, table, kind, rate, 0.0, self.burst_seconds, meta["name"])
        if share.rate != rate:
            metrics.PROVISIONED.labels(meta["name"], kind).set(rate)
        share.rate = rate
        return table, share

    def _want(self, share: Share) -> float:
        return max(1.0, share.rate * CHUNK_SECONDS) - min(share.tokens, 0.0)

    def _ask(self, meta: dict[str, Any], table: str, kind: str, share: Share) -> asyncio.Task[Any] | None:
        """Ask the GAC for a chunk: inline for the in-process GAC, else one request in flight per share."""
        if share.pending is not None:
            return share.pending
        now = self.clock()
        if share.starved and now - share.last_ask < MIN_ASK_INTERVAL:
            return None  # the GAC had nothing a moment ago: do not poll it in a tight loop
        share.last_ask = now
        want = self._want(share)
        rate = 0.0 if share.on_demand else share.rate  # 0: the GAC sets an on-demand table's rate
        peak = recorded_peak(meta, kind) if share.on_demand else 0.0
        if self.inline:
            assert isinstance(self.gac, GlobalAdmission)
            self._granted(share, self.gac.grant(self.router_id, table, kind, rate, want,
                                                self.burst_seconds, meta["name"], peak), meta["name"], kind)
            return None
        task = asyncio.get_running_loop().create_task(
            self._ask_remote(meta["name"], table, kind, share, want, rate, peak))
        share.pending = task
        return task

    async def _ask_remote(self, label: str, table: str, kind: str, share: Share, want: float, rate: float,
                          peak: float) -> None:
        try:
            grant = await self.gac.grant(self.router_id, table, kind, rate, want,  # type: ignore[union-attr]
                                         self.burst_seconds, label, peak)
            self._granted(share, grant, label, kind)
        except Exception as exc:  # any failure to reach the GAC: serve on what we hold, then degrade
            metrics.GAC_ERRORS.inc()
            log.debug("GAC unreachable", extra={"ctx": {"err": repr(exc)}})
        finally:
            share.pending = None

    def _granted(self, share: Share, grant: Grant, label: str, kind: str) -> None:
        metrics.child(metrics.GAC_RECEIVED, label, kind).inc(grant.tokens)
        if share.on_demand and grant.rate > 0:
            share.rate = grant.rate
        share.starved = grant.tokens < self._want(share) * 0.999
        share.tokens += grant.tokens
        share.routers = max(1, grant.routers)
        share.last_ok = self.clock()
        share.fallback, share.fallback_stamp = 0.0, 0.0

    def _degraded_take(self, share: Share, units: float) -> bool:
        """The GAC is gone: a bucket of rate / N with one second of capacity."""
        now = self.clock()
        if now - share.last_ok < GRACE:
            return False
        rate = share.rate / share.routers
        if share.fallback_stamp == 0.0:  # entering degraded mode: one second of the share
            share.fallback_stamp, share.fallback = now, rate
        share.fallback = min(rate, share.fallback + (now - share.fallback_stamp) * rate)
        share.fallback_stamp = now
        if share.fallback <= 0:
            return False
        share.fallback -= units
        share.tokens += units  # the reservation below is paid from the fallback
        return True

    async def admit(self, meta: dict[str, Any], kind: str, reserve: float = 1.0) -> float:
        """Refuse the request when the table's capacity and burst are spent; else reserve units.

        An empty balance waits (briefly, coalesced with other waiters) for the GAC's answer
        rather than throttling a request the table has capacity for.
        """
        found = self._share(meta, kind)
        if found is None:
            return 0.0
        table, share = found
        if share.tokens < self._want(share) / 2:
            task = self._ask(meta, table, kind, share)
            if task is not None and share.tokens <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), ASK_TIMEOUT)
        if share.tokens <= 0 and not self._degraded_take(share, reserve):
            self._refused(meta["name"], kind, share)
            raise ProvisionedThroughputExceededException()
        if share.refusing:
            share.refusing = False
            self.refusing.discard((meta["name"], kind))
        share.tokens -= reserve
        metrics.child(metrics.LOCAL_BALANCE, meta["name"], kind).set(share.tokens)
        return reserve

    def _refused(self, name: str, kind: str, share: Share) -> None:
        metrics.child(metrics.THROTTLES, name, kind).inc()
        metrics.child(metrics.THROTTLED, name, "table_" + kind).inc()
        if not share.refusing:
            share.refusing = True
            self.refusing.add((name, kind))

    def refuse_now(self, meta: dict[str, Any], kind: str) -> bool:
        """True (counted as a refusal): admit() would refuse this request now, without waiting.

        For the HTTP front, which asks before parsing the request: False whenever admit()
        might admit it or would wait for the GAC's answer (a grant in flight, a share that
        was not starved, the GAC silent long enough to degrade), so the full path decides.
        """
        found = self._share(meta, kind)
        if found is None:
            return False
        table, share = found
        if share.tokens <= 0 and self._ask(meta, table, kind, share) is None and share.tokens <= 0 \
                and self.clock() - share.last_ok < GRACE:
            self._refused(meta["name"], kind, share)
            return True
        if share.refusing:
            share.refusing = False
            self.refusing.discard((meta["name"], kind))
        return False

    def charge(self, meta: dict[str, Any], kind: str, units: float, reserved: float = 0.0) -> None:
        found = self._share(meta, kind)
        if found is not None:
            found[1].tokens -= units - reserved

    def refund(self, meta: dict[str, Any], kind: str, reserved: float) -> None:
        self.charge(meta, kind, 0.0, reserved)

    def balance(self, meta: dict[str, Any], kind: str) -> float:
        found = self._share(meta, kind)
        return found[1].tokens if found else 0.0

    async def close(self) -> None:
        for share in self._shares.values():
            if share.pending is not None:
                share.pending.cancel()
                with contextlib.suppress(BaseException):
                    await share.pending
