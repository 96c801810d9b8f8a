"""Every control-plane decision, as a pure function over a snapshot."""

from __future__ import annotations

import dataclasses

import pytest

from kynamo import planner as P
from kynamo.planner import (
    LOG_REPLICA,
    LOST,
    PENDING,
    READY,
    REPLICA,
    AddToGroup,
    CreateMember,
    DeleteMember,
    GroupView,
    Member,
    RemoveFromGroup,
    Slot,
)

# ------------------------------------------------------------ sizing


def test_partition_count_from_wcu_as_dynamodb():
    assert P.desired_partition_count("PROVISIONED", 0, 3200) == 4
    assert P.desired_partition_count("PROVISIONED", 0, 3000) == 3
    assert P.desired_partition_count("PROVISIONED", 0, 1) == 1


def test_partition_count_from_rcu_and_the_larger_need_wins():
    assert P.desired_partition_count("PROVISIONED", 9001, 100) == 4
    assert P.desired_partition_count("PROVISIONED", 3000, 2500) == 3


def test_partition_count_from_size():
    assert P.desired_partition_count("PROVISIONED", 5, 5, size_bytes=25 * 10**9) == 3
    assert P.desired_partition_count("PROVISIONED", 5, 5, size_bytes=10 * 10**9) == 1


def test_minimum_one_partition():
    assert P.desired_partition_count("PROVISIONED", None, None) == 1
    assert P.desired_partition_count("PAY_PER_REQUEST") == 1


def test_on_demand_provisioned_for_twice_the_previous_peak():
    assert P.on_demand_capacity(1000, 1500) == (2000, 3000)
    # peak 1,500 WCU -> capacity 3,000 WCU -> 3 partitions; 1,600 -> 3,200 -> 4
    assert P.desired_partition_count("PAY_PER_REQUEST", peak_rcu=0, peak_wcu=1500) == 3
    assert P.desired_partition_count("PAY_PER_REQUEST", peak_rcu=0, peak_wcu=1600) == 4
    # provisioned numbers are ignored for an on-demand table
    assert P.desired_partition_count("PAY_PER_REQUEST", 99999, 99999, peak_wcu=10) == 1


def test_peak_only_grows():
    assert P.update_peak((100, 50), (80, 70)) == (100, 70)


def test_partition_share_is_capped_at_partition_limits():
    assert P.partition_share("PROVISIONED", 1000, 400, 2) == (500, 200)
    assert P.partition_share("PROVISIONED", 30000, 30000, 1) == (3000, 1000)
    # on-demand with no peak yet: the partition limit is the share
    assert P.partition_share("PAY_PER_REQUEST", None, None, 1) == (3000, 1000)


def test_quorum():
    assert [P.quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_existing_local_mode_api_unchanged():
    assert P.partition_count("PROVISIONED", 0, 3200) == 4
    parts = P.plan_partitions("t", "abcdef123456", 2, [["a"], ["b"], ["c"]])
    assert [p["id"] for p in parts] == ["t-abcdef12-0", "t-abcdef12-1"]


# ------------------------------------------------------------ placement

TOPO = {"z1": ["n1", "n2"], "z2": ["n3", "n4"], "z3": ["n5", "n6"]}


def test_one_full_replica_per_distinct_zone():
    slots = P.place_group(TOPO, 3)
    assert sorted(s.zone for s in slots) == ["z1", "z2", "z3"]


def test_least_loaded_zone_and_node_first():
    slots = P.place_group(
        {**TOPO, "z4": ["n7"]}, 3, zone_load={"z1": 5, "z2": 1, "z3": 0, "z4": 0}, node_load={"n3": 3, "n4": 0}
    )
    assert [s.zone for s in slots] == ["z3", "z4", "z2"]
    assert dict((s.zone, s.node) for s in slots)["z2"] == "n4"


def test_unavailable_zone_is_skipped():
    topo = {**TOPO, "z4": ["n7"]}
    slots = P.place_group(topo, 3, unavailable={"z2"})
    assert "z2" not in {s.zone for s in slots} and len({s.zone for s in slots}) == 3


def test_too_few_zones_is_an_error_never_two_replicas_in_one_zone():
    with pytest.raises(P.PlacementError):
        P.place_group(TOPO, 3, unavailable={"z1"})


def test_unknown_nodes_leave_the_node_to_the_scheduler():
    assert P.place_group({"a": [], "b": [], "c": []}, 3) == [Slot("a"), Slot("b"), Slot("c")]


def test_table_placement_is_balanced_across_zones_nodes_and_leaders():
    plan = P.place_table({**TOPO, "z4": ["n7", "n8"]}, 8, 3)
    zone_counts: dict[str, int] = {}
    node_counts: dict[str, int] = {}
    for group in plan:
        assert len({s.zone for s in group}) == 3
        for s in group:
            zone_counts[s.zone] = zone_counts.get(s.zone, 0) + 1
            node_counts[s.node] = node_counts.get(s.node, 0) + 1
    assert max(zone_counts.values()) - min(zone_counts.values()) <= 1  # 24 replicas over 4 zones: 6 each
    assert max(node_counts.values()) - min(node_counts.values()) <= 1
    first = [g[0].zone for g in plan]
    assert len(set(first)) >= 3  # leaders rotate


# ------------------------------------------------------------ replica loss


def healthy(n: int = 3, applied: int = 100) -> list[Member]:
    return [Member(f"p-{i}", f"z{i + 1}", REPLICA, READY, True, applied) for i in range(n)]


def view(members, commit=100, **kw) -> GroupView:
    return GroupView("p", tuple(members), commit_index=commit, **kw)


def lose(members, name):
    return [dataclasses.replace(m, state=LOST) if m.name == name else m for m in members]


def test_healthy_group_needs_nothing():
    assert P.plan_repair(view(healthy()), TOPO) == []
    assert P.repair_phase(view(healthy())) == "healthy"


def test_group_not_formed_yet_is_left_alone():
    ms = [dataclasses.replace(m, state=PENDING, in_group=False) for m in healthy()]
    assert P.plan_repair(view(ms, formed=False), TOPO) == []


def test_loss_adds_a_log_replica_and_starts_a_rebuild_at_once():
    ms = lose(healthy(), "p-1")
    acts = P.plan_repair(view(ms), TOPO)
    creates = [a for a in acts if isinstance(a, CreateMember)]
    assert {(a.role, a.name) for a in creates} == {(REPLICA, "p-3"), (LOG_REPLICA, "p-4")}
    rebuild = next(a for a in creates if a.role == REPLICA)
    assert rebuild.slot.zone == "z2"  # back into the lost replica's zone
    # the lost member stays in the group until the log-replica votes
    assert not any(isinstance(a, (RemoveFromGroup, AddToGroup)) for a in acts)
    assert P.repair_phase(view(ms)) == "adding-log-replica"


def test_repair_is_idempotent_once_pods_exist():
    ms = [*lose(healthy(), "p-1"), Member("p-3", "z2", REPLICA, PENDING, False), Member("p-4", "z2", LOG_REPLICA,
                                                                                         PENDING, False)]
    assert P.plan_repair(view(ms), TOPO) == []


def test_full_repair_cycle_one_membership_change_at_a_time():
    lost = lose(healthy(), "p-1")
    # log-replica ready -> added through the leader first
    ms = [*lost, Member("p-3", "z2", REPLICA, PENDING, False), Member("p-4", "z2", LOG_REPLICA, READY, False)]
    assert P.plan_repair(view(ms), TOPO) == [AddToGroup("p", "p-4", LOG_REPLICA)]
    # log-replica votes -> the lost member is dropped
    ms[-1] = dataclasses.replace(ms[-1], in_group=True, applied_index=None)
    assert P.plan_repair(view(ms), TOPO) == [RemoveFromGroup("p", "p-1")]
    assert P.repair_phase(view(ms)) == "removing-lost"
    # lost member out of the group -> its pod and volume go; the rebuilt replica joins when ready
    ms = [m for m in ms if m.name != "p-1"] + [Member("p-1", "z2", REPLICA, LOST, False)]
    assert P.plan_repair(view(ms), TOPO) == [DeleteMember("p", "p-1")]
    ms = [m for m in ms if m.name != "p-1"]
    ms = [dataclasses.replace(m, state=READY, applied_index=0) if m.name == "p-3" else m for m in ms]
    assert P.plan_repair(view(ms), TOPO) == [AddToGroup("p", "p-3", REPLICA)]
    # joined but still catching up (snapshot + log): the log-replica stays
    ms = [dataclasses.replace(m, in_group=True, applied_index=10) if m.name == "p-3" else m for m in ms]
    ms = [dataclasses.replace(m, applied_index=4995) if m.name in ("p-0", "p-2") else m for m in ms]
    assert P.plan_repair(view(ms, commit=5000), TOPO) == []
    assert P.repair_phase(view(ms, commit=5000)) == "rebuilding"
    # caught up -> retire the log-replica, then delete its pod
    ms = [dataclasses.replace(m, applied_index=4990) if m.name == "p-3" else m for m in ms]
    assert P.plan_repair(view(ms, commit=5000), TOPO) == [RemoveFromGroup("p", "p-4")]
    assert P.repair_phase(view(ms, commit=5000)) == "retiring-log-replica"
    ms = [dataclasses.replace(m, in_group=False) if m.name == "p-4" else m for m in ms]
    assert P.plan_repair(view(ms, commit=5000), TOPO) == [DeleteMember("p", "p-4")]
    ms = [m for m in ms if m.name != "p-4"]
    assert P.plan_repair(view(ms, commit=5000), TOPO) == []


def test_no_membership_change_without_a_leader_but_pods_still_start():
    acts = P.plan_repair(view(lose(healthy(), "p-0"), commit=None), TOPO)
    assert {type(a) for a in acts} == {CreateMember}


def test_lost_zone_unavailable_log_replica_elsewhere_rebuild_waits():
    ms = lose(healthy(), "p-1")
    acts = P.plan_repair(view(ms), TOPO, unavailable={"z2"})
    creates = [a for a in acts if isinstance(a, CreateMember)]
    # no zone without a full replica -> no rebuild yet (never two full replicas per zone)
    assert [a.role for a in creates] == [LOG_REPLICA]
    assert creates[0].slot.zone in {"z1", "z3"}


def test_lost_zone_replaced_by_a_spare_zone():
    ms = lose(healthy(), "p-1")
    topo = {**TOPO, "z4": ["n7"]}
    acts = P.plan_repair(view(ms), topo, unavailable={"z2"})
    rebuild = next(a for a in acts if isinstance(a, CreateMember) and a.role == REPLICA)
    assert rebuild.slot == Slot("z4", "n7")


def test_lost_log_replica_is_replaced_while_still_needed():
    ms = [*lose(healthy(), "p-1"), Member("p-3", "z2", REPLICA, PENDING, False),
          Member("p-4", "z2", LOG_REPLICA, LOST, True)]
    acts = P.plan_repair(view(ms), TOPO)
    assert any(isinstance(a, CreateMember) and a.role == LOG_REPLICA and a.name == "p-5" for a in acts)


def test_restarted_replica_that_lags_gets_cover_until_caught_up():
    ms = [dataclasses.replace(m, applied_index=10) if m.name == "p-2" else m for m in healthy(applied=5000)]
    acts = P.plan_repair(view(ms, commit=5000), TOPO)
    assert [(type(a), a.role) for a in acts] == [(CreateMember, LOG_REPLICA)]


def test_names_never_repeat():
    assert P.next_ordinal("t-1", ["t-1-0", "t-1-7", "t-10-9", "junk"]) == 8
    assert P.next_ordinal("t-1", []) == 0


# ------------------------------------------------------------ splitting

from kynamo import keycodec  # noqa: E402
from kynamo.planner import LoadSample, PartitionLoad, Split, SplitChoice  # noqa: E402


def hot_samples(t0: float, t1: float, wcu: float = 1000.0, step: float = 10.0) -> tuple[LoadSample, ...]:
    n = int((t1 - t0) / step) + 1
    return tuple(LoadSample(t0 + i * step, 0.0, wcu) for i in range(n))


def pos(pk: str, sk: str | None = None) -> bytes:
    schema = keycodec.KeySchema("pk", "S", "sk" if sk is not None else None, "S" if sk is not None else None)
    key = {"pk": {"S": pk}} | ({"sk": {"S": sk}} if sk is not None else {})
    return keycodec.position(schema, key)


def test_sustained_overload_needs_the_whole_window():
    assert P.sustained_overload(hot_samples(0, 300), 0, 1000, now=300, window=300)
    assert not P.sustained_overload(hot_samples(100, 300), 0, 1000, now=300, window=300)  # only 200 s
    cool = (*hot_samples(0, 150), LoadSample(155, 0, 100), *hot_samples(160, 300))
    assert not P.sustained_overload(cool, 0, 1000, now=300, window=300)  # broken by a cool sample
    assert not P.sustained_overload(hot_samples(0, 300), 0, 1000, now=500, window=300)  # stale
    assert not P.sustained_overload((), 0, 1000, now=0)


def test_hot_by_reads_counts_too():
    s = tuple(LoadSample(t, 2900.0, 0.0) for t in range(0, 301, 10))
    assert P.sustained_overload(s, 3000, 1000, now=300, window=300)


def test_split_key_balances_sampled_load():
    dist = [(pos(f"k{i}"), 1.0) for i in range(10)] + [(pos("hot"), 4.0)]
    choice = P.choose_split_key(dist)
    assert choice.key is not None and choice.reason == "balanced"
    left = sum(w for k, w in dist if k < choice.key)
    assert abs(left / 14 - 0.5) <= 0.15
    assert abs(choice.left_share - left / 14) < 1e-9


def test_split_key_may_cut_inside_one_item_collection():
    dist = [(pos("collection", f"{i:04d}"), 1.0) for i in range(20)]
    choice = P.choose_split_key(dist)
    assert choice.key == pos("collection", "0010")


def test_no_split_when_one_item_is_the_heat():
    dist = [(pos("hot"), 90.0)] + [(pos(f"k{i}"), 1.0) for i in range(10)]
    assert P.choose_split_key(dist) == SplitChoice(None, "single-item")
    assert P.choose_split_key([(pos("only"), 5.0)]).reason == "single-item"


def test_no_split_on_a_strictly_sequential_run():
    keys = [pos("log", f"{i:06d}") for i in range(40)]
    dist = [(k, 1.0) for k in keys]
    assert P.choose_split_key(dist, recent=keys).reason == "sequential"
    shuffled = sorted(keys, key=lambda k: k[::-1])  # arrival order unrelated to key order
    assert P.choose_split_key(dist, recent=shuffled).reason == "balanced"


def test_no_split_when_no_cut_is_balanced_enough():
    dist = [(b"\x10", 45.0), (b"\x20", 45.0), (b"\x30", 10.0)]
    assert P.choose_split_key(dist, max_imbalance=0.5).reason == "unbalanced"
    assert P.choose_split_key(dist).key == b"\x20"


def test_split_key_ignores_samples_outside_the_range():
    dist = [(b"\x01", 100.0), (b"\x50", 1.0), (b"\x60", 1.0), (b"\xf0", 100.0)]
    assert P.choose_split_key(dist, b"\x40", b"\x80").key == b"\x60"


def test_plan_split_on_sustained_load():
    dist = tuple((pos(f"k{i}"), 1.0) for i in range(8))
    load = PartitionLoad("p", b"", None, samples=hot_samples(0, 600), distribution=dist)
    d = P.plan_split(load, 3000, 1000, now=600)
    assert isinstance(d, Split) and d.reason == "load"
    assert P.plan_split(load, 3000, 1000, now=600, window=900) == SplitChoice(None, "not-hot")
    assert P.plan_split(dataclasses.replace(load, splitting=True), 3000, 1000, now=600).reason == "already-splitting"


def test_plan_split_refuses_hot_single_item_even_when_overloaded():
    dist = ((pos("celebrity"), 99.0), (pos("x"), 1.0))
    load = PartitionLoad("p", b"", None, samples=hot_samples(0, 600), distribution=dist)
    assert P.plan_split(load, 3000, 1000, now=600) == SplitChoice(None, "single-item")


def test_plan_split_on_size_at_the_hash_midpoint():
    load = PartitionLoad("p", b"\x40" + bytes(7), b"\x80" + bytes(7), size_bytes=11 * 10**9)
    d = P.plan_split(load, 3000, 1000, now=0)
    assert d == Split("p", b"\x60" + bytes(7), "size")


def test_size_split_inside_one_item_collection_uses_the_samples():
    h = pos("big")[: keycodec.HASH_LEN]
    dist = tuple((pos("big", f"{i:03d}"), 1.0) for i in range(10))
    load = PartitionLoad("p", h, (int.from_bytes(h, "big") + 1).to_bytes(8, "big"), distribution=dist,
                         size_bytes=11 * 10**9)
    d = P.plan_split(load, 3000, 1000, now=0)
    assert isinstance(d, Split) and d.key == pos("big", "005")


def test_hash_midpoint():
    assert P.hash_midpoint(b"", None) == b"\x80" + bytes(7)
    one = (5).to_bytes(8, "big")
    assert P.hash_midpoint(one, (6).to_bytes(8, "big")) is None


def test_throughput_increase_splits_the_widest_partitions():
    parts = [("a", b"", b"\x80" + bytes(7)), ("b", b"\x80" + bytes(7), b"\xc0" + bytes(7)),
             ("c", b"\xc0" + bytes(7), None)]
    assert [s.partition for s in P.plan_throughput_splits(parts, 4)] == ["a"]
    assert [s.partition for s in P.plan_throughput_splits(parts, 5)] == ["a", "b"]
    assert P.plan_throughput_splits(parts, 3) == []


def test_log_only_zone_takes_the_log_replica_and_never_a_full_replica():
    # kynamo local: every process is its own zone; the spare process hosts log-replicas only.
    topo = {"a": ["pa"], "b2": ["pb2"], "c": ["pc"], "spare": ["ps"]}
    ms = [Member("pa", "a", REPLICA, READY, True, 100), Member("pb", "b", REPLICA, LOST, True, 100),
          Member("pc", "c", REPLICA, READY, True, 100)]
    acts = P.plan_repair(view(ms), topo, unavailable={"b"}, zone_load={"b2": 9}, log_only={"spare"})
    creates = {a.role: a.slot.node for a in acts if isinstance(a, CreateMember)}
    assert creates == {REPLICA: "pb2", LOG_REPLICA: "ps"}
    # no spare left: the rebuild still never lands in the log-only zone
    acts = P.plan_repair(view(ms), {"a": ["pa"], "c": ["pc"], "spare": ["ps"]}, unavailable={"b"},
                         log_only={"spare"})
    assert [(a.role, a.slot.node) for a in acts if isinstance(a, CreateMember)] == [(LOG_REPLICA, "ps")]


# ------------------------------------------------------------ moving split children onto pods of their own

from kynamo.planner import ReleaseMember, TransferLeader  # noqa: E402


def child(members, commit=5000, leader="p-0") -> GroupView:
    """Child `c` right after a split: its members are the parent `p`'s (inherited)."""
    return GroupView("c", tuple(members), commit_index=commit, leader=leader)


def inherited(applied: int = 5000) -> list[Member]:
    return [Member(f"p-{i}", f"z{i + 1}", REPLICA, READY, True, applied) for i in range(3)]


def set_(members, name, **kw):
    return [dataclasses.replace(m, **kw) if m.name == name else m for m in members]


def test_owned_and_inherited_members_by_name():
    assert P.owns_member("t-1", "t-1-0") and P.owns_member("t-1", "t-1-12")
    assert not P.owns_member("t-1", "t-0-2") and not P.owns_member("t-1", "t-10-0")
    assert not P.moving(view(healthy())) and P.moving(child(inherited()))


def test_moves_start_one_replacement_pod_per_zone_at_once():
    acts = P.plan_moves(child(inherited()), TOPO)
    assert acts == [CreateMember("c", "c-0", REPLICA, Slot("z1", "n1")),
                    CreateMember("c", "c-1", REPLICA, Slot("z2", "n3")),
                    CreateMember("c", "c-2", REPLICA, Slot("z3", "n5"))]
    # idempotent once the pods exist; nothing joins before its pod is ready
    ms = [*inherited(), *(Member(f"c-{i}", f"z{i + 1}", REPLICA, PENDING, False) for i in range(3))]
    assert P.plan_moves(child(ms), TOPO) == []


def test_move_cycle_one_membership_change_at_a_time():
    ms = [*inherited(), *(Member(f"c-{i}", f"z{i + 1}", REPLICA, READY, False) for i in range(3))]
    # add one replacement (4 voters); the leader's zone (z1) goes last
    assert P.plan_moves(child(ms), TOPO) == [AddToGroup("c", "c-1", REPLICA)]
    ms = set_(ms, "c-1", in_group=True, applied_index=0)
    assert P.plan_moves(child(ms), TOPO) == []  # catching up (snapshot + log); never a second add meanwhile
    ms = set_(ms, "c-1", applied_index=4990)
    assert P.plan_moves(child(ms), TOPO) == [RemoveFromGroup("c", "p-1")]
    ms = set_(ms, "p-1", in_group=False)
    # routers may still name p-1: no release yet; the next replacement joins meanwhile
    assert P.plan_moves(child(ms), TOPO, routed={"p-1"}) == [AddToGroup("c", "c-2", REPLICA)]
    assert P.plan_moves(child(ms), TOPO) == [ReleaseMember("c", "p-1"), AddToGroup("c", "c-2", REPLICA)]
    ms = set_([m for m in ms if m.name != "p-1"], "c-2", in_group=True, applied_index=5000)
    assert P.plan_moves(child(ms), TOPO) == [RemoveFromGroup("c", "p-2")]
    ms = set_([m for m in ms if m.name != "p-2"], "c-0", in_group=True, applied_index=5000)
    # only the leader is inherited now: hand leadership over first (a leader may not remove itself)
    assert P.plan_moves(child(ms), TOPO) == [TransferLeader("c", "c-0")]
    assert P.plan_moves(child(ms, leader="c-0"), TOPO) == [RemoveFromGroup("c", "p-0")]
    ms = set_(ms, "p-0", in_group=False)
    assert P.plan_moves(child(ms, leader="c-0"), TOPO) == [ReleaseMember("c", "p-0")]
    assert P.plan_moves(child([m for m in ms if m.name != "p-0"], leader="c-0"), TOPO) == []


def test_followers_leave_before_the_leader():
    ms = [*inherited(), *(Member(f"c-{i}", f"z{i + 1}", REPLICA, READY, True, 5000) for i in range(2)),
          Member("c-2", "z3", REPLICA, PENDING, False)]
    assert P.plan_moves(child(ms, leader="p-0"), TOPO) == [RemoveFromGroup("c", "p-1")]


def test_no_move_while_the_group_needs_repair_or_has_no_leader():
    ms = [*set_(inherited(), "p-1", state=LOST), Member("c-0", "z1", REPLICA, READY, False)]
    assert P.plan_moves(child(ms), TOPO) == []
    # plan_group hands a repairing group to plan_repair instead
    assert any(isinstance(a, CreateMember) and a.role == LOG_REPLICA for a in P.plan_group(child(ms), TOPO))
    ms = [*inherited(), Member("c-0", "z1", REPLICA, READY, False)]
    acts = P.plan_moves(child(ms, commit=None, leader=None), TOPO)
    assert not any(isinstance(a, AddToGroup | RemoveFromGroup | TransferLeader) for a in acts)


def test_repair_never_adds_back_a_member_moved_out():
    ms = [*set_(inherited(), "p-0", in_group=False), Member("c-0", "z1", REPLICA, READY, True, 5000)]
    assert P.leaving(child(ms)) == ["p-0"]
    assert AddToGroup("c", "p-0", REPLICA) in P.plan_repair(child(ms), TOPO)  # the hazard...
    assert P.plan_repair(child(ms), TOPO, leaving=P.leaving(child(ms))) == []  # ...that `leaving` removes
    assert P.plan_group(child(ms, leader="c-0"), TOPO) == [CreateMember("c", "c-1", REPLICA, Slot("z2", "n3")),
                                                          CreateMember("c", "c-2", REPLICA, Slot("z3", "n5")),
                                                          ReleaseMember("c", "p-0")]


def test_a_moving_child_does_not_split_again():
    load = PartitionLoad("c", b"", None, samples=hot_samples(0, 400), distribution=tuple(
        (pos(f"u{i}"), 1.0) for i in range(20)), moving=True)
    assert P.plan_split(load, 3000, 1000, 400, window=300) == SplitChoice(None, "moving-replicas")


def test_idle_pods_of_a_retired_parent():
    assert P.idle_pods(["p-0", "p-1", "p-2"], {"p-1", "c-0"}) == ["p-0", "p-2"]
    assert P.idle_pods(["p-0"], {"p-0"}) == []


# ------------------------------------------------------------ leader balance

def _groups(leaders: dict[str, str | None], members: tuple[str, ...] = ("a", "b", "c")) -> list[P.LeaderView]:
    return [P.LeaderView(pid, lead, members) for pid, lead in leaders.items()]


def test_leader_balance_leaves_a_difference_of_one_alone():
    assert P.plan_leader_balance(_groups({"p1": "a", "p2": "b", "p3": "c"}), "abc") is None
    assert P.plan_leader_balance(_groups({"p1": "a", "p2": "b", "p3": "a"}), "ab") is None  # 2-1
    assert P.plan_leader_balance(_groups({"p1": "a", "p2": "a", "p3": "b"}), "abc") == P.MoveLeader("p1", "c")
    assert P.plan_leader_balance(_groups({"p1": None, "p2": None}), "abc") is None


def test_a_restarted_node_gets_leaderships_back_one_at_a_time_until_balanced():
    leaders: dict[str, str | None] = {f"p{i}": ("b" if i % 2 else "c") for i in range(6)}  # a restarted: leads none
    moves = 0
    while (move := P.plan_leader_balance(_groups(leaders), "abc")) is not None:
        assert leaders[move.partition] != move.to
        leaders[move.partition] = move.to
        moves += 1
        assert moves < 10
    counts = {n: sum(1 for lead in leaders.values() if lead == n) for n in "abc"}
    assert counts == {"a": 2, "b": 2, "c": 2} and moves == 2


def test_leader_balance_moves_only_to_a_groups_own_caught_up_replica():
    groups = [P.LeaderView("p1", "b", ("b", "c")), P.LeaderView("p2", "b", ("b", "c")),
              P.LeaderView("p3", "b", ("a", "b", "c"))]
    assert P.plan_leader_balance(groups, "abc") == P.MoveLeader("p3", "a")  # a: the only group it can take
    assert P.plan_leader_balance(groups[:2], "abc") == P.MoveLeader("p1", "c")  # a takes none: c, then


def test_leader_balance_counts_by_node_through_node_of():
    pods = {"p1-0": "n1", "p1-1": "n2", "p2-0": "n1", "p2-1": "n2", "p3-0": "n1", "p3-1": "n2"}
    groups = [P.LeaderView(f"p{i}", f"p{i}-0", (f"p{i}-0", f"p{i}-1")) for i in (1, 2, 3)]  # n1 leads all
    move = P.plan_leader_balance(groups, {"n1", "n2"}, node_of=pods.__getitem__)
    assert move == P.MoveLeader("p1", "p1-1")
