"""Global admission control: one table-wide token bucket, handed out to routers in chunks.

The GAC is the only place a table's capacity accrues (its provisioned rate, up
to `burst_seconds` of it kept unused). Routers ask for chunks and spend them
locally; since the GAC never grants more than it holds, N routers together never
admit more than the rate plus burst, however the load is spread over them. State
is ephemeral: a restarted GAC starts each table with a full burst, as a new
table does. In local mode it lives in-process; on Kubernetes one router serves
it over HTTP (`gac_http.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kynamo.router import metrics

ROUTER_TTL = 10.0  # a router not heard from for this long no longer counts in N


@dataclass(slots=True)
class Ledger:
    """One table's read or write capacity at the GAC."""

    rate: float
    burst_seconds: float
    tokens: float
    stamp: float
    routers: dict[str, float] = field(default_factory=dict)

    def refill(self, now: float) -> None:
        cap = self.rate * self.burst_seconds
        self.tokens = min(max(cap, self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


@dataclass(frozen=True, slots=True)
class Grant:
    tokens: float
    routers: int  # routers drawing on this table lately: a lost router degrades to rate / routers
    balance: float  # what stays at the GAC (burst balance)


class GlobalAdmission:
    """The ledgers of every table, keyed by (table id, "read"|"write")."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ledgers: dict[tuple[str, str], Ledger] = {}

    def grant(self, router: str, table: str, kind: str, rate: float, want: float,
              burst_seconds: float, label: str = "-") -> Grant:
        now = self.clock()
        key = (table, kind)
        ledger = self.ledgers.get(key)
        if ledger is None:
            ledger = self.ledgers[key] = Ledger(rate, burst_seconds, max(rate * burst_seconds, rate), now)
        ledger.refill(now)
        ledger.rate, ledger.burst_seconds = rate, burst_seconds  # UpdateTable changed the rate
        ledger.routers[router] = now
        for r, seen in list(ledger.routers.items()):
            if now - seen > ROUTER_TTL:
                del ledger.routers[r]
        granted = max(0.0, min(want, ledger.tokens))
        ledger.tokens -= granted
        metrics.GAC_GRANTS.labels(label, kind).inc()
        metrics.GAC_GRANTED.labels(label, kind).inc(granted)
        metrics.BURST_BALANCE.labels(label, kind).set(ledger.tokens)
        return Grant(granted, len(ledger.routers), ledger.tokens)

    def forget(self, table: str) -> None:
        for kind in ("read", "write"):
            self.ledgers.pop((table, kind), None)
