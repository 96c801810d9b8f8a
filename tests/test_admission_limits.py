"""Pure parts of issue 6's admission: partition buckets, adaptive limits, on-demand peaks (fake clocks)."""

from __future__ import annotations

import asyncio

import pytest
from kynamo.router.admission import Admission
from kynamo.router.gac import GlobalAdmission, OnDemand
from kynamo.router.protocol import ProvisionedThroughputExceededException
from kynamo.storage_node.throttle import READ, WRITE, Limits, PartitionThrottle

from kynamo import planner as P

# ------------------------------------------------------------------ partition buckets (storage node)


def served(t: PartitionThrottle, kind: str, now: float, n: int, units: float = 1.0) -> int:
    """Requests of `units` each admitted out of `n` offered at `now` (charged after they run, like reads)."""
    ok = 0
    for _ in range(n):
        if t.admit(kind, now):
            t.charge(kind, units, now)
            ok += 1
    return ok


def test_no_limit_pushed_means_the_physical_maximum_only() -> None:
    t = PartitionThrottle(3000, 1000)
    assert t.limit(READ) == 3000 and t.limit(WRITE) == 1000
    assert served(t, WRITE, 0.0, 5000) == 1000  # one second of the physical maximum, no burst beyond it
    assert served(t, WRITE, 0.5, 5000) == 500  # refills at 1,000 WCU/s
    assert served(t, READ, 0.5, 100) == 100  # reads have their own bucket


def test_zero_maximum_is_no_cap() -> None:
    t = PartitionThrottle(0, 0)
    assert t.limit(WRITE) is None and t.tokens(WRITE, 0.0) is None
    assert served(t, WRITE, 0.0, 10_000) == 10_000


def test_pushed_limit_with_burst_then_rate() -> None:
    t = PartitionThrottle(3000, 1000)
    t.set_limits(Limits(rcu=None, wcu=10, burst_seconds=5), now=0.0)
    assert t.limit(WRITE) == 10 and t.limit(READ) == 3000
    assert served(t, WRITE, 0.0, 200) == 50  # a first limit starts with its full burst: 5 s x 10
    assert served(t, WRITE, 0.0, 10) == 0
    assert served(t, WRITE, 1.0, 200) == 10
    assert served(t, WRITE, 100.0, 200) == 50  # unused capacity kept up to the burst, no more
    assert t.throttled[WRITE] > 0 and t.throttled[READ] == 0


def test_a_request_is_admitted_on_any_balance_and_its_cost_is_debt() -> None:
    t = PartitionThrottle(3000, 1000)
    t.set_limits(Limits(rcu=4, wcu=None, burst_seconds=0), now=0.0)  # burst 0 keeps one second
    assert served(t, READ, 0.0, 10, units=10.0) == 1  # a 10-unit Query on 4 tokens: served, balance -6
    assert served(t, READ, 1.0, 10, units=1.0) == 0  # -2 after a second
    assert served(t, READ, 3.0, 10, units=1.0) == 4  # debt paid, then 4 units/s


def test_new_limits_keep_the_balance_clipped_to_the_new_capacity() -> None:
    t = PartitionThrottle(3000, 1000)
    t.set_limits(Limits(wcu=100, burst_seconds=10), now=0.0)  # 1,000 tokens
    t.set_limits(Limits(wcu=5, burst_seconds=10), now=0.0)  # capacity 50
    assert served(t, WRITE, 0.0, 1000) == 50
    t.set_limits(Limits(wcu=None), now=0.0)  # lifted: only the physical bucket remains
    assert served(t, WRITE, 0.0, 10) == 10


def test_writes_reserve_up_front_and_give_back() -> None:
    t = PartitionThrottle(3000, 1000)
    t.set_limits(Limits(wcu=2, burst_seconds=0), now=0.0)
    assert t.admit(WRITE, 0.0, reserve=2.0)
    assert not t.admit(WRITE, 0.0, reserve=1.0)  # the reservation spent the balance
    t.charge(WRITE, -2.0, 0.0)  # the write failed before it was proposed
    assert t.admit(WRITE, 0.0, reserve=1.0)


# ------------------------------------------------------------------ adaptive capacity (planner)


def test_adaptive_limit_is_share_plus_what_the_others_leave() -> None:
    shares = {"a": 25.0, "b": 25.0, "c": 25.0, "d": 25.0}
    lim = P.adaptive_limits(100, shares, {"a": 25.0, "b": 0.0, "c": 5.0, "d": 10.0}, 1000)
    assert lim == {"a": 25 + 25 + 20 + 15, "b": 25 + 0 + 20 + 15, "c": 25 + 0 + 25 + 15, "d": 25 + 0 + 25 + 20}
    # every sibling busy at its share: no one borrows
    assert P.adaptive_limits(100, shares, dict.fromkeys(shares, 30.0), 1000) == dict.fromkeys(shares, 25.0)
    # a hot partition alone gets the whole table, but never more than one partition serves
    assert P.adaptive_limits(100, shares, {"a": 90.0}, 1000)["a"] == 100
    assert P.adaptive_limits(4000, {k: 1000.0 for k in shares}, {"a": 900.0}, 1000)["a"] == 1000
    assert P.adaptive_limits(4000, {k: 1000.0 for k in shares}, {"a": 900.0}, 0)["a"] == 4000  # 0: no cap


def test_partition_limits_provisioned_and_on_demand() -> None:
    parts = ["p0", "p1", "p2", "p3"]
    lim = P.partition_limits("PROVISIONED", 40, 100, {"p0": (0.0, 75.0), "p1": (10.0, 25.0)}, parts)
    # p2 and p3 not measured yet: idle. p0 takes 75 WCU of a 25 share, p1 all of its 10 RCU share.
    assert lim["p0"] == (10 + 0 + 10 + 10, 25 + 0 + 25 + 25)
    assert lim["p1"] == (10 + 10 + 10 + 10, 25 + 0 + 25 + 25)
    assert lim["p2"] == (10 + 10 + 0 + 10, 25 + 0 + 0 + 25)
    # on demand: nothing pushed; the GAC and the physical maximum hold it
    assert P.partition_limits("PAY_PER_REQUEST", None, None, {}, parts) == dict.fromkeys(parts, (None, None))


def test_on_demand_share_uses_the_floor_and_the_peak() -> None:
    assert P.on_demand_capacity(0, 0, (12000, 4000)) == (12000, 4000)
    assert P.on_demand_capacity(10000, 100, (12000, 4000)) == (20000, 4000)
    assert P.partition_share("PAY_PER_REQUEST", None, None, 2, 0, 300, floor=(0, 0)) == (3000, 300)
    assert P.partition_share("PAY_PER_REQUEST", None, None, 1, 0, 10, floor=(0, 100)) == (3000, 100)


# ------------------------------------------------------------------ on-demand peak (planner.PeakTracker)


def test_peak_counts_only_closed_windows_and_never_shrinks() -> None:
    t = P.PeakTracker(window=10.0)
    now = 0.0
    for _ in range(99):  # 50 units/s for ~10 s
        now += 0.1
        assert t.observe(now, 5.0) == 0.0  # the window is still open: no peak yet
    now += 0.5
    assert t.observe(now) == pytest.approx(50.0, rel=0.1)
    for _ in range(200):  # quieter for 20 s
        now += 0.1
        t.observe(now, 1.0)
    assert t.observe(now) == pytest.approx(50.0, rel=0.05)  # the peak only grows


def test_peak_is_the_busiest_slot_not_the_window_average() -> None:
    t = P.PeakTracker(window=8.0)  # 1 s slots
    now = 0.0
    for i in range(80):
        now += 0.1
        t.observe(now, 20.0 if 30 <= i < 50 else 0.0)  # two seconds at 200 units/s, idle otherwise
    now += 0.5
    assert t.observe(now) == pytest.approx(200.0, rel=0.15)


# ------------------------------------------------------------------ on-demand at the GAC (fake clock)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ON_DEMAND = {"name": "od", "id": "od-id", "billing_mode": "PAY_PER_REQUEST"}


def offer(adm: Admission, meta: dict[str, object], n: int, kind: str = "write") -> int:
    async def go() -> int:
        ok = 0
        for _ in range(n):
            try:
                reserved = await adm.admit(meta, kind)
            except ProvisionedThroughputExceededException:
                continue
            adm.charge(meta, kind, 1.0, reserved)
            ok += 1
        return ok

    return asyncio.run(go())


def run_seconds(clock: Clock, adm: Admission, meta: dict[str, object], seconds: float, per_second: int,
                kind: str = "write") -> int:
    """Offer `per_second` requests each second for `seconds`, in 0.1 s steps; returns how many were admitted."""
    ok = 0
    for _ in range(round(seconds * 10)):
        clock.now += 0.1
        ok += offer(adm, meta, per_second // 10, kind)
    return ok


def test_new_on_demand_table_serves_its_floor_at_once() -> None:
    clock = Clock()
    od = OnDemand(initial_rcu=300, initial_wcu=100, window=60)
    adm = Admission(GlobalAdmission(clock, od), clock=clock, on_demand=od)
    # 100 WRU/s offered: all of it, from the first second
    assert run_seconds(clock, adm, ON_DEMAND, 5, 100) >= 490
    # reads have their own floor
    assert 1400 <= run_seconds(clock, adm, ON_DEMAND, 5, 500, "read") <= 1500 + 300 + 40


def test_on_demand_jump_is_throttled_until_the_peak_catches_up() -> None:
    clock = Clock()
    od = OnDemand(initial_rcu=300, initial_wcu=100, window=4)
    adm = Admission(GlobalAdmission(clock, od), clock=clock, on_demand=od)
    gac = adm.gac
    assert isinstance(gac, GlobalAdmission)
    per_window = [run_seconds(clock, adm, ON_DEMAND, 4, 350) for _ in range(5)]  # 350/s: 3.5x the floor
    # window 1 at the floor (plus one second held), then 2x the peak each window until the offer fits
    assert 400 <= per_window[0] <= 4 * 100 + 100 + 20
    assert per_window[1] > per_window[0] * 1.5
    assert per_window[-1] >= 4 * 350 * 0.97  # fully admitted once the peak caught up
    ledger = gac.ledgers[("od-id", "write")]
    assert ledger.rate >= 350 and ledger.peak is not None and ledger.peak.peak >= 175


def test_on_demand_admission_off_when_not_configured() -> None:
    adm = Admission(clock=Clock())  # no on-demand config: PAY_PER_REQUEST tables pass unmetered
    assert offer(adm, ON_DEMAND, 10_000) == 10_000


def test_grant_reports_the_on_demand_rate() -> None:
    clock = Clock()
    gac = GlobalAdmission(clock, OnDemand(initial_rcu=30, initial_wcu=10, window=60))
    g = gac.grant("r", "t", "write", 0.0, 5.0, 300.0)
    assert g.rate == 10 and g.tokens == 5.0
    g = gac.grant("r", "t", "write", 0.0, 50.0, 300.0)
    assert g.tokens == pytest.approx(5.0)  # one second of the rate, no 300 s burst for on-demand
    g = gac.grant("r", "t", "write", 20.0, 1.0, 300.0)  # switched to provisioned: its rate, its burst
    assert g.rate == 20.0


def test_switched_to_on_demand_keeps_its_provisioned_rate_as_twice_the_peak() -> None:
    clock = Clock()
    gac = GlobalAdmission(clock, OnDemand(initial_rcu=30, initial_wcu=10, window=60))
    gac.grant("r", "t", "write", 500.0, 1.0, 300.0)  # provisioned at 500 WCU
    clock.now += 1
    assert gac.grant("r", "t", "write", 0.0, 1.0, 300.0).rate == 500  # on demand now: previous peak 250
    assert gac.grant("r", "new", "write", 0.0, 1.0, 300.0).rate == 10  # a new on-demand table: the floor


def test_a_new_gac_starts_an_on_demand_table_at_twice_its_recorded_peak() -> None:
    """The GAC keeps no state; a restarted one learns the peak the control plane recorded, not the floor."""
    clock = Clock()
    od = OnDemand(initial_rcu=30, initial_wcu=10, window=60)
    gac = GlobalAdmission(clock, od)
    assert gac.grant("r", "t", "write", 0.0, 1.0, 300.0).rate == 10  # nothing recorded: the floor
    fresh = GlobalAdmission(clock, od)
    assert fresh.grant("r", "t", "write", 0.0, 1.0, 300.0, peak=400.0).rate == 800  # 2x the recorded peak
    clock.now += 1
    # A lower recorded figure never lowers what the GAC has seen; a higher one raises it at once.
    assert fresh.grant("r", "t", "write", 0.0, 1.0, 300.0, peak=100.0).rate == 800
    assert fresh.grant("r", "t", "write", 0.0, 1.0, 300.0, peak=600.0).rate == 1200
    # Through the router's admission: the table metadata's recorded peak reaches the GAC.
    adm = Admission(GlobalAdmission(clock, od), clock=clock, on_demand=od)
    meta = {**ON_DEMAND, "peak": [0.0, 200.0]}
    assert run_seconds(clock, adm, meta, 3, 350) >= 3 * 350 * 0.9  # 350/s fits under 2 x 200 at once
    assert run_seconds(clock, adm, ON_DEMAND | {"id": "other"}, 3, 350) < 3 * 350 * 0.5  # no record: floor
