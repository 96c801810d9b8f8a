"""Control-plane decisions as pure functions: no I/O, no clock, no randomness.

The local control plane and the Kubernetes operator both call these, so a table
gets the same partitions and the same placement whichever drives it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    zones: Sequence[Sequence[str]], index: int, replication: int = REPLICATION_FACTOR,
    leaders: Mapping[str, int] | None = None,
) -> tuple[list[str], str]:
    """Members for partition `index`: one per zone, rotating within a zone; and who campaigns first.

    `zones` lists the member ids available in each zone. The first leader is the member that
    leads the fewest groups already (`leaders`: groups led or about to be, by member), so tables
    created one after another do not all lead on one node; ties rotate with `index`, so one
    table's partitions spread their leaders too.
    """
    usable = [list(z) for z in zones if z]
    if len(usable) < min(replication, len(zones)) or not usable:
        raise ValueError("not enough zones with members to place a replica group")
    chosen = [z[index % len(z)] for z in usable[:replication]]
    return chosen, least_leading(chosen, leaders or {}, index)


def least_leading(members: Sequence[str], leaders: Mapping[str, int], index: int = 0) -> str:
    """Of `members`, the one leading the fewest groups; ties go to the first from position `index` on."""
    n = len(members)
    order = [members[(index + k) % n] for k in range(n)]
    return min(order, key=lambda m: leaders.get(m, 0))


def leader_counts(groups: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Groups led, by member, from routing entries: the known leader, else the member set to campaign."""
    counts: dict[str, int] = {}
    for g in groups:
        lead = g.get("leader") or g.get("campaign")
        if lead:
            counts[lead] = counts.get(lead, 0) + 1
    return counts


def plan_partitions(
    table: str,
    table_id: str,
    count: int,
    zones: Sequence[Sequence[str]],
    *,
    epoch: int = 1,
    leaders: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The routing entries of a new table: contiguous hash ranges, one replica group each.

    `leaders`: groups each member already leads (see `leader_counts`); the new groups' first
    leaders go where there are fewest.
    """
    bounds = keycodec.hash_space_boundaries(count)
    starts = [b"", *bounds]
    ends: list[bytes | None] = [*bounds, None]
    led = dict(leaders or {})
    plan = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        replicas, first = place_replicas(zones, i, leaders=led)
        led[first] = led.get(first, 0) + 1
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


def on_demand_capacity(
    peak_rcu: float, peak_wcu: float, floor: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float]:
    """Capacity an on-demand table is provisioned for: twice its previous peak, as DynamoDB does,
    and never below `floor` (what a new on-demand table serves at once: DynamoDB 12,000 RRU / 4,000 WRU)."""
    return (max(floor[0], 2 * max(peak_rcu, ON_DEMAND_INITIAL_PEAK[0])),
            max(floor[1], 2 * max(peak_wcu, ON_DEMAND_INITIAL_PEAK[1])))


def table_capacity(
    billing_mode: str, rcu: float | None, wcu: float | None, peak_rcu: float = 0.0, peak_wcu: float = 0.0,
    floor: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float]:
    """The (rcu, wcu) the table must serve: provisioned, or twice the peak when on demand."""
    if billing_mode == "PAY_PER_REQUEST":
        return on_demand_capacity(peak_rcu, peak_wcu, floor)
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
    floor: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float]:
    """One partition's share of the table's capacity, never above what one partition serves."""
    cap_r, cap_w = table_capacity(billing_mode, rcu, wcu, peak_rcu, peak_wcu, floor)
    n = max(1, partitions)
    # An on-demand table with no peak yet has no share to exceed: the partition limit is its share.
    share_r = cap_r / n if cap_r else PARTITION_RCU
    share_w = cap_w / n if cap_w else PARTITION_WCU
    return min(share_r, PARTITION_RCU), min(share_w, PARTITION_WCU)


def update_peak(previous: tuple[float, float], observed: tuple[float, float]) -> tuple[float, float]:
    """The on-demand peak only grows (DynamoDB never shrinks what a table has shown it needs)."""
    return max(previous[0], observed[0]), max(previous[1], observed[1])


@dataclass(slots=True)
class PeakTracker:
    """The highest consumption rate a table has shown, counted only once a window has closed.

    DynamoDB serves an on-demand table up to twice its previous peak at once; more than that
    "within the same 30 minutes" throttles. So the rate seen during the current window (the
    highest over `slot`-long slices of it) becomes the peak only when the window ends: a jump
    is capped at 2x the old peak until then, and capacity doubles window after window.
    Pure: the caller passes `now` and the units it saw.
    """

    window: float
    peak: float = 0.0
    start: float | None = None
    window_peak: float = 0.0
    slot_start: float = 0.0
    slot_units: float = 0.0

    @property
    def slot(self) -> float:
        return min(1.0, self.window / 4)

    def observe(self, now: float, units: float = 0.0) -> float:
        """Account `units` consumed at `now`; returns the peak (as of the last closed window)."""
        if self.start is None:
            self.start = self.slot_start = now
        elapsed = now - self.slot_start
        if elapsed >= self.slot:
            self.window_peak = max(self.window_peak, self.slot_units / elapsed)
            self.slot_start, self.slot_units = now, 0.0
        if now - self.start >= self.window:
            self.peak = max(self.peak, self.window_peak)
            self.start, self.window_peak = now, 0.0
        self.slot_units += units
        return self.peak


def adaptive_limits(
    capacity: float, shares: Mapping[str, float], loads: Mapping[str, float], maximum: float
) -> dict[str, float]:
    """Each partition's limit: its share, plus the table capacity the other partitions leave unused,
    never above what one partition serves (`maximum`; 0: no cap).

    DynamoDB's adaptive capacity: a hot partition borrows what its siblings do not use, so a
    table whose traffic is uneven still gets its provisioned throughput. The table-wide bucket
    (the GAC) still caps the sum; this only stops a split from diluting a hot partition's share.
    `loads` are recent consumption rates (a partition not measured yet counts as idle).
    """
    unused = {p: max(0.0, share - loads.get(p, 0.0)) for p, share in shares.items()}
    spare = sum(unused.values())
    # What the shares do not cover (a capacity that is not their sum) is unused by everyone.
    spare += max(0.0, capacity - sum(shares.values()))
    out = {}
    for p, share in shares.items():
        limit = share + spare - unused[p]
        out[p] = min(limit, maximum) if maximum > 0 else limit
    return out


def partition_limits(
    billing_mode: str,
    rcu: float | None,
    wcu: float | None,
    loads: Mapping[str, tuple[float, float]],
    partitions: Sequence[str],
    maximum: tuple[float, float] = (PARTITION_RCU, PARTITION_WCU),
) -> dict[str, tuple[float | None, float | None]]:
    """The (rcu, wcu) limits the control plane pushes to each partition's replicas.

    Provisioned: adaptive capacity over equal shares (`adaptive_limits`). On demand: no
    pushed limit (None); the GAC holds the table to twice its peak, the storage node
    each partition to the physical maximum, and a partition hot against that splits.
    """
    if billing_mode == "PAY_PER_REQUEST":
        return {p: (None, None) for p in partitions}
    n = max(1, len(partitions))
    cap_r, cap_w = float(rcu or 0), float(wcu or 0)
    shares_r = {p: cap_r / n for p in partitions}
    shares_w = {p: cap_w / n for p in partitions}
    lim_r = adaptive_limits(cap_r, shares_r, {p: loads.get(p, (0.0, 0.0))[0] for p in partitions}, maximum[0])
    lim_w = adaptive_limits(cap_w, shares_w, {p: loads.get(p, (0.0, 0.0))[1] for p in partitions}, maximum[1])
    return {p: (lim_r[p], lim_w[p]) for p in partitions}


# ------------------------------------------------------------ placement



class PlacementError(ValueError):
    """Not enough usable zones to give every full replica a zone of its own."""


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one member goes: a zone, and a node when the nodes are known (else the scheduler picks)."""

    zone: str
    node: str | None = None


def place_group(
    topology: Mapping[str, Sequence[str]],
    count: int,
    *,
    zone_load: Mapping[str, int] | None = None,
    node_load: Mapping[str, int] | None = None,
    unavailable: Collection[str] = (),
    avoid_zones: Collection[str] = (),
) -> list[Slot]:
    """`count` slots in distinct zones, least-loaded zones and nodes first (ties by name, so stable).

    `topology` maps each zone to its nodes (empty: nodes unknown); `unavailable` zones are skipped;
    `avoid_zones` already hold a member of this group. One full replica per zone is the rule that
    lets a group survive a zone outage, so too few zones is an error, not a doubled-up zone.
    """
    zl, nl = zone_load or {}, node_load or {}
    usable = sorted(
        (z for z in topology if z not in unavailable and z not in avoid_zones), key=lambda z: (zl.get(z, 0), z)
    )
    if len(usable) < count:
        raise PlacementError(f"need {count} zones, only {len(usable)} usable: {usable}")
    slots = []
    for z in usable[:count]:
        nodes = sorted(topology[z], key=lambda n: (nl.get(n, 0), n))
        slots.append(Slot(z, nodes[0] if nodes else None))
    return slots


def place_table(
    topology: Mapping[str, Sequence[str]],
    partitions: int,
    replicas: int = REPLICATION_FACTOR,
    *,
    zone_load: Mapping[str, int] | None = None,
    node_load: Mapping[str, int] | None = None,
    unavailable: Collection[str] = (),
) -> list[list[Slot]]:
    """Slots for every partition of a new table, counting each placement so zones and nodes stay even.

    The first slot of each group is where its first leader campaigns; groups rotate which zone
    that is, so no zone leads every partition.
    """
    zl, nl = dict(zone_load or {}), dict(node_load or {})
    plan = []
    for i in range(partitions):
        slots = place_group(topology, replicas, zone_load=zl, node_load=nl, unavailable=unavailable)
        for s in slots:
            zl[s.zone] = zl.get(s.zone, 0) + 1
            if s.node:
                nl[s.node] = nl.get(s.node, 0) + 1
        k = i % len(slots)
        plan.append(slots[k:] + slots[:k])
    return plan


# ------------------------------------------------------------ leader balance
#
# A leader does the most work of a group (every write's Ready cycles, every strong read), so nodes
# should lead about equally many groups. Leaders drift: a node that restarts loses its leaderships
# to the others and gets none back by itself. Like TiKV's balance-leader scheduler, move one
# leadership at a time from the node leading most to one leading fewest (among the group's own full
# replicas), and only while they differ by more than `tolerance`: each move is a brief pause in
# that group's writes (a handover), so no churn over a difference of one.


@dataclass(frozen=True, slots=True)
class LeaderView:
    """One group as leader balance sees it: its leader (None: unknown) and the full replicas that
    could take over (serving and caught up, as the caller judges)."""

    partition: str
    leader: str | None
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MoveLeader:
    """Hand `partition`'s leadership over to its replica `to` (PaxosCore.hand_over)."""

    partition: str
    to: str


def plan_leader_balance(
    groups: Sequence[LeaderView],
    nodes: Collection[str],
    *,
    node_of: Callable[[str], str] = lambda member: member,
    tolerance: int = 1,
) -> MoveLeader | None:
    """One handover from the node leading most groups toward one leading fewer, or None when every
    pair of `nodes` is within `tolerance` (or no group led from a busier node has a replica on a
    quieter one).

    `node_of` maps a member to the node it runs on (local mode: the same; Kubernetes: the pod's
    node). Deterministic: ties go by node name and partition id.
    """
    counts = dict.fromkeys(nodes, 0)
    led: dict[str, list[LeaderView]] = {}
    for g in sorted(groups, key=lambda g: g.partition):
        if g.leader is None:
            continue
        node = node_of(g.leader)
        counts[node] = counts.get(node, 0) + 1
        led.setdefault(node, []).append(g)
    for src in sorted(counts, key=lambda n: (-counts[n], n)):
        for dst in sorted(counts, key=lambda n: (counts[n], n)):
            if counts[src] - counts[dst] <= tolerance:
                break  # every later dst leads at least as many
            for g in led.get(src, []):
                to = next((m for m in g.candidates if node_of(m) == dst and m != g.leader), None)
                if to is not None:
                    return MoveLeader(g.partition, to)
    return None


# ------------------------------------------------------------ replica loss: log-replicas and rebuilds

REPLICA, LOG_REPLICA = "replica", "log-replica"
PENDING, READY, LOST = "pending", "ready", "lost"


@dataclass(frozen=True, slots=True)
class Member:
    """One observed member of a partition's group.

    `state`: pending (started, not ready yet), ready, or lost (pod deleted/failed, node gone,
    process dead too long). `in_group`: in the Paxos configuration (as the leader last reported,
    or as recorded after the last membership change). `applied_index`: how far it has applied.
    """

    name: str
    zone: str
    role: str = REPLICA
    state: str = READY
    in_group: bool = True
    applied_index: int | None = None


@dataclass(frozen=True, slots=True)
class GroupView:
    """What the repair planner sees of one partition."""

    partition: str
    members: tuple[Member, ...]
    replicas: int = REPLICATION_FACTOR
    commit_index: int | None = None  # the leader's; None when no leader could be asked
    formed: bool = True  # the group was bootstrapped: before that, nothing is "lost"
    leader: str | None = None  # the member that leads, when known


# Decisions. The caller maps member names to pods or processes and to storage-node member ids.
@dataclass(frozen=True, slots=True)
class CreateMember:
    """Start a member (pod + volume, or a replica on a local process); it joins the group later."""

    partition: str
    name: str
    role: str
    slot: Slot


@dataclass(frozen=True, slots=True)
class AddToGroup:
    """Ask the leader to add a ready member to the configuration (one change at a time)."""

    partition: str
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class RemoveFromGroup:
    """Ask the leader to drop a member from the configuration."""

    partition: str
    name: str


@dataclass(frozen=True, slots=True)
class DeleteMember:
    """Delete a member's pod and volume: it is out of the group and no longer needed."""

    partition: str
    name: str


Action = CreateMember | AddToGroup | RemoveFromGroup | DeleteMember


def member_name(partition: str, ordinal: int) -> str:
    """Member names never repeat within a partition, so a rebuilt replica is never mistaken for the lost one."""
    return f"{partition}-{ordinal}"


def next_ordinal(partition: str, names: Collection[str]) -> int:
    """The first ordinal above every name ever used (callers include names of deleted members they still see)."""
    used = [-1]
    for n in names:
        head, _, tail = n.rpartition("-")
        if head == partition and tail.isdigit():
            used.append(int(tail))
    return max(used) + 1


def caught_up(member: Member, commit_index: int | None, max_lag: int) -> bool:
    """A member counts toward durability once it is in the group, ready, and near the leader's commit."""
    if not (member.in_group and member.state == READY):
        return False
    if commit_index is None:
        return True  # no leader to compare with: trust the last recorded configuration
    return member.applied_index is not None and commit_index - member.applied_index <= max_lag


def repair_phase(view: GroupView, max_lag: int = 100) -> str:
    """A name for where the group is in the repair cycle (for status and events)."""
    if not view.formed:
        return "forming"
    full = [m for m in view.members if m.role == REPLICA]
    logs = [m for m in view.members if m.role == LOG_REPLICA]
    covered = [m for m in full if caught_up(m, view.commit_index, max_lag)]
    if len(covered) >= view.replicas:
        return "retiring-log-replica" if logs else "healthy"
    if not any(m.in_group and m.state == READY for m in logs):
        return "adding-log-replica"
    if any(m.state == LOST and m.in_group for m in view.members):
        return "removing-lost"
    return "rebuilding"


def plan_repair(
    view: GroupView,
    topology: Mapping[str, Sequence[str]],
    *,
    unavailable: Collection[str] = (),
    zone_load: Mapping[str, int] | None = None,
    node_load: Mapping[str, int] | None = None,
    max_lag: int = 100,
    log_only: Collection[str] = (),
    leaving: Collection[str] = (),
) -> list[Action]:
    """The next steps that heal a group after losing members; idempotent over the observed state.

    While fewer than `replicas` full replicas are in the group and caught up, the group keeps a
    log-replica per missing one (cheap: it holds only the log, so it is ready in seconds and
    restores a full quorum margin at once) and rebuilds full replicas (snapshot + log). Once every
    full replica has caught up the log-replicas are retired. Membership changes go one at a time
    in the safe order: add the log-replica, drop the lost member, add the rebuilt replica, retire
    the log-replica. No membership change is proposed while no leader could be asked.

    `log_only` zones take log-replicas only, and are tried for them first (`kynamo local`'s spare
    process: its zones are processes, and a log-replica there never lands beside the rebuild).
    `leaving` members were moved out of the group on purpose (`plan_moves`): never added back.
    """
    if not view.formed:
        return []
    if leaving:
        view = dataclasses.replace(view, members=tuple(m for m in view.members if m.name not in leaving))
    p, lag = view.partition, max_lag
    members = view.members
    full = [m for m in members if m.role == REPLICA]
    logs = [m for m in members if m.role == LOG_REPLICA]
    live_full = [m for m in full if m.state != LOST]
    live_logs = [m for m in logs if m.state != LOST]
    covered = [m for m in full if caught_up(m, view.commit_index, lag)]
    short = max(0, view.replicas - len(covered))
    names = [m.name for m in members]
    ordinal = next_ordinal(p, names)
    zl, nl = dict(zone_load or {}), dict(node_load or {})
    actions: list[Action] = []

    spare = set(log_only)
    others = set(topology) - spare

    def slot(role: str) -> Slot | None:
        # A full replica takes a zone with no live full replica; a log-replica prefers a zone with no
        # live member at all, and may share a zone if it must (it holds no state to lose to a zone).
        if role == REPLICA:
            tries = [{m.zone for m in live_full} | spare]
        else:
            avoid = {m.zone for m in members if m.state != LOST}
            tries = [avoid, {m.zone for m in live_logs}]
            if spare:
                tries.insert(0, avoid | others | {m.zone for m in live_full})
        for avoid_zones in tries:
            try:
                s = place_group(topology, 1, zone_load=zl, node_load=nl, unavailable=unavailable,
                                avoid_zones=avoid_zones)[0]
            except PlacementError:
                continue
            zl[s.zone] = zl.get(s.zone, 0) + 1
            return s
        return None

    # Pods: rebuild missing full replicas, and cover each not-yet-caught-up one with a log-replica.
    for _ in range(view.replicas - len(live_full)):
        s = slot(REPLICA)
        if s is None:
            break
        actions.append(CreateMember(p, member_name(p, ordinal), REPLICA, s))
        live_full.append(Member(member_name(p, ordinal), s.zone, REPLICA, PENDING, False))
        ordinal += 1
    for _ in range(short - len(live_logs)):
        s = slot(LOG_REPLICA)
        if s is None:
            break
        actions.append(CreateMember(p, member_name(p, ordinal), LOG_REPLICA, s))
        live_logs.append(Member(member_name(p, ordinal), s.zone, LOG_REPLICA, PENDING, False))
        ordinal += 1

    # Members out of the group and of no further use: delete their pods and volumes.
    for m in members:
        if not m.in_group and (m.state == LOST or (m.role == LOG_REPLICA and short == 0)):
            actions.append(DeleteMember(p, m.name))

    # One membership change, in the safe order.
    if view.commit_index is None:
        return actions
    change: Action | None = None
    if short:
        for m in logs:
            if m.state == READY and not m.in_group:
                change = AddToGroup(p, m.name, LOG_REPLICA)
                break
    if change is None:
        for m in members:
            if m.state == LOST and m.in_group:
                # Drop the lost member once its log-replica cover votes (or no cover can be had).
                cover = sum(1 for x in logs if x.in_group and x.state == READY)
                if cover >= min(short, len(live_logs)) or not live_logs:
                    change = RemoveFromGroup(p, m.name)
                break
    if change is None and not any(m.state == LOST and m.in_group for m in members):
        for m in full:
            if m.state == READY and not m.in_group:
                change = AddToGroup(p, m.name, REPLICA)
                break
    if change is None and short == 0:
        for m in logs:
            if m.in_group:
                change = RemoveFromGroup(p, m.name)
                break
    if change is not None:
        actions.append(change)
    return actions


# ------------------------------------------------------------ moving split children onto pods of their own
#
# A split seeds both children inside the parent's pods (every member holds identical state at the
# split index), so right after it the children share those pods. Like TiKV moving a region's peers
# after a split, each child then moves its replicas one at a time: start a replica on a pod of its
# own in the same zone, add it (it catches up by snapshot + log), hand over leadership if the old
# one leads, remove the old one, drop the child's data from the old pod. The parent's pods go once
# they host nothing.


@dataclass(frozen=True, slots=True)
class TransferLeader:
    """Move leadership to `to`, a caught-up replica of our own (a leader may not remove itself). Executors
    ask `to` to campaign, and if the old leader holds on (followers refuse a challenger while their leader
    is healthy), drop the partition's replica from the old leader's pod: it was leaving anyway, and the
    rest of the group, a quorum of caught-up replicas, elects a new leader among themselves."""

    partition: str
    to: str


@dataclass(frozen=True, slots=True)
class ReleaseMember:
    """Drop this partition's replica from a pod it does not own (the pod stays) and forget the member."""

    partition: str
    name: str


def owns_member(partition: str, name: str) -> bool:
    """Is `name` one of `partition`'s own members (its pod labelled with it), not one inherited by a split?"""
    head, _, tail = name.rpartition("-")
    return head == partition and tail.isdigit()


def leaving(view: GroupView) -> list[str]:
    """Inherited members already moved out of the group: only their release is left."""
    return [m.name for m in view.members if not owns_member(view.partition, m.name) and not m.in_group]


def moving(view: GroupView) -> bool:
    """Does the group still have members on pods of another partition?"""
    return any(not owns_member(view.partition, m.name) for m in view.members)


def plan_moves(
    view: GroupView,
    topology: Mapping[str, Sequence[str]],
    *,
    routed: Collection[str] = (),
    node_load: Mapping[str, int] | None = None,
    max_lag: int = 100,
) -> list[Action | TransferLeader | ReleaseMember]:
    """The next steps that move a group's inherited members onto members of its own, zone for zone.

    Replacement pods start at once (starting is the slow part); membership changes go one at a
    time and never take the group below `replicas` caught-up full replicas: add a replacement only
    while the group has no extra voter, remove an inherited member only once its zone's replacement
    has caught up. Nothing moves while the group is repairing (repair comes first) or while no
    leader could be asked. An inherited member out of the group is released once no routing still
    names it (`routed`: member names in the published routing).
    """
    if not view.formed or not moving(view) or repair_phase(view, max_lag) != "healthy":
        return []
    p = view.partition
    own = [m for m in view.members if owns_member(p, m.name)]
    inherited = [m for m in view.members if not owns_member(p, m.name)]
    nl = dict(node_load or {})
    ordinal = next_ordinal(p, [m.name for m in view.members])
    actions: list[Action | TransferLeader | ReleaseMember] = []

    replaced = {m.zone for m in own if m.role == REPLICA and m.state != LOST}
    for m in sorted(inherited, key=lambda m: m.zone):
        if m.in_group and m.role == REPLICA and m.zone not in replaced:
            nodes = sorted(topology.get(m.zone) or [], key=lambda n: (nl.get(n, 0), n))
            slot = Slot(m.zone, nodes[0] if nodes else None)
            if slot.node:
                nl[slot.node] = nl.get(slot.node, 0) + 1
            actions.append(CreateMember(p, member_name(p, ordinal), REPLICA, slot))
            replaced.add(m.zone)
            ordinal += 1
    for m in inherited:
        if not m.in_group and m.name not in routed:
            actions.append(ReleaseMember(p, m.name))
    if view.commit_index is None:
        return actions

    voters = sum(1 for m in view.members if m.in_group and m.role == REPLICA)
    ready_own = {m.zone: m for m in own if m.role == REPLICA and m.in_group
                 and caught_up(m, view.commit_index, max_lag)}
    change: Action | TransferLeader | None = None
    if voters <= view.replicas:
        # The leader's zone last: by the time its replacement joins, every other member is one of ours.
        lead_zone = next((m.zone for m in inherited if m.name == view.leader), None)
        joining = sorted((m for m in own if m.role == REPLICA and m.state == READY and not m.in_group),
                         key=lambda m: (m.zone == lead_zone, m.name))
        if joining:
            change = AddToGroup(p, joining[0].name, REPLICA)
    if change is None:
        # Followers first: removing the leader needs a handover (a leader may not remove itself).
        for m in sorted((m for m in inherited if m.in_group and m.zone in ready_own),
                        key=lambda m: (m.name == view.leader, m.name)):
            if m.name != view.leader:
                change = RemoveFromGroup(p, m.name)
            elif voters > view.replicas:
                change = TransferLeader(p, ready_own[m.zone].name)
            break
    if change is not None:
        actions.append(change)
    return actions


def plan_group(
    view: GroupView,
    topology: Mapping[str, Sequence[str]],
    *,
    unavailable: Collection[str] = (),
    zone_load: Mapping[str, int] | None = None,
    node_load: Mapping[str, int] | None = None,
    routed: Collection[str] = (),
    max_lag: int = 100,
) -> list[Action | TransferLeader | ReleaseMember]:
    """The operator's next steps for one group: repair comes first; a healthy group that still has
    inherited members moves them (repair would otherwise take the replacements for rebuilds)."""
    if moving(view) and repair_phase(view, max_lag) == "healthy":
        return plan_moves(view, topology, routed=routed, node_load=node_load, max_lag=max_lag)
    return list(plan_repair(view, topology, unavailable=unavailable, zone_load=zone_load, node_load=node_load,
                            max_lag=max_lag, leaving=leaving(view)))


def idle_pods(pods: Collection[str], hosted: Collection[str]) -> list[str]:
    """A retired partition's pods that no live partition still has as a member: safe to delete."""
    return sorted(set(pods) - set(hosted))


# ------------------------------------------------------------ splitting


@dataclass(frozen=True, slots=True)
class LoadSample:
    """Consumed capacity of one partition measured at `at` (seconds, caller's clock)."""

    at: float
    rcu: float
    wcu: float


@dataclass(frozen=True, slots=True)
class SplitChoice:
    """Where to split (None: don't) and why; `left_share` is the sampled load left of the key."""

    key: bytes | None
    reason: str
    left_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Split:
    """Decision: split `partition` at `key` (children own [start, key) and [key, end))."""

    partition: str
    key: bytes
    reason: str  # "load", "size" or "throughput"


def hot_since(
    samples: Sequence[LoadSample], share_rcu: float, share_wcu: float, *, hot_fraction: float = 0.9
) -> float | None:
    """Start of the current unbroken run of samples at or above `hot_fraction` of the share, or None.

    Admission control caps a partition at its share, so "over its share" shows as sitting at it.
    """
    start = None
    for s in sorted(samples, key=lambda s: s.at):
        hot_r = share_rcu > 0 and s.rcu >= hot_fraction * share_rcu
        hot_w = share_wcu > 0 and s.wcu >= hot_fraction * share_wcu
        if hot_r or hot_w:
            start = s.at if start is None else start
        else:
            start = None
    return start


def sustained_overload(
    samples: Sequence[LoadSample],
    share_rcu: float,
    share_wcu: float,
    now: float,
    *,
    window: float = 300.0,
    hot_fraction: float = 0.9,
    max_staleness: float = 60.0,
) -> bool:
    """Hot for at least `window` seconds, up to a recent sample: a burst is no reason to split."""
    if not samples or now - max(s.at for s in samples) > max_staleness:
        return False
    start = hot_since(samples, share_rcu, share_wcu, hot_fraction=hot_fraction)
    return start is not None and now - start >= window


def is_sequential(recent: Sequence[bytes], *, min_samples: int = 16, fraction: float = 0.95) -> bool:
    """Do sampled positions, in arrival order, climb (nearly) strictly? Then the heat rides the
    end of the key range: whatever the split key, the right child inherits all of it."""
    if len(recent) < min_samples:
        return False
    ups = sum(1 for i in range(1, len(recent)) if recent[i] > recent[i - 1])
    return ups >= fraction * (len(recent) - 1)


def choose_split_key(
    distribution: Sequence[tuple[bytes, float]],
    start: bytes = b"",
    end: bytes | None = None,
    *,
    recent: Sequence[bytes] = (),
    single_item_share: float = 0.5,
    max_imbalance: float = 0.8,
    min_keys: int = 2,
) -> SplitChoice:
    """A key cutting the sampled load of [start, end) as close to half and half as the samples allow.

    `distribution` is (position, weight) as the storage node's hot-key sampler reports it. No
    split when one item carries more than `single_item_share` (a split cannot divide one item),
    when the keys arrive in a strictly sequential run, or when no cut gets the heavier side under
    `max_imbalance` of the load.
    """
    pts = sorted((k, w) for k, w in distribution if w > 0 and k >= start and (end is None or k < end))
    total = sum(w for _, w in pts)
    if total <= 0:
        return SplitChoice(None, "too-few-samples")
    if max(w for _, w in pts) / total > single_item_share:
        return SplitChoice(None, "single-item")
    if len(pts) < min_keys:
        return SplitChoice(None, "too-few-samples")
    if is_sequential(recent):
        return SplitChoice(None, "sequential")
    best_i, best_left, left = 0, 0.0, 0.0
    for i in range(1, len(pts)):
        left += pts[i - 1][1]
        if best_i == 0 or abs(left - total / 2) < abs(best_left - total / 2):
            best_i, best_left = i, left
    share = best_left / total
    if max(share, 1 - share) > max_imbalance:
        return SplitChoice(None, "unbalanced", share)
    return SplitChoice(pts[best_i][0], "balanced", share)


def hash_midpoint(start: bytes, end: bytes | None) -> bytes | None:
    """The middle of [start, end) in hash space: hashes spread items evenly, so halves hold about
    half the data. None when the range lies within one hash value (one item collection)."""
    lo = int.from_bytes(start[:keycodec.HASH_LEN].ljust(keycodec.HASH_LEN, b"\0"), "big")
    if end is None:
        hi = 1 << (8 * keycodec.HASH_LEN)
    else:
        hi = int.from_bytes(end[:keycodec.HASH_LEN].ljust(keycodec.HASH_LEN, b"\0"), "big")
    mid = (lo + hi) // 2
    if mid <= lo:
        return None
    return mid.to_bytes(keycodec.HASH_LEN, "big")


@dataclass(frozen=True, slots=True)
class PartitionLoad:
    """What the split planner sees of one partition."""

    partition: str
    start: bytes
    end: bytes | None
    samples: tuple[LoadSample, ...] = ()
    distribution: tuple[tuple[bytes, float], ...] = ()
    recent: tuple[bytes, ...] = ()
    size_bytes: int = 0
    splitting: bool = False  # a split of this partition is already under way
    moving: bool = False  # its replicas are still moving onto pods of its own (after its own split)


def plan_split(
    load: PartitionLoad,
    share_rcu: float,
    share_wcu: float,
    now: float,
    *,
    window: float = 300.0,
    hot_fraction: float = 0.9,
    max_bytes: int = PARTITION_BYTES,
) -> Split | SplitChoice:
    """Split for size first (a hard limit), then for sustained load at a load-balancing key.

    Returns the Split, or the SplitChoice explaining why not (for status and events).
    """
    if load.splitting:
        return SplitChoice(None, "already-splitting")
    if load.moving:
        return SplitChoice(None, "moving-replicas")
    if load.size_bytes > max_bytes:
        key = hash_midpoint(load.start, load.end)
        if key is None:  # one item collection: cut it where its (sampled) items are
            key = choose_split_key(load.distribution, load.start, load.end, single_item_share=1.0,
                                   max_imbalance=1.0).key
        return Split(load.partition, key, "size") if key is not None else SplitChoice(None, "size-no-key")
    if not sustained_overload(load.samples, share_rcu, share_wcu, now, window=window, hot_fraction=hot_fraction):
        return SplitChoice(None, "not-hot")
    choice = choose_split_key(load.distribution, load.start, load.end, recent=load.recent)
    if choice.key is None:
        return choice
    return Split(load.partition, choice.key, "load")


def plan_throughput_splits(
    partitions: Sequence[tuple[str, bytes, bytes | None]], desired: int
) -> list[Split]:
    """Raising a table's throughput past what its partitions serve splits the widest ones in half
    (hash midpoint), as DynamoDB does; one split per partition per round, never a merge."""
    missing = desired - len(partitions)
    if missing <= 0:
        return []

    def width(p: tuple[str, bytes, bytes | None]) -> int:
        lo = int.from_bytes(p[1][:keycodec.HASH_LEN].ljust(keycodec.HASH_LEN, b"\0"), "big")
        hi = (1 << 64) if p[2] is None else int.from_bytes(p[2][:keycodec.HASH_LEN].ljust(keycodec.HASH_LEN, b"\0"),
                                                            "big")
        return hi - lo

    out = []
    for pid, start, end in sorted(partitions, key=lambda p: (-width(p), p[1])):
        if len(out) == missing:
            break
        key = hash_midpoint(start, end)
        if key is not None:
            out.append(Split(pid, key, "throughput"))
    return out
