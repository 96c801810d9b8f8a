"""Control-plane decisions as pure functions: no I/O, no clock, no randomness.

The local control plane and the Kubernetes operator both call these, so a table
gets the same partitions and the same placement whichever drives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kynamo import keycodec

# What one partition serves, as in DynamoDB.
PARTITION_RCU = 3000
PARTITION_WCU = 1000
REPLICATION_FACTOR = 3


def partition_count(billing_mode: str, rcu: int | None = None, wcu: int | None = None) -> int:
    """How many partitions a new table starts with: enough for its provisioned throughput."""
    if billing_mode == "PAY_PER_REQUEST":
        return 1
    need = max((rcu or 0) / PARTITION_RCU, (wcu or 0) / PARTITION_WCU)
    return max(1, math.ceil(need))


def partition_id(table: str, table_id: str, index: int) -> str:
    """Unique across re-creations of a table with the same name (so old replicas never answer)."""
    return f"{table}-{table_id[:8]}-{index}"


def place_replicas(
    zones: Sequence[Sequence[str]], index: int, replication: int = REPLICATION_FACTOR
) -> tuple[list[str], str]:
    """Members for partition `index`: one per zone, rotating within a zone; and who campaigns first.

    `zones` lists the member ids available in each zone. Leaders are rotated across zones so
    one zone does not lead every partition.
    """
    usable = [list(z) for z in zones if z]
    if len(usable) < min(replication, len(zones)) or not usable:
        raise ValueError("not enough zones with members to place a replica group")
    chosen = [z[index % len(z)] for z in usable[:replication]]
    return chosen, chosen[index % len(chosen)]


def plan_partitions(
    table: str,
    table_id: str,
    count: int,
    zones: Sequence[Sequence[str]],
    *,
    epoch: int = 1,
) -> list[dict[str, Any]]:
    """The routing entries of a new table: contiguous hash ranges, one replica group each."""
    bounds = keycodec.hash_space_boundaries(count)
    starts = [b"", *bounds]
    ends: list[bytes | None] = [*bounds, None]
    plan = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        replicas, first = place_replicas(zones, i)
        plan.append(
            {
                "id": partition_id(table, table_id, i),
                "start": start.hex(),
                "end": None if end is None else end.hex(),
                "epoch": epoch,
                "replicas": replicas,
                "log_replicas": [],
                "leader": None,
                "campaign": first,
            }
        )
    return plan


def segment_range(segment: int, total: int) -> tuple[bytes, bytes | None]:
    """Position range of a parallel-scan segment: an equal slice of the hash space."""
    bounds = keycodec.hash_space_boundaries(total) if total > 1 else []
    starts = [b"", *bounds]
    ends: list[bytes | None] = [*bounds, None]
    return starts[segment], ends[segment]


# ============================================================ the control plane's decisions
#
# Everything below is shared by the operator and the local control plane: each
# function takes a snapshot (what is desired, what was observed, and `now` when
# time matters) and returns decisions as data. Callers do the I/O.

PARTITION_BYTES = 10 * 10**9  # DynamoDB splits a partition past 10 GB
# A new on-demand table starts as if its previous peak were this (rcu, wcu). DynamoDB assumes a
# large one; on Kubernetes every partition costs pods, so we start small and grow from observed peaks.
ON_DEMAND_INITIAL_PEAK = (0.0, 0.0)


def quorum(members: int) -> int:
    """Votes a Paxos group of `members` needs: also the PodDisruptionBudget's minAvailable."""
    return members // 2 + 1


def on_demand_capacity(peak_rcu: float, peak_wcu: float) -> tuple[float, float]:
    """Capacity an on-demand table is provisioned for: twice its previous peak, as DynamoDB does."""
    return 2 * max(peak_rcu, ON_DEMAND_INITIAL_PEAK[0]), 2 * max(peak_wcu, ON_DEMAND_INITIAL_PEAK[1])


def table_capacity(
    billing_mode: str, rcu: float | None, wcu: float | None, peak_rcu: float = 0.0, peak_wcu: float = 0.0
) -> tuple[float, float]:
    """The (rcu, wcu) the table must serve: provisioned, or twice the peak when on demand."""
    if billing_mode == "PAY_PER_REQUEST":
        return on_demand_capacity(peak_rcu, peak_wcu)
    return float(rcu or 0), float(wcu or 0)


def desired_partition_count(
    billing_mode: str,
    rcu: float | None = None,
    wcu: float | None = None,
    *,
    size_bytes: int = 0,
    peak_rcu: float = 0.0,
    peak_wcu: float = 0.0,
) -> int:
    """Partitions needed for throughput and size: 3,000 RCU, 1,000 WCU and 10 GB each."""
    cap_r, cap_w = table_capacity(billing_mode, rcu, wcu, peak_rcu, peak_wcu)
    need = max(cap_r / PARTITION_RCU, cap_w / PARTITION_WCU, size_bytes / PARTITION_BYTES)
    return max(1, math.ceil(need))


def partition_share(
    billing_mode: str,
    rcu: float | None,
    wcu: float | None,
    partitions: int,
    peak_rcu: float = 0.0,
    peak_wcu: float = 0.0,
) -> tuple[float, float]:
    """One partition's share of the table's capacity, never above what one partition serves."""
    cap_r, cap_w = table_capacity(billing_mode, rcu, wcu, peak_rcu, peak_wcu)
    n = max(1, partitions)
    # An on-demand table with no peak yet has no share to exceed: the partition limit is its share.
    share_r = cap_r / n if cap_r else PARTITION_RCU
    share_w = cap_w / n if cap_w else PARTITION_WCU
    return min(share_r, PARTITION_RCU), min(share_w, PARTITION_WCU)


def update_peak(previous: tuple[float, float], observed: tuple[float, float]) -> tuple[float, float]:
    """The on-demand peak only grows (DynamoDB never shrinks what a table has shown it needs)."""
    return max(previous[0], observed[0]), max(previous[1], observed[1])
