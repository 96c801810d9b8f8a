"""Global admission control: one table-wide token bucket, handed out to routers in chunks.

The GAC is the only place a table's capacity accrues (its provisioned rate, up
to `burst_seconds` of it kept unused). Routers ask for chunks and spend them
locally; since the GAC never grants more than it holds, N routers together never
admit more than the rate plus burst, however the load is spread over them. State
is ephemeral: a restarted GAC starts each table with a full burst, as a new
table does. In local mode it lives in-process; on Kubernetes one router serves
it over HTTP (`gac_http.py`).

On-demand tables (a grant asked with rate 0) get their rate here too, since this
is where every router's consumption meets: twice the table's previous peak, never
below the initial floor (DynamoDB: 12,000 RRU / 4,000 WRU for a new table). The
peak is measured over windows (`planner.PeakTracker`): a jump past twice the old
peak is throttled until the window closes and the peak catches up. No burst is
kept for them beyond one second of the rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kynamo.router import metrics

from kynamo.planner import PeakTracker

ROUTER_TTL = 10.0  # a router not heard from for this long no longer counts in N
ON_DEMAND_BURST = 1.0  # seconds of rate an on-demand table may hold


@dataclass(frozen=True, slots=True)
class OnDemand:
    """How the GAC sizes PAY_PER_REQUEST tables (flags --on-demand-initial-rcu/-wcu, --on-demand-window)."""

    initial_rcu: float = 12000.0
    initial_wcu: float = 4000.0
    window: float = 1800.0

    def floor(self, kind: str) -> float:
        return self.initial_rcu if kind == "read" else self.initial_wcu


@dataclass(slots=True)
class Ledger:
    """One table's read or write capacity at the GAC."""

    rate: float
    burst_seconds: float
    tokens: float
    stamp: float
    routers: dict[str, float] = field(default_factory=dict)
    peak: PeakTracker | None = None  # on-demand tables only

    def refill(self, now: float) -> None:
        cap = self.rate * self.burst_seconds
        self.tokens = min(max(cap, self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


@dataclass(frozen=True, slots=True)
class Grant:
    tokens: float
    routers: int  # routers drawing on this table lately: a lost router degrades to rate / routers
    balance: float  # what stays at the GAC (burst balance)
    rate: float = 0.0  # the rate the GAC applies (an on-demand table's is decided here)


class GlobalAdmission:
    """The ledgers of every table, keyed by (table id, "read"|"write")."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, on_demand: OnDemand | None = None) -> None:
        self.clock = clock
        self.on_demand = on_demand or OnDemand()
        self.ledgers: dict[tuple[str, str], Ledger] = {}

    def on_demand_rate(self, ledger: Ledger, kind: str, now: float, recorded: float = 0.0) -> float:
        """Twice the previous peak (as of the last closed window), at least the floor."""
        if ledger.peak is None:
            ledger.peak = PeakTracker(self.on_demand.window)
        if recorded > ledger.peak.peak:  # what the control plane recorded outlives this GAC's memory
            ledger.peak.peak = recorded
        return max(self.on_demand.floor(kind), 2 * ledger.peak.observe(now))

    def grant(self, router: str, table: str, kind: str, rate: float, want: float,
              burst_seconds: float, label: str = "-", peak: float = 0.0) -> Grant:
        """Hand out up to `want` units of the table's capacity; `rate` 0 means on demand (the GAC picks it).

        `peak`: an on-demand table's previous peak as the control plane recorded it (Table status,
        or local mode's table metadata), so a new or restarted GAC does not start it at the floor.
        """
        now = self.clock()
        key = (table, kind)
        ledger = self.ledgers.get(key)
        on_demand = rate <= 0
        was_provisioned = ledger is not None and ledger.peak is None
        if ledger is None:
            if on_demand:
                rate = max(self.on_demand.floor(kind), 2 * peak, 1.0)
                burst_seconds = ON_DEMAND_BURST
            ledger = self.ledgers[key] = Ledger(rate, burst_seconds, max(rate * burst_seconds, rate), now)
        ledger.refill(now)
        if on_demand:
            if was_provisioned:
                # Switched from provisioned: DynamoDB takes half the provisioned rate as the previous peak.
                ledger.peak = PeakTracker(self.on_demand.window, peak=ledger.rate / 2)
            rate, burst_seconds = max(self.on_demand_rate(ledger, kind, now, peak), 1.0), ON_DEMAND_BURST
            metrics.child(metrics.ON_DEMAND_CAPACITY, label, kind).set(rate)
        else:
            ledger.peak = None  # switched to provisioned: DynamoDB's peak then restarts from it
        ledger.rate, ledger.burst_seconds = rate, burst_seconds  # UpdateTable changed the rate
        ledger.routers[router] = now
        for r, seen in list(ledger.routers.items()):
            if now - seen > ROUTER_TTL:
                del ledger.routers[r]
        granted = max(0.0, min(want, ledger.tokens))
        ledger.tokens -= granted
        if on_demand and ledger.peak is not None:
            ledger.peak.observe(now, granted)  # what routers draw is what the table consumes
        metrics.child(metrics.GAC_GRANTS, label, kind).inc()
        metrics.child(metrics.GAC_GRANTED, label, kind).inc(granted)
        metrics.child(metrics.BURST_BALANCE, label, kind).set(ledger.tokens)
        return Grant(granted, len(ledger.routers), ledger.tokens, rate)

    def forget(self, table: str) -> None:
        for kind in ("read", "write"):
            self.ledgers.pop((table, kind), None)
