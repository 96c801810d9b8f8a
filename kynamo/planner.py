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
