"""Focused tests of the pure Paxos core, driven by hand through a tiny loss-free harness."""

from __future__ import annotations

import random

import pytest
from kynamo.storage_node.paxos import Options, PaxosCore
from kynamo.storage_node.paxos_types import (
    Accept,
    Accepted,
    Config,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    LeaderCheck,
    LeaderCheckReply,
    Message,
    NotLeaderError,
    Prepare,
    Promise,
    SnapshotMeta,
)

OPTS = Options(heartbeat_interval=1.0, election_timeout=5.0, max_batch=4, max_inflight=2)


class Cluster:
    """Cores plus their 'disks'; messages are queued and delivered only when asked."""

    def __init__(self, replicas: tuple[str, ...], log_replicas: tuple[str, ...] = (), **opts: object) -> None:
        self.config = Config(replicas, log_replicas)
        self.opts = Options(**{**OPTS.__dict__, **opts})
        self.now = 0.0
        self.cores: dict[str, PaxosCore] = {}
        self.disk: dict[str, tuple[HardState, dict[int, Entry]]] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.queue: list[Message] = []
        self.snapshot_to: list[str] = []
        for i, nid in enumerate(replicas + log_replicas):
            self.cores[nid] = self.make(nid, random.Random(i))

    def make(self, nid: str, rng: random.Random, **kw: object) -> PaxosCore:
        self.disk.setdefault(nid, (HardState(), {}))
        self.applied.setdefault(nid, [])
        return PaxosCore(
            nid, self.config, options=self.opts, rng=rng, now=self.now,
            is_log_replica=nid in self.config.log_replicas, **kw,
        )  # fmt: skip

    def process(self, nid: str) -> None:
        core = self.cores[nid]
        rd = core.ready()
        _, entries = self.disk[nid]
        if rd.hard_state:
            self.disk[nid] = (rd.hard_state, entries)
        for e in rd.entries:
            entries[e.index] = e
        self.queue.extend(rd.messages)
        core.advance(rd)
        self.applied[nid].extend(rd.committed)
        if rd.committed:
            core.applied_to(rd.committed[-1].index)
        self.snapshot_to.extend(rd.snapshot_to)

    def settle(self, drop: set[str] = frozenset(), rounds: int = 50) -> None:
        """Deliver until quiet; messages to or from `drop` are lost."""
        for nid in self.cores:
            self.process(nid)
        for _ in range(rounds):
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.src in drop or m.dst in drop or m.dst not in self.cores:
                    continue
                self.cores[m.dst].step(m)
                self.process(m.dst)

    def tick(self, dt: float, drop: set[str] = frozenset()) -> None:
        self.now += dt
        for nid, core in self.cores.items():
            if nid not in drop:
                core.tick(self.now)
        self.settle(drop)

    def elect(self, nid: str) -> PaxosCore:
        self.cores[nid].campaign()
        self.settle()
        assert self.cores[nid].is_leader
        return self.cores[nid]


def test_election_and_replication() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    assert c.cores["b"].leader_hint == "a"
    idx = leader.propose(b"x")
    c.settle()
    assert leader.commit_index >= idx
    c.tick(0)  # heartbeats carry the commit point
    c.tick(1.0)
    for nid in "abc":
        cmds = [e.data for e in c.applied[nid] if e.kind is EntryKind.COMMAND]
        assert cmds == [b"x"], nid
    assert leader.stats()["elections_won"] == 1


def test_not_leader_error_carries_hint() -> None:
    c = Cluster(("a", "b", "c"))
    c.elect("a")
    with pytest.raises(NotLeaderError) as info:
        c.cores["b"].propose(b"x")
    assert info.value.leader_hint == "a"


def test_phase1_recovers_uncommitted_value_of_minority_leader() -> None:
    c = Cluster(("a", "b", "c"))
    a = c.elect("a")
    c.tick(0)
    # a's proposal reaches only b, then a dies: the value sits on a minority (a, b) of acceptors.
    idx = a.propose(b"v")
    c.process("a")
    c.queue = [m for m in c.queue if m.dst == "b"]
    c.settle(drop={"c"})
    assert c.cores["b"].entry(idx).data == b"v"
    assert c.cores["c"].entry(idx) is None
    c.queue.clear()
    c.now += 20  # everyone's view of a's leadership has lapsed
    c.cores["c"].tick(c.now)
    c.cores["b"].tick(c.now)
    c.cores["c"].campaign()
    c.settle(drop={"a"})
    for _ in range(30):
        if any(c.cores[n].is_leader for n in "bc"):
            break
        c.tick(1.0, drop={"a"})
    (new,) = [c.cores[n] for n in "bc" if c.cores[n].is_leader]
    e = new.entry(idx)
    assert (e.kind, e.data, e.ballot) == (EntryKind.COMMAND, b"v", new.ballot)  # re-proposed at its ballot
    assert new.entry(new.last_index).kind is EntryKind.NOOP
    assert new.commit_index == new.last_index


def test_gap_filled_with_noop() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.cores["a"]
    leader.campaign()
    c.process("a")
    # A promise reporting only index 3 (accepted from some old leader): 1-2 are gaps.
    late = Entry(3, (0, "z"), EntryKind.COMMAND, b"late")
    leader.step(Promise("b", "a", leader.ballot, True, leader.ballot, (late,), 0, 1))
    assert leader.is_leader
    kinds = [leader.entry(i).kind for i in range(1, 5)]
    assert kinds == [EntryKind.NOOP, EntryKind.NOOP, EntryKind.COMMAND, EntryKind.NOOP]
    assert leader.entry(3).data == b"late"


def test_log_replica_never_leads_and_has_no_committed() -> None:
    c = Cluster(("a", "b"), ("l",))
    lr = c.cores["l"]
    assert lr.is_log_replica
    lr.campaign()
    c.settle()
    assert not lr.is_leader and lr.stats()["elections_started"] == 0
    for _ in range(10):
        c.tick(5.0, drop={"a", "b"})  # the log-replica alone never times out into an election
    assert lr.stats()["leader_checks"] == 0
    leader = c.elect("a")
    leader.propose(b"x")
    c.settle(drop={"b"})  # a + l form the quorum
    assert leader.commit_index == leader.last_index
    c.tick(1.0)
    assert c.applied["l"] == [] and lr.commit_index == leader.commit_index


def test_log_replica_retention() -> None:
    c = Cluster(("a", "b"), ("l",), log_replica_retention=3)
    leader = c.elect("a")
    for i in range(10):
        leader.propose(b"%d" % i)
        c.settle()
    c.tick(1.0)
    lr = c.cores["l"]
    assert lr.commit_index == leader.commit_index
    assert lr.commit_index - lr.log_start + 1 <= 3
    assert lr.snapshot is not None and lr.snapshot.index == lr.log_start - 1


def test_config_change_one_at_a_time_and_refusals() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.cores["a"]
    with pytest.raises(NotLeaderError):
        leader.propose_config(Config(("a", "b", "c", "d")))
    leader.campaign()
    c.process("a")
    prepares, c.queue = c.queue, []
    for m in prepares:  # Prepares out, Promises back, but no Accepted yet
        c.cores[m.dst].step(m)
        c.process(m.dst)
    promises, c.queue = [m for m in c.queue if isinstance(m, Promise)], []
    for m in promises:
        leader.step(m)
    assert leader.is_leader
    # not yet committed anything of its own ballot
    with pytest.raises(ConfigChangeError):
        leader.propose_config(Config(("a", "b", "c", "d")))
    c.settle()
    with pytest.raises(ConfigChangeError):
        leader.propose_config(Config(("b", "c")))  # removes the leader
    with pytest.raises(ConfigChangeError):
        leader.propose_config(Config(("a", "b", "c", "d", "e")))  # two at once
    with pytest.raises(ConfigChangeError):
        leader.propose_config(Config(("a", "b"), ("c",)))  # role swap
    new = Config(("a", "b", "c"), ("l",))
    idx = leader.propose_config(new)
    assert leader.config == new  # effective as soon as it is in the log
    with pytest.raises(ConfigChangeError):
        leader.propose_config(Config(("a", "b", "c", "d"), ("l",)))  # previous one uncommitted
    # the new log-replica joins empty and is caught up from the log
    c.cores["l"] = c.make("l", random.Random(9))
    c.cores["l"]._base_config = new
    c.tick(1.0)
    c.tick(1.0)
    assert leader.commit_index >= idx
    assert c.cores["l"].commit_index == leader.commit_index
    assert c.cores["b"].config == new
    leader.propose_config(Config(("a", "b", "c")))  # next change allowed once committed


def test_removed_member_does_not_campaign() -> None:
    c = Cluster(("a", "b", "c", "d"))
    leader = c.elect("a")
    c.tick(0)
    leader.propose_config(Config(("a", "b", "c")))
    c.settle()
    c.tick(1.0)
    d = c.cores["d"]
    assert "d" not in d.config.voters
    d.campaign()
    assert d.stats()["elections_started"] == 0


def test_lease_read_expires_and_ends_with_new_ballot() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    assert leader.lease_read_index() == leader.commit_index
    # no acks for longer than the lease: refused (leader still thinks it leads)
    for _ in range(4):
        c.tick(1.0, drop={"b", "c"})
    assert leader.is_leader and leader.lease_read_index() is None
    c.tick(1.0)
    assert leader.lease_read_index() == leader.commit_index
    # a higher ballot seen: the leader steps down and never serves the read
    leader.step(Accepted("b", "a", leader.ballot, False, 0, (leader.ballot[0] + 5, "b")))
    assert not leader.is_leader and leader.lease_read_index() is None


def test_acceptor_refuses_prepare_while_leader_alive() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    b = c.cores["b"]
    b.step(Prepare("c", "b", (99, "c"), 1, 0))
    c.process("b")
    refusal = [m for m in c.queue if isinstance(m, Promise)]
    assert refusal and not refusal[-1].ok and b.ballot == leader.ballot


def test_gray_failure_guard_stands_down_when_peer_sees_leader() -> None:
    c = Cluster(("a", "b", "c"))
    c.elect("a")
    c.tick(1.0)
    # b stops hearing a (one-way loss); c still hears it
    for _ in range(12):
        c.now += 1.0
        c.cores["a"].tick(c.now)
        c.cores["b"].tick(c.now)
        c.cores["c"].tick(c.now)
        c.queue = [m for m in c.queue if not (m.src == "a" and m.dst == "b")]
        for nid in "abc":
            c.process(nid)
        batch, c.queue = c.queue, []
        for m in batch:
            if not (m.src == "a" and m.dst == "b"):
                c.cores[m.dst].step(m)
                c.process(m.dst)
        c.settle(drop=set())
    b = c.cores["b"]
    assert b.stats()["leader_checks"] >= 1
    assert b.stats()["checks_stood_down"] >= 1
    assert b.stats()["elections_started"] == 0
    assert c.cores["a"].is_leader


def test_guard_campaigns_when_quorum_unhealthy() -> None:
    c = Cluster(("a", "b", "c"))
    c.elect("a")
    for _ in range(15):
        c.tick(1.0, drop={"a"})
    leaders = [n for n in "bc" if c.cores[n].is_leader]
    assert len(leaders) == 1


def test_leader_steps_down_without_quorum() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    for _ in range(11):
        c.tick(1.0, drop={"b", "c"})
    assert not leader.is_leader
    assert leader.stats()["step_downs"] == 1


def test_stale_and_duplicate_messages() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    leader.propose(b"x")
    c.process("a")
    dup = list(c.queue)
    c.settle()
    commit = leader.commit_index
    b = c.cores["b"]
    before = (b.last_index, b.commit_index)
    for m in dup + dup:  # replays
        c.cores[m.dst].step(m)
        c.process(m.dst)
    c.settle()
    assert (b.last_index, b.commit_index) == before and leader.commit_index == commit
    # a stale Accept from an old ballot is refused and changes nothing
    b.step(Accept("c", "b", (0, "c"), 1, (Entry(1, (0, "c"), EntryKind.COMMAND, b"evil"),), 1))
    c.process("b")
    assert b.entry(1).data != b"evil"
    # an Accept that skips ahead is refused with the follower's match point
    b.step(Accept("a", "b", leader.ballot, 50, (Entry(50, leader.ballot, EntryKind.NOOP),), 0))
    rd = b.ready()
    rep = [m for m in rd.messages if isinstance(m, Accepted)][-1]
    assert not rep.ok and rep.match == b.last_index
    # messages for someone else, stale promises and replies are ignored
    leader.step(Promise("b", "zz", leader.ballot, True, leader.ballot))
    leader.step(Promise("b", "a", (0, "a"), True, (0, "a")))
    leader.step(LeaderCheckReply("b", "a", False, None, leader.ballot))
    assert leader.is_leader


def test_snapshot_to_when_follower_behind_log_start() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    for i in range(6):
        leader.propose(b"%d" % i)
    c.settle(drop={"c"})
    c.tick(1.0, drop={"c"})
    meta = SnapshotMeta(leader.applied_index, leader.entry(leader.applied_index).ballot, leader.config)
    leader.compact(meta)
    assert leader.log_start == meta.index + 1
    c.snapshot_to.clear()
    c.tick(1.0)
    c.tick(1.0)
    assert c.snapshot_to.count("c") == 1  # asked once, not on every heartbeat
    follower = c.cores["c"]
    follower.install_snapshot(meta)
    assert follower.commit_index == meta.index and follower.applied_index == meta.index
    assert follower.log_start == meta.index + 1
    leader.propose(b"after")
    c.tick(1.0)
    c.tick(1.0)
    assert follower.commit_index == leader.commit_index
    assert [e.data for e in c.applied["c"]] == [b"after"] or c.applied["c"][-1].data == b"after"


def test_restart_from_durable_state() -> None:
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    for i in range(3):
        leader.propose(b"%d" % i)
    c.settle()
    c.tick(1.0)
    hs, entries = c.disk["b"]
    old = c.cores["b"]
    c.cores["b"] = c.make("b", random.Random(5), hard_state=hs, entries=[entries[i] for i in sorted(entries)])
    b = c.cores["b"]
    assert (b.ballot, b.commit_index, b.last_index) == (old.ballot, old.commit_index, old.last_index)
    assert b.applied_index == 0
    rd = b.ready()
    assert [e.data for e in rd.committed if e.kind is EntryKind.COMMAND] == [b"0", b"1", b"2"]
    # a restarted acceptor still protects a lease it may have granted
    b.step(Prepare("c", "b", (50, "c"), 1, 0))
    assert not [m for m in b.ready().messages if isinstance(m, Promise)][-1].ok


def test_leader_check_reply_reports_health() -> None:
    c = Cluster(("a", "b", "c"))
    c.elect("a")
    b = c.cores["b"]
    b.step(LeaderCheck("c", "b", (0, "")))
    rep = b.ready().messages[-1]
    assert isinstance(rep, LeaderCheckReply) and rep.healthy and rep.leader == "a"


def test_deterministic_given_same_inputs() -> None:
    def run() -> list[object]:
        c = Cluster(("a", "b", "c"))
        for _ in range(30):
            c.tick(1.0)
        return [(n, core.ballot, core.commit_index, core.stats()) for n, core in c.cores.items()]

    assert run() == run()


def test_handover_moves_leadership_at_once_and_keeps_every_entry() -> None:
    c = Cluster(("a", "b", "c"))
    a = c.elect("a")
    idx = a.propose(b"x")
    c.settle()
    a.hand_over("b")
    # From the moment it starts, the old leader takes no proposals and serves no lease reads.
    assert a.lease_read_index() is None
    with pytest.raises(NotLeaderError) as info:
        a.propose(b"y")
    assert info.value.leader_hint == "b"
    c.settle()  # no clock advance: b is elected although every acceptor heard a moments ago
    b = c.cores["b"]
    assert b.is_leader and not a.is_leader and c.cores["c"].leader_hint == "b"
    assert b.stats()["handovers_taken"] == 1 and a.handing_over_to is None
    b.propose(b"z")
    c.settle()
    c.tick(1.0)
    for nid in "abc":
        cmds = [e.data for e in c.applied[nid] if e.kind is EntryKind.COMMAND]
        assert cmds == [b"x", b"z"], nid
    assert b.commit_index > idx


def test_handover_waits_for_the_target_to_catch_up() -> None:
    c = Cluster(("a", "b", "c"))
    a = c.elect("a")
    for i in range(3):
        a.propose(b"%d" % i)
    c.settle(drop={"c"})  # c misses them
    a.hand_over("c")
    c.process("a")
    assert not any(type(m).__name__ == "Handover" for m in c.queue)  # c is behind: no handover yet
    for _ in range(4):  # within the handover's election timeout: resends bring c up to date, then it campaigns
        c.tick(1.0)
        if c.cores["c"].is_leader:
            break
    assert c.cores["c"].is_leader and a.stats()["handovers_failed"] == 0
    cmds = [e.data for e in c.applied["c"] if e.kind is EntryKind.COMMAND]
    assert cmds[:3] == [b"0", b"1", b"2"]


def test_handover_to_an_unreachable_member_steps_down_then_a_normal_election_follows() -> None:
    c = Cluster(("a", "b", "c"))
    a = c.elect("a")
    a.hand_over("c")
    for _ in range(6):  # c never answers: after an election timeout a gives up leading
        c.tick(1.0, drop={"c"})
    assert not a.is_leader and a.stats()["handovers_failed"] == 1
    for _ in range(30):
        c.tick(1.0, drop={"c"})
        if a.is_leader or c.cores["b"].is_leader:
            break
    assert a.is_leader or c.cores["b"].is_leader


def test_only_the_handing_over_ballot_lifts_the_guard() -> None:
    """A Prepare naming some other ballot as its handover (stale, or forged) is refused while the leader is
    alive: only the current leader's own ballot gave its lease up."""
    c = Cluster(("a", "b", "c"))
    leader = c.elect("a")
    b = c.cores["b"]
    b.step(Prepare("c", "b", (99, "c"), 1, 0, (leader.ballot[0] - 1, "z")))
    c.process("b")
    refusal = [m for m in c.queue if isinstance(m, Promise)]
    assert refusal and not refusal[-1].ok and b.ballot == leader.ballot


def test_hand_over_refuses_log_replicas_and_non_leaders() -> None:
    c = Cluster(("a", "b", "c"), ("l",))
    a = c.elect("a")
    with pytest.raises(ValueError):
        a.hand_over("l")
    with pytest.raises(NotLeaderError):
        c.cores["b"].hand_over("c")
