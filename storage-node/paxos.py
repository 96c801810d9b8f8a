"""The pure Multi-Paxos core: messages and ticks in, `Ready` batches out.

No I/O, no clock and no randomness of its own (time comes only through `tick`,
randomness through the injected `rng`), so a seeded simulation replays exactly.
The shell persists, sends and applies what `ready()` hands it, in the order
documented on `Ready`, then calls `advance()`.

Design notes (why, not what):
- Acceptors never truncate a stale log suffix: a value there may be chosen at a
  lower ballot and only a phase 1 may supersede it.  `received_upto` tracks the
  prefix known to come from the current leader, and only that prefix is ever
  acknowledged or committed.
- The log is a list indexed by `index - log_start`, so every per-message step is
  O(batch) and never O(log).
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from kynamo.storage_node.paxos_types import (
    ZERO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    Config,
    ConfigChangeError,
    Entry,
    EntryKind,
    Handover,
    HardState,
    LeaderCheck,
    LeaderCheckReply,
    Message,
    NotLeaderError,
    Prepare,
    Promise,
    Ready,
    SnapshotMeta,
)

NEVER = float("-inf")


@dataclass
class Options:
    heartbeat_interval: float = 0.05  # seconds (shell's clock)
    election_timeout: float = 0.5  # base; the actual timeout is drawn per election in [T, 2T)
    lease_fraction: float = 0.8  # lease = echoed sent_at + election_timeout * lease_fraction
    max_batch: int = 512  # entries per Accept message
    max_inflight: int = 32  # Accept messages unacknowledged per peer before waiting
    log_replica_retention: int = 10_000  # committed entries a log-replica keeps
    max_read_lag: int = 100  # entries a caught-up follower may trail the leader's commit and still serve


class Role(Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class _Progress:
    """The leader's view of one peer's log (phase 2 pipeline state)."""

    next: int
    match: int = 0
    inflight: deque[int] = field(default_factory=deque)  # end index of each unacked Accept
    last_heard: float = NEVER  # when an Accepted with our ballot last arrived
    acked_sent_at: float = NEVER  # latest echoed sent_at (lease)
    last_progress: float = NEVER
    commit_sent: int = 0
    snapshot_at: float | None = None  # when we last asked the shell for a snapshot install


@dataclass(slots=True)
class _Candidacy:
    ballot: Ballot
    from_index: int
    deadline: float
    promised_by: set[str] = field(default_factory=set)
    merged: dict[int, Entry] = field(default_factory=dict)
    prepared: set[str] = field(default_factory=set)
    handover: Ballot | None = None  # the ballot of the leader that handed over to us, if it did


@dataclass(slots=True)
class _Handing:
    """A leadership handover in progress (see PaxosCore.hand_over)."""

    to: str
    deadline: float
    sent: bool = False


@dataclass(slots=True)
class _Check:
    """A gray-failure LeaderCheck round in progress."""

    deadline: float
    unhealthy: set[str] = field(default_factory=set)


def _match(pr: _Progress) -> float:
    return pr.match


def _acked(pr: _Progress) -> float:
    return pr.acked_sent_at


class PaxosCore:
    """One member of one Multi-Paxos group (acceptor, learner and, when elected, proposer)."""

    def __init__(
        self,
        node_id: str,
        config: Config,
        *,
        options: Options,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: Iterable[Entry] = (),
        snapshot: SnapshotMeta | None = None,
        now: float = 0.0,
        is_log_replica: bool = False,
    ) -> None:
        self._id = node_id
        self._opts = options
        self._rng = rng
        self._now = now
        self._declared_log_replica = is_log_replica
        hs = hard_state or HardState()
        self._promised: Ballot = hs.promised
        self._commit = hs.commit
        self._snapshot = snapshot
        base = snapshot.index if snapshot else 0
        self._start = base + 1
        self._base_config = snapshot.config if snapshot else config
        self._log: list[Entry] = []
        self._configs: list[tuple[int, Config]] = []  # CONFIG entries held in the log, by index
        self._pending: list[Entry] = []
        self._role = Role.FOLLOWER
        for e in entries:
            if e.index >= self._start and e.index <= self.last_index + 1:
                self._write(e, persist=False)
        self._commit = min(max(self._commit, base), self.last_index)
        self._received_upto = self._commit
        self._applied = base
        self._emitted = base  # committed entries handed to the shell so far
        if self.is_log_replica:
            self._applied = self._emitted = self._commit
        self._hs_emitted = (self._promised, self._commit)
        self._msgs: list[Message] = []
        self._snapshot_to: list[str] = []
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        # A restarted acceptor may have acked a leader's lease before crashing: refuse
        # other candidates for one election timeout as if it had just heard that leader.
        self._heard_at = now if self._promised != ZERO_BALLOT else NEVER
        self._max_round = self._promised[0]
        self._timer_base = now
        self._timeout = self._draw_timeout()
        self._check: _Check | None = None
        self._cand: _Candidacy | None = None
        self._progress: dict[str, _Progress] = {}
        self._self_match = 0
        self._own_index = 0  # index of the leader's own NOOP; commit past it = own ballot committed
        self._first_own = 0  # every index >= this holds the leader's ballot
        self._last_hb = NEVER
        self._leader_commit = 0  # highest commit index a leader reported (read gate)
        self._leader_contact = NEVER  # when the current leader's last Accept arrived (read gate)
        self._handing: _Handing | None = None
        self._stats: dict[str, int] = {
            "elections_started": 0,
            "elections_won": 0,
            "elections_given_up": 0,
            "leader_changes": 0,
            "step_downs": 0,
            "proposals": 0,
            "config_changes": 0,
            "leader_checks": 0,
            "checks_stood_down": 0,
            "prepares_refused": 0,
            "accepts_rejected": 0,
            "snapshots_requested": 0,
            "snapshots_installed": 0,
            "handovers_started": 0,
            "handovers_taken": 0,
            "handovers_failed": 0,
        }

    # ------------------------------------------------------------ properties
    @property
    def node_id(self) -> str:
        return self._id

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader_hint(self) -> str | None:
        return self._leader

    @property
    def ballot(self) -> Ballot:
        return self._promised

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def last_index(self) -> int:
        return self._start + len(self._log) - 1

    @property
    def log_start(self) -> int:
        return self._start

    @property
    def config(self) -> Config:
        return self._configs[-1][1] if self._configs else self._base_config

    @property
    def is_log_replica(self) -> bool:
        cfg = self.config
        if self._id in cfg.log_replicas:
            return True
        return self._declared_log_replica and self._id not in cfg.replicas

    @property
    def snapshot(self) -> SnapshotMeta | None:
        """Last state snapshot (for a log-replica: where retention cut the log)."""
        return self._snapshot

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    @property
    def leader_commit(self) -> int:
        """The highest commit index any leader reported to this member (its own, when leading)."""
        return max(self._leader_commit, self._commit)

    @property
    def leader_contact(self) -> float:
        """The core time of the current leader's last Accept (-inf: none since start)."""
        return self._leader_contact

    def entry(self, index: int) -> Entry | None:
        """The entry held at `index`, if any (the shell uses it to build snapshots)."""
        if self._start <= index <= self.last_index:
            return self._log[index - self._start]
        return None

    def config_at(self, index: int) -> Config:
        """Membership in effect at `index` (index >= log_start - 1)."""
        pos = bisect.bisect_right(self._configs, index, key=lambda c: c[0])
        return self._configs[pos - 1][1] if pos else self._base_config

    # ------------------------------------------------------------ log helpers
    def _write(self, e: Entry, *, persist: bool = True) -> None:
        pos = e.index - self._start
        changed = False
        if pos == len(self._log):
            self._log.append(e)
        else:
            old = self._log[pos]
            self._log[pos] = e
            if old.kind is EntryKind.CONFIG:
                self._configs = [c for c in self._configs if c[0] != e.index]
                changed = True
        if e.kind is EntryKind.CONFIG:
            bisect.insort(self._configs, (e.index, Config.decode(e.data)), key=lambda c: c[0])
            changed = True
        if persist:
            self._pending.append(e)
        if changed and self._role is Role.LEADER:
            self._sync_progress()

    def _drop_through(self, index: int) -> None:
        """Forget entries <= index (they are covered by a snapshot or retention)."""
        if index < self._start:
            return
        self._base_config = self.config_at(index)
        cut = min(index - self._start + 1, len(self._log))
        del self._log[:cut]
        self._start = index + 1
        self._configs = [c for c in self._configs if c[0] > index]

    def _draw_timeout(self) -> float:
        t = self._opts.election_timeout
        return t + self._rng.random() * t

    def _note(self, ballot: Ballot) -> None:
        if ballot[0] > self._max_round:
            self._max_round = ballot[0]

    def _set_leader(self, leader: str | None) -> None:
        if leader is not None and leader != self._leader:
            self._stats["leader_changes"] += 1
        self._leader = leader

    def _can_campaign(self) -> bool:
        return not self.is_log_replica and self._id in self.config.replicas

    def _set_commit(self, index: int) -> None:
        if index <= self._commit:
            return
        self._commit = index
        if self.is_log_replica:
            self._applied = self._emitted = index
            keep = self._opts.log_replica_retention
            if index - self._start + 1 > keep:
                cut = index - keep
                e = self._log[cut - self._start]
                self._snapshot = SnapshotMeta(cut, e.ballot, self.config_at(cut))
                self._drop_through(cut)

    # ------------------------------------------------------------ shell API
    def tick(self, now: float) -> None:
        self._now = now
        if self._role is Role.LEADER:
            self._leader_tick()
        elif self._role is Role.CANDIDATE:
            assert self._cand is not None
            if now >= self._cand.deadline:
                self._become_follower()
                self._campaign()
        elif self._can_campaign():
            if self._check is None:
                if now >= max(self._timer_base, self._heard_at) + self._timeout:
                    self._start_check()
            elif now >= self._check.deadline:
                self._start_check()  # replies were lost: ask again rather than disrupt

    def step(self, msg: Message) -> None:
        if msg.dst != self._id or msg.src == self._id:
            return
        if isinstance(msg, Accept):
            self._on_accept(msg)
        elif isinstance(msg, Accepted):
            self._on_accepted(msg)
        elif isinstance(msg, Prepare):
            self._on_prepare(msg)
        elif isinstance(msg, Promise):
            self._on_promise(msg)
        elif isinstance(msg, LeaderCheck):
            self._on_check(msg)
        elif isinstance(msg, LeaderCheckReply):
            self._on_check_reply(msg)
        elif isinstance(msg, Handover):
            self._on_handover(msg)

    def _require_leading(self) -> None:
        """Refuse a proposal unless this node leads and is not handing leadership over."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        if self._handing is not None:
            raise NotLeaderError(self._handing.to)  # leadership is moving there

    def propose(self, data: bytes) -> int:
        self._require_leading()
        index = self.last_index + 1
        self._write(Entry(index, self._promised, EntryKind.COMMAND, data))
        self._stats["proposals"] += 1
        return index

    def propose_config(self, config: Config) -> int:
        self._require_leading()
        if self._configs and self._configs[-1][0] > self._commit:
            raise ConfigChangeError("a membership change is still uncommitted")
        if self._commit < self._own_index:
            raise ConfigChangeError("the leader has not committed an entry of its own ballot yet")
        old = self.config
        if self._id not in config.replicas:
            raise ConfigChangeError("a change may not remove the leader itself")
        changed = old.voters ^ config.voters
        moved = {m for m in old.voters & config.voters if (m in old.replicas) != (m in config.replicas)}
        if len(changed) != 1 or moved:
            raise ConfigChangeError("a change must add or remove exactly one member")
        index = self.last_index + 1
        self._write(Entry(index, self._promised, EntryKind.CONFIG, config.encode()))
        self._stats["config_changes"] += 1
        self._maybe_commit()
        return index

    def ready(self) -> Ready:
        if self._role is Role.LEADER:
            for peer in sorted(self._progress):
                self._send_append(peer)
        rd = Ready()
        hs = (self._promised, self._commit)
        if hs != self._hs_emitted:
            rd.hard_state = HardState(*hs)
            self._hs_emitted = hs
        if self._pending:
            rd.entries, self._pending = self._pending, []
        if self._msgs:
            rd.messages, self._msgs = self._msgs, []
        if self._commit > self._emitted and not self.is_log_replica:
            lo = max(self._emitted + 1, self._start) - self._start
            rd.committed = self._log[lo : self._commit - self._start + 1]
            self._emitted = self._commit
        if self._snapshot_to:
            rd.snapshot_to, self._snapshot_to = self._snapshot_to, []
        return rd

    def advance(self, ready: Ready) -> None:
        if self._role is not Role.LEADER or not ready.entries:
            return
        ballot = self._promised
        for e in reversed(ready.entries):
            if e.ballot == ballot:
                self._self_match = max(self._self_match, e.index)
                break
        self._maybe_commit()

    def applied_to(self, index: int) -> None:
        if index > self._applied:
            self._applied = min(index, self._commit)

    def lease_read_index(self) -> int | None:
        if self._role is not Role.LEADER or self._commit < self._own_index or self._handing is not None:
            return None  # a handing-over leader gave its lease up: acceptors may elect its successor at once
        if self._now >= self._lease_expiry():
            return None
        return self._commit

    def install_snapshot(self, meta: SnapshotMeta) -> None:
        if meta.index <= self._applied:
            return
        self._drop_through(meta.index)
        self._base_config = meta.config
        self._snapshot = meta
        self._commit = max(self._commit, meta.index)
        self._received_upto = max(self._received_upto, meta.index)
        self._applied = self._emitted = meta.index
        if self.is_log_replica:
            self._applied = self._emitted = self._commit
        self._pending = [e for e in self._pending if e.index > meta.index]
        self._stats["snapshots_installed"] += 1
        if self._role is Role.CANDIDATE:
            # The candidacy was built on the log this snapshot replaced (it would rewrite indexes
            # from before the new log start): give it up; the election timer campaigns afresh.
            self._become_follower()

    def compact(self, meta: SnapshotMeta) -> None:
        if meta.index > self._applied or meta.index < self._start:
            return
        self._drop_through(meta.index)
        self._base_config = meta.config
        self._snapshot = meta

    def campaign(self) -> None:
        if self._role is not Role.LEADER and self._can_campaign():
            self._become_follower()
            self._campaign()

    def hand_over(self, to: str) -> None:
        """Move leadership to `to`, a full replica, without waiting out an election timeout.

        From now on this leader takes no proposals and serves no lease reads (its lease is given
        up, so acceptors may elect `to` at once); once `to` holds the whole log it is told to
        campaign (Handover), and acceptors still promised to this ballot let it in although they
        heard this leader recently. If `to` has not taken over within an election timeout, this
        leader steps down and an ordinary election follows.
        """
        if self._role is not Role.LEADER:
            raise NotLeaderError(self._leader)
        if to == self._id:
            return
        if to not in self.config.replicas:
            raise ValueError(f"{to} is not a full replica of this group")
        if self._handing is not None:
            if self._handing.to == to:
                return
            raise ValueError(f"already handing over to {self._handing.to}")
        self._handing = _Handing(to, self._now + self._opts.election_timeout)
        self._stats["handovers_started"] += 1
        self._try_hand_over()

    @property
    def handing_over_to(self) -> str | None:
        return None if self._handing is None else self._handing.to

    def _try_hand_over(self) -> None:
        h = self._handing
        if h is None or h.sent:
            return
        pr = self._progress.get(h.to)
        if pr is not None and pr.match >= self.last_index:
            h.sent = True
            self._msgs.append(Handover(self._id, h.to, self._promised))

    def _on_handover(self, m: Handover) -> None:
        self._note(m.ballot)
        if (m.ballot == self._promised and self._role is Role.FOLLOWER and self._leader == m.src
                and self._can_campaign()):
            self._stats["handovers_taken"] += 1
            self._campaign(handover=m.ballot)

    # ------------------------------------------------------------ roles
    def _become_follower(self) -> None:
        if self._role is Role.LEADER:
            self._stats["step_downs"] += 1
            self._leader = None
        self._role = Role.FOLLOWER
        self._cand = None
        self._check = None
        self._handing = None
        self._progress = {}
        self._timer_base = self._now
        self._timeout = self._draw_timeout()

    def _adopt(self, ballot: Ballot) -> None:
        """Promise a higher ballot: drop any role of ours and restart the leader prefix."""
        if self._role is not Role.FOLLOWER:
            self._become_follower()
        self._promised = ballot
        self._received_upto = self._commit

    def _start_check(self) -> None:
        peers = sorted(self.config.voters - {self._id})
        self._check = _Check(deadline=self._now + self._opts.election_timeout)
        self._stats["leader_checks"] += 1
        if not peers:
            self._campaign()
            return
        for p in peers:
            self._msgs.append(LeaderCheck(self._id, p, self._promised))

    def _campaign(self, handover: Ballot | None = None) -> None:
        if not self._can_campaign():
            return
        self._check = None
        self._max_round = max(self._max_round, self._promised[0]) + 1
        ballot: Ballot = (self._max_round, self._id)
        self._promised = ballot
        self._received_upto = self._commit
        self._role = Role.CANDIDATE
        self._leader = None
        self._stats["elections_started"] += 1
        from_index = self._commit + 1
        cand = _Candidacy(ballot, from_index, self._now + self._draw_timeout(), handover=handover)
        cand.promised_by.add(self._id)
        for e in self._log[from_index - self._start :]:
            cand.merged[e.index] = e
        self._cand = cand
        self._evaluate_candidacy()

    def _candidate_configs(self, cand: _Candidacy) -> list[Config]:
        """The committed config at from_index-1, then every CONFIG in the merged suffix, in order.

        Until a membership change commits, decisions need a quorum of the old config and the
        new one alike: two leaders on diverging branches may each add a different
        one-step change to the same committed config, and only the old config's quorum is
        sure to intersect both.
        """
        cfgs = [self.config_at(cand.from_index - 1)]
        for i in sorted(i for i, e in cand.merged.items() if e.kind is EntryKind.CONFIG):
            cfgs.append(Config.decode(cand.merged[i].data))
        return cfgs

    def _evaluate_candidacy(self) -> None:
        cand = self._cand
        assert cand is not None
        cfgs = self._candidate_configs(cand)
        voters = frozenset().union(*(c.voters for c in cfgs)) | self.config.voters
        for p in sorted(voters):
            if p != self._id and p not in cand.prepared:
                cand.prepared.add(p)
                self._msgs.append(Prepare(self._id, p, cand.ballot, cand.from_index, self._commit, cand.handover))
        if any(len(cand.promised_by & c.voters) < c.quorum for c in cfgs):
            return
        if self._id not in cfgs[-1].replicas:  # removed (or demoted) meanwhile: not ours to lead
            self._stats["elections_given_up"] += 1
            self._become_follower()
            return
        self._become_leader(cand)

    def _become_leader(self, cand: _Candidacy) -> None:
        self._role = Role.LEADER
        self._cand = None
        self._set_leader(self._id)
        self._stats["elections_won"] += 1
        b = cand.ballot
        self._first_own = cand.from_index
        top = max(cand.merged) if cand.merged else self._commit
        for i in range(cand.from_index, top + 1):
            e = cand.merged.get(i)
            self._write(Entry(i, b, e.kind, e.data) if e else Entry(i, b, EntryKind.NOOP))
        self._own_index = top + 1
        self._write(Entry(self._own_index, b, EntryKind.NOOP))
        self._self_match = self._commit
        self._last_hb = self._now
        self._progress = {}
        self._sync_progress()
        for peer in sorted(self._progress):
            self._send_append(peer, heartbeat=True)

    def _sync_progress(self) -> None:
        """Replicate to the effective config's voters, and to removed ones until their removal commits.

        Keeping a removed member in the stream until then lets it learn that it was removed
        (so it stops campaigning); only the effective config's voters count in quorums.
        """
        voters = frozenset().union(*(c.voters for c in self._deciding_configs())) - {self._id}
        for p in list(self._progress):
            if p not in voters:
                del self._progress[p]
        for p in sorted(voters):
            if p not in self._progress:
                self._progress[p] = _Progress(
                    next=self._first_own if self._first_own else self.last_index + 1,
                    last_heard=self._now,
                    last_progress=self._now,
                )

    # ------------------------------------------------------------ leader
    def _leader_tick(self) -> None:
        et = self._opts.election_timeout
        if self._handing is not None and self._now >= self._handing.deadline:
            self._stats["handovers_failed"] += 1
            self._become_follower()  # its lease is gone anyway; let an ordinary election decide
            return
        cfg = self.config
        heard = sum(1 for v in cfg.voters if v == self._id or self._now - self._progress[v].last_heard < 2 * et)
        if heard < cfg.quorum:
            self._become_follower()
            return
        if self._now - self._last_hb >= self._opts.heartbeat_interval:
            self._last_hb = self._now
            stall = max(2 * self._opts.heartbeat_interval, self._opts.election_timeout / 2)
            for peer in sorted(self._progress):
                pr = self._progress[peer]
                if pr.inflight and self._now - pr.last_progress >= stall:
                    pr.inflight.clear()  # lost in the network: resend from what it holds
                    pr.next = pr.match + 1
                    pr.last_progress = self._now
                self._send_append(peer, heartbeat=True)

    def _send_append(self, peer: str, heartbeat: bool = False) -> None:
        pr = self._progress[peer]
        b = self._promised
        if pr.next < self._start:
            timeout = 2 * self._opts.election_timeout
            if pr.snapshot_at is None or self._now - pr.snapshot_at >= timeout:
                pr.snapshot_at = self._now
                self._snapshot_to.append(peer)
                self._stats["snapshots_requested"] += 1
            if heartbeat:
                pr.commit_sent = self._commit
                self._msgs.append(Accept(self._id, peer, b, pr.match + 1, (), self._commit, self._now))
            return
        last = self.last_index
        sent = False
        while len(pr.inflight) < self._opts.max_inflight and pr.next <= last:
            end = min(pr.next + self._opts.max_batch - 1, last)
            batch = tuple(self._log[pr.next - self._start : end - self._start + 1])
            self._msgs.append(Accept(self._id, peer, b, pr.next, batch, self._commit, self._now))
            pr.inflight.append(end)
            pr.next = end + 1
            sent = True
        if not sent and (heartbeat or pr.commit_sent < self._commit):
            # Probe at match+1, not next: a heartbeat overtaking in-flight batches must not be
            # refused and trigger a needless resend; lost batches are found by the stall timer.
            # A commit notice alone carries sent_at NEVER: the follower need not answer it (it
            # holds nothing new to acknowledge and a NEVER echo would renew no lease), which
            # saves a message each way per committed batch.
            sent_at = self._now if heartbeat else NEVER
            self._msgs.append(Accept(self._id, peer, b, pr.match + 1, (), self._commit, sent_at))
            sent = True
        if sent:
            pr.commit_sent = self._commit

    def _on_accepted(self, m: Accepted) -> None:
        self._note(m.promised)
        if m.promised > self._promised:
            if self._role is Role.LEADER:
                self._become_follower()
            return
        if self._role is not Role.LEADER or m.ballot != self._promised:
            return
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.last_heard = self._now
        if m.sent_at > pr.acked_sent_at:
            pr.acked_sent_at = m.sent_at
        match = min(m.match, self.last_index)
        if match > pr.match:
            pr.match = match
            pr.last_progress = self._now
        if m.ok:
            if match + 1 > pr.next:
                pr.next = match + 1
            while pr.inflight and pr.inflight[0] <= match:
                pr.inflight.popleft()
        else:
            pr.next = match + 1
            pr.inflight.clear()
        if pr.next >= self._start:
            pr.snapshot_at = None
        self._maybe_commit()
        if m.src in self._progress:  # committing its removal may have just dropped it
            self._send_append(m.src)
        self._try_hand_over()

    def _deciding_configs(self) -> list[Config]:
        """Configs whose quorums a decision needs: the committed one and any uncommitted after it."""
        cfgs = [self.config_at(self._commit)]
        cfgs.extend(c for i, c in self._configs if i > self._commit)
        return cfgs

    def _quorum_value(self, cfg: Config, own: float, value: Callable[[_Progress], float]) -> float:
        """The highest value that a quorum of `cfg` has reached (own value for ourselves)."""
        vals = sorted(
            (own if v == self._id else value(self._progress[v]) if v in self._progress else NEVER) for v in cfg.voters
        )
        return vals[len(vals) - cfg.quorum]

    def _maybe_commit(self) -> None:
        if self._role is not Role.LEADER:
            return
        n = int(min(self._quorum_value(c, self._self_match, _match) for c in self._deciding_configs()))
        if n > self._commit and n >= self._first_own:
            crossed = bool(self._configs) and self._commit < self._configs[-1][0] <= n
            self._set_commit(n)
            if crossed:
                self._sync_progress()

    def _lease_expiry(self) -> float:
        acked = min(self._quorum_value(c, self._now, _acked) for c in self._deciding_configs())
        return acked + self._opts.election_timeout * self._opts.lease_fraction

    # ------------------------------------------------------------ acceptor
    def _heard_leader_recently(self) -> bool:
        return self._role is Role.LEADER or self._now - self._heard_at < self._opts.election_timeout

    def _on_prepare(self, m: Prepare) -> None:
        self._note(m.ballot)
        # A leader's lease rests on this refusal; a leader that handed over to m.src gave its lease up.
        guard = self._heard_leader_recently() and m.src != self._leader and m.handover != self._promised
        if m.ballot > self._promised and not guard:
            self._adopt(m.ballot)
        elif not (m.ballot == self._promised and self._role is Role.FOLLOWER and self._leader != m.src):
            self._stats["prepares_refused"] += 1
            self._reply_promise(m, False, ())
            return
        self._reply_promise(m, True, tuple(self._log[max(m.from_index, self._start) - self._start :]))

    def _reply_promise(self, m: Prepare, ok: bool, entries: tuple[Entry, ...]) -> None:
        self._msgs.append(Promise(self._id, m.src, m.ballot, ok, self._promised, entries, self._commit, self._start))

    def _on_promise(self, m: Promise) -> None:
        self._note(m.promised)
        cand = self._cand
        if self._role is not Role.CANDIDATE or cand is None or m.ballot != cand.ballot:
            return
        if not m.ok:
            if m.promised > cand.ballot:
                self._become_follower()
            return
        if m.src in cand.promised_by:
            return
        if m.log_start > cand.from_index:
            # It compacted entries we lack; only a snapshot from a later leader can help us.
            # Back off longer than the others so a more up-to-date member wins meanwhile.
            self._stats["elections_given_up"] += 1
            self._become_follower()
            self._timeout += 2 * self._opts.election_timeout
            return
        cand.promised_by.add(m.src)
        merged = cand.merged
        for e in m.entries:
            if e.index >= cand.from_index:
                cur = merged.get(e.index)
                if cur is None or e.ballot > cur.ballot:
                    merged[e.index] = e
        self._evaluate_candidacy()

    def _on_accept(self, m: Accept) -> None:
        self._note(m.ballot)
        if m.ballot < self._promised:
            self._stats["accepts_rejected"] += 1
            self._reply_accepted(m, False)
            return
        if m.ballot > self._promised or self._role is not Role.FOLLOWER:
            self._adopt(m.ballot)
        self._heard_at = self._now
        self._leader_contact = self._now
        if m.commit > self._leader_commit:
            self._leader_commit = m.commit
        self._check = None
        self._set_leader(m.src)
        ok = m.start <= self._received_upto + 1
        if ok and m.entries:
            end = m.start + len(m.entries) - 1
            if end > self._received_upto:
                first = max(self._commit + 1, self._start, m.start)
                for e in m.entries[first - m.start :]:
                    cur = self.entry(e.index)
                    if cur is None or cur.ballot != e.ballot:
                        self._write(e)
                self._received_upto = end
        commit = min(m.commit, self._received_upto)
        if commit > self._commit:
            self._set_commit(commit)
        if not ok:
            self._stats["accepts_rejected"] += 1
        if ok and not m.entries and m.sent_at == NEVER:
            return  # a commit notice: nothing to acknowledge (a gap is still reported, below)
        self._reply_accepted(m, ok)

    def _reply_accepted(self, m: Accept, ok: bool) -> None:
        self._msgs.append(Accepted(self._id, m.src, m.ballot, ok, self._received_upto, self._promised, m.sent_at))

    def _on_check(self, m: LeaderCheck) -> None:
        self._note(m.ballot)
        healthy = self._heard_leader_recently()
        self._msgs.append(LeaderCheckReply(self._id, m.src, healthy, self._leader, self._promised))

    def _on_check_reply(self, m: LeaderCheckReply) -> None:
        self._note(m.ballot)
        check = self._check
        if check is None or self._role is not Role.FOLLOWER:
            return
        if m.healthy:
            self._stats["checks_stood_down"] += 1
            self._check = None
            self._timer_base = self._now
            self._timeout = self._draw_timeout()
            return
        cfg = self.config
        if m.src in cfg.voters:
            check.unhealthy.add(m.src)
        if len(check.unhealthy) + (self._id in cfg.voters) >= cfg.quorum:
            self._campaign()
