"""Admission control: a token bucket per provisioned table, for reads and for writes.

As in DynamoDB, a table accrues up to 300 seconds of unused capacity as burst.
A request is admitted while its bucket is positive and charged afterwards with
what it actually consumed (a Query's cost is known only once it has run), so a
large request can take the bucket negative and the table then waits it out.
With one router (local mode) this per-router bucket is the table's global
admission control; several routers would share the rate through the control plane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kynamo.router import metrics
from kynamo.router.protocol import ProvisionedThroughputExceededException

BURST_SECONDS = 300.0


@dataclass(slots=True)
class TokenBucket:
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


class Admission:
    """Buckets keyed by (table id, read|write), following the table's current provisioned rate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _bucket(self, meta: dict, kind: str) -> TokenBucket | None:
        if meta.get("billing_mode") != "PROVISIONED":
            return None
        rate = float(meta.get("rcu" if kind == "read" else "wcu") or 0)
        if rate <= 0:
            return None
        key = (str(meta.get("id") or meta["name"]), kind)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, rate * BURST_SECONDS, now)
        elif bucket.rate != rate:  # UpdateTable changed the provisioned rate
            bucket.refill(now)
            bucket.rate = rate
        return bucket

    def admit(self, meta: dict, kind: str) -> None:
        """Refuse the request when the table has used up its capacity and burst."""
        bucket = self._bucket(meta, kind)
        if bucket is not None and bucket.refill(self.clock()) <= 0:
            metrics.THROTTLES.labels(meta["name"], kind).inc()
            raise ProvisionedThroughputExceededException()

    def charge(self, meta: dict, kind: str, units: float) -> None:
        bucket = self._bucket(meta, kind)
        if bucket is not None:
            bucket.refill(self.clock())
            bucket.tokens -= units
