"""Partition-level admission: read and write token buckets at each replica that serves clients.

The router's table-wide buckets (and the GAC behind them) are the first line of
defence; these are the second, as in DynamoDB: they keep one partition (and the
storage node under it) from taking more than the control plane allows it, however
many routers send to it. The control plane pushes each partition's limits
(adaptive capacity: its share plus what the other partitions leave unused); a
partition with no limit pushed is held only to the physical maximum one partition
serves (3,000 RCU / 1,000 WCU).

A request is admitted while the bucket holds any tokens and is then charged what
it really consumed (a read's size is known only once it ran), so the balance may
go below zero and later requests wait for the refill: over any window a partition
serves at most its rate plus its burst, plus one request.

Pure: no I/O, and the caller passes `now` (seconds, monotonic).
"""

from __future__ import annotations

from dataclasses import dataclass, field

READ, WRITE = "read", "write"
KINDS = (READ, WRITE)
PHYSICAL_SECONDS = 1.0  # the physical cap holds one second of the maximum: no burst beyond what a node serves


@dataclass(slots=True)
class Bucket:
    """Tokens accrue at `rate` per second up to `rate * seconds` (at least one second's worth)."""

    rate: float
    seconds: float
    tokens: float
    stamp: float

    @property
    def capacity(self) -> float:
        return self.rate * max(self.seconds, 1.0)

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def reset(self, rate: float, seconds: float, now: float) -> None:
        """New limits keep the balance earned so far, clipped to the new capacity."""
        self.refill(now)
        self.rate, self.seconds = rate, seconds
        self.tokens = min(self.tokens, self.capacity)


@dataclass(slots=True)
class Limits:
    """What the control plane pushed for one partition (None: no limit beyond the physical one)."""

    rcu: float | None = None
    wcu: float | None = None
    burst_seconds: float = 300.0

    def of(self, kind: str) -> float | None:
        return self.rcu if kind == READ else self.wcu


@dataclass(slots=True)
class PartitionThrottle:
    """One partition's buckets: the pushed limit (with burst) and the physical maximum, per kind."""

    max_rcu: float
    max_wcu: float
    limits: Limits = field(default_factory=Limits)
    pushed: dict[str, Bucket] = field(default_factory=dict)
    physical: dict[str, Bucket] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=lambda: {READ: 0, WRITE: 0})

    def physical_max(self, kind: str) -> float:
        return self.max_rcu if kind == READ else self.max_wcu

    def limit(self, kind: str) -> float | None:
        """The rate this partition is held to (None: unlimited, no physical cap either)."""
        pushed = self.limits.of(kind)
        cap = self.physical_max(kind)
        if pushed is None:
            return cap if cap > 0 else None
        return min(pushed, cap) if cap > 0 else pushed

    def set_limits(self, limits: Limits, now: float) -> None:
        """Apply pushed limits; a first limit starts with a full burst, as a new table does."""
        self.limits = limits
        for kind in KINDS:
            rate = limits.of(kind)
            bucket = self.pushed.get(kind)
            if rate is None:
                self.pushed.pop(kind, None)
            elif bucket is None:
                self.pushed[kind] = Bucket(rate, limits.burst_seconds, rate * max(limits.burst_seconds, 1.0), now)
            else:
                bucket.reset(rate, limits.burst_seconds, now)

    def _buckets(self, kind: str, now: float) -> list[Bucket]:
        out = []
        cap = self.physical_max(kind)
        if cap > 0:
            bucket = self.physical.get(kind)
            if bucket is None or bucket.rate != cap:
                bucket = self.physical[kind] = Bucket(cap, PHYSICAL_SECONDS, cap * PHYSICAL_SECONDS, now)
            out.append(bucket)
        pushed = self.pushed.get(kind)
        if pushed is not None:
            out.append(pushed)
        for bucket in out:
            bucket.refill(now)
        return out

    def admit(self, kind: str, now: float, reserve: float = 0.0) -> bool:
        """May a request of `kind` start? `reserve` units are taken at once when known (writes)."""
        buckets = self._buckets(kind, now)
        if any(b.tokens <= 0 for b in buckets):
            self.throttled[kind] += 1
            return False
        if reserve:
            self.charge(kind, reserve, now)
        return True

    def charge(self, kind: str, units: float, now: float) -> None:
        """Bill what a request consumed (negative: give back a reservation that was never used)."""
        for bucket in self._buckets(kind, now):
            bucket.tokens -= units

    def tokens(self, kind: str, now: float) -> float | None:
        """The balance a request would see: the smaller of the buckets (None: nothing limits it)."""
        buckets = self._buckets(kind, now)
        return min(b.tokens for b in buckets) if buckets else None
