"""A seeded, deterministic simulation of one Paxos group and the shells driving it.

Everything (network delays, drops, duplicates, partitions, crashes, membership
changes, snapshots, the client workload) is drawn from one `random.Random(seed)`,
so a failing seed replays exactly.  The simulated shell follows the `Ready`
protocol: persist, send, advance, apply; a crash may strike after the persist.
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kynamo.storage_node.paxos import Options, PaxosCore
from kynamo.storage_node.paxos_types import (
    Config,
    ConfigChangeError,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeaderError,
    SnapshotMeta,
)

from .linearizability import Op, check

HB = 1.0
ET = 5.0
KEYS = ("a", "b", "c")


@dataclass
class Durable:
    """What survives a crash: hard state, persisted entries, last snapshot (+ state copy)."""

    hard_state: HardState = field(default_factory=HardState)
    entries: dict[int, Entry] = field(default_factory=dict)
    snapshot: SnapshotMeta | None = None
    snap_state: dict[str, str] = field(default_factory=dict)


@dataclass
class Node:
    id: str
    boot: Config
    log_replica: bool
    core: PaxosCore | None = None
    durable: Durable = field(default_factory=Durable)
    state: dict[str, str] = field(default_factory=dict)
    applied: int = 0
    checked: int = 0  # commit index verified against the chosen map
    gen: int = 0  # tick-chain generation (a restart starts a new chain)
    retired: bool = False
    pending_writes: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (op slot, data)
    pending_reads: list[tuple[int, int, str]] = field(default_factory=list)  # (read index, slot, key)


@dataclass
class Result:
    seed: int
    violations: list[str]
    history: list[Op]
    stats: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations


class Simulation:
    def __init__(self, seed: int, *, events_budget: int = 50_000) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        r = self.rng
        self.now = 0.0
        self.seq = 0
        self.queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.violations: list[str] = []
        self.chosen: dict[int, tuple[EntryKind, bytes]] = {}
        self.ops: list[dict[str, Any]] = []
        self.budget = events_budget
        voters = r.choice((3, 3, 5))
        n_log = r.choice((0, 0, 1)) if voters == 3 else r.choice((0, 1, 2))
        full = [f"n{i}" for i in range(1, voters - n_log + 1)]
        logs = [f"l{i}" for i in range(1, n_log + 1)]
        self.next_id = voters + 1
        self.options = Options(
            heartbeat_interval=HB,
            election_timeout=ET,
            max_batch=r.choice((1, 4, 64)),
            max_inflight=r.choice((2, 8)),
            log_replica_retention=r.choice((6, 10_000)),
        )
        self.drop = r.choice((0.0, 0.05, 0.2))
        self.dup = r.choice((0.0, 0.1))
        self.max_delay = r.choice((0.3, 1.0, 2.5))
        self.crash_mid_ready = r.choice((0.0, 0.01))
        self.compact_every = r.choice((0, 5, 12))
        self.faults = True
        self.heal_at = r.uniform(20.0, 60.0)
        self.deadline = self.heal_at + 16 * ET  # liveness bound after healing
        self.group: dict[str, int] = {}
        self.probe_done: float | None = None
        self.removals: list[tuple[int, bytes, str]] = []
        self.counts: dict[str, int] = {
            "crashes": 0, "crashes_mid_ready": 0, "installs": 0, "compactions": 0,
            "config_proposed": 0, "removals_committed": 0, "handovers_asked": 0, "handovers_taken": 0,
            "handovers_failed": 0,
        }  # fmt: skip
        boot = Config(tuple(full), tuple(logs))
        self.nodes: dict[str, Node] = {}
        for nid in full + logs:
            self._add_node(nid, boot, nid in logs)
        self._at(r.uniform(0, 2), self._client)
        self._at(r.uniform(3, 10), self._fault)
        if r.random() < 0.7:
            self._at(r.uniform(6, 15), self._membership)
        self._at(self.heal_at, self._heal)
        # Leadership handovers (as the control plane asks to balance leaders) on their own random stream,
        # so the other faults of a seed stay as they were.
        self.handover_rng = random.Random(seed * 7919 + 1)
        self._at(self.handover_rng.uniform(1, 6), self._handover)

    # ------------------------------------------------------------ scheduling
    def _at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, fn, args))

    def run(self) -> Result:
        steps = 0
        while self.queue and steps < self.budget and not self.violations:
            t, _, fn, args = heapq.heappop(self.queue)
            self.now = t
            try:
                fn(*args)
            except Exception as exc:  # a crash of the core is a failure of the seed, not of the test run
                self.violations.append(f"t={t:.2f} {fn.__name__} raised {exc!r}\n{traceback.format_exc()}")
                break
            steps += 1
            if self.probe_done is not None and self.now > self.probe_done + 2:
                break
            if self.now > self.deadline:
                break
        for node in self.nodes.values():
            self._count_handovers(node)
        if not self.violations:
            self._final_checks()
        history = self._history()
        if not self.violations:
            verdict = check(history)
            if not verdict.ok:
                self.violations.append(verdict.reason)
        stats = {"events": steps, "time": self.now, "commits": len(self.chosen), "ops": len(history)}
        stats.update(self.counts)
        stats["recovery"] = (self.probe_done or self.now) - self.heal_at
        return Result(self.seed, self.violations, history, stats)

    # ------------------------------------------------------------ nodes
    def _add_node(self, nid: str, boot: Config, log_replica: bool) -> Node:
        node = Node(nid, boot, log_replica)
        self.nodes[nid] = node
        self.group[nid] = 0
        self._start(node)
        return node

    def _start(self, node: Node) -> None:
        d = node.durable
        node.core = PaxosCore(
            node.id,
            node.boot,
            options=self.options,
            rng=random.Random(self.rng.randrange(1 << 32)),
            hard_state=HardState(d.hard_state.promised, d.hard_state.commit),
            entries=[d.entries[i] for i in sorted(d.entries)],
            snapshot=d.snapshot,
            now=self.now,
            is_log_replica=node.log_replica,
        )
        node.state = dict(d.snap_state)
        node.applied = d.snapshot.index if d.snapshot else 0
        node.checked = node.core.log_start - 1
        node.gen += 1
        self._at(self.now + self.rng.uniform(0, HB), self._tick, node, node.gen)

    def _crash(self, node: Node) -> None:
        if node.core is None:
            return
        self._count_handovers(node)
        node.core = None
        node.gen += 1
        self.counts["crashes"] += 1
        for slot, _ in node.pending_writes.values():
            self.ops[slot]["complete"] = None  # outcome unknown
            self.ops[slot]["state"] = "unknown"
        node.pending_writes.clear()
        for _, slot, _ in node.pending_reads:
            self.ops[slot]["state"] = "dropped"
        node.pending_reads.clear()

    def _tick(self, node: Node, gen: int) -> None:
        if node.core is None or gen != node.gen:
            return
        node.core.tick(self.now)
        self._process(node)
        self._at(self.now + HB * self.rng.uniform(0.9, 1.1), self._tick, node, gen)

    # ------------------------------------------------------------ the shell
    def _process(self, node: Node) -> None:
        for _ in range(16):
            core = node.core
            if core is None:
                return
            rd = core.ready()
            if rd.empty():
                break
            d = node.durable
            if rd.hard_state is not None:
                d.hard_state = HardState(rd.hard_state.promised, rd.hard_state.commit)
            for e in rd.entries:
                d.entries[e.index] = e
            if self.faults and self.crash_mid_ready and self.rng.random() < self.crash_mid_ready:
                if self.rng.random() < 0.5:
                    for m in rd.messages:
                        self._send(m)
                self._crash(node)
                self.counts["crashes_mid_ready"] += 1
                self._at(self.now + self.rng.uniform(1, 8), self._restart, node)
                return
            for m in rd.messages:
                self._send(m)
            core.advance(rd)
            for e in rd.committed:
                self._apply(node, e)
            if rd.committed:
                core.applied_to(rd.committed[-1].index)
                self._resolve_reads(node)
            for peer in rd.snapshot_to:
                self._ship_snapshot(node, peer)
        self._check_commit(node)
        self._maybe_compact(node)

    def _remember(self, node: Node, e: Entry, what: str) -> None:
        got = (e.kind, e.data)
        want = self.chosen.setdefault(e.index, got)
        if want != got:
            self.violations.append(f"t={self.now:.2f} {node.id} {what} index {e.index} as {got}, but {want} was chosen")

    def _apply(self, node: Node, e: Entry) -> None:
        if e.index != node.applied + 1:
            self.violations.append(f"{node.id} applied {e.index} after {node.applied}")
        self._remember(node, e, "applied")
        node.applied = e.index
        if e.kind is EntryKind.COMMAND:
            _, key, value = e.data.decode().split("|")
            node.state[key] = value
        pending = node.pending_writes.pop(e.index, None)
        if pending is not None:
            slot, data = pending
            op = self.ops[slot]
            if data == e.data:
                op["complete"] = self.now
                op["state"] = "ok"
            else:
                op["state"] = "failed"  # its slot went to another value: it never happened

    def _check_commit(self, node: Node) -> None:
        core = node.core
        if core is None:
            return
        lo = max(node.checked + 1, core.log_start)
        for i in range(lo, core.commit_index + 1):
            e = core.entry(i)
            if e is None:
                self.violations.append(f"{node.id} committed {i} but does not hold it")
                return
            self._remember(node, e, "committed")
        node.checked = max(node.checked, core.commit_index)
        if node.log_replica and core.snapshot != node.durable.snapshot:
            node.durable.snapshot = core.snapshot  # where retention cut the log
            self._drop_durable(node, core.snapshot.index if core.snapshot else 0)

    def _drop_durable(self, node: Node, upto: int) -> None:
        d = node.durable
        for i in [i for i in d.entries if i <= upto]:
            del d.entries[i]

    def _maybe_compact(self, node: Node) -> None:
        core = node.core
        if core is None or node.log_replica or not self.compact_every:
            return
        if node.applied - core.log_start + 1 < self.compact_every or self.rng.random() < 0.5:
            return
        e = core.entry(node.applied)
        if e is None:
            return
        meta = SnapshotMeta(node.applied, e.ballot, core.config_at(node.applied))
        node.durable.snapshot = meta
        node.durable.snap_state = dict(node.state)
        self._drop_durable(node, meta.index)
        core.compact(meta)
        self.counts["compactions"] += 1

    def _ship_snapshot(self, src: Node, peer: str) -> None:
        meta = src.durable.snapshot
        if meta is None:
            return
        state = dict(src.durable.snap_state)
        self._at(self.now + self.rng.uniform(0.1, self.max_delay + 0.5), self._install, src.id, peer, meta, state)

    def _install(self, src: str, peer: str, meta: SnapshotMeta, state: dict[str, str]) -> None:
        node = self.nodes.get(peer)
        if node is None or node.core is None or not self._linked(src, peer):
            return
        if meta.index <= node.core.applied_index:
            return
        d = node.durable
        d.snapshot = meta
        d.snap_state = {} if node.log_replica else dict(state)
        self._drop_durable(node, meta.index)
        node.state = dict(d.snap_state)
        node.applied = meta.index
        for idx in [i for i in node.pending_writes if i <= meta.index]:
            slot, _ = node.pending_writes.pop(idx)
            self.ops[slot]["complete"] = None
            self.ops[slot]["state"] = "unknown"
        node.core.install_snapshot(meta)
        self.counts["installs"] += 1
        node.checked = max(node.checked, meta.index)
        self._process(node)

    # ------------------------------------------------------------ network
    def _linked(self, a: str, b: str) -> bool:
        return self.group.get(a, 0) == self.group.get(b, 0)

    def _send(self, m: Message) -> None:
        r = self.rng
        copies = 1
        if self.faults:
            if r.random() < self.drop:
                return
            if r.random() < self.dup:
                copies = 2
        for _ in range(copies):
            self._at(self.now + r.uniform(0.01, self.max_delay), self._deliver, m)

    def _deliver(self, m: Message) -> None:
        node = self.nodes.get(m.dst)
        if node is None or node.core is None or not self._linked(m.src, m.dst):
            return
        node.core.step(m)
        self._process(node)

    # ------------------------------------------------------------ faults
    def _alive(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _fault(self) -> None:
        if not self.faults:
            return
        r = self.rng
        kind = r.choice(("crash", "crash", "partition", "isolate_leader", "nothing"))
        members = sorted(n for n, node in self.nodes.items() if not node.retired)
        if kind == "crash":
            alive = [n for n in self._alive() if not n.retired]
            if alive:
                victim = r.choice(alive)
                self._crash(victim)
                self._at(self.now + r.uniform(2, 15), self._restart, victim)
        elif kind == "partition":
            for nid in members:
                self.group[nid] = r.randrange(2)
            self._at(self.now + r.uniform(3, 15), self._unpartition)
        elif kind == "isolate_leader":
            leaders = [n.id for n in self._alive() if n.core and n.core.is_leader]
            if leaders:
                self.group[r.choice(leaders)] = 1
                self._at(self.now + r.uniform(3, 15), self._unpartition)
        self._at(self.now + r.uniform(2, 8), self._fault)

    def _handover(self) -> None:
        """The leader hands over to another full replica (which may be down, cut off or behind)."""
        if not self.faults:
            return
        r = self.handover_rng
        leader = self._leader()
        if leader is not None and leader.core is not None and leader.core.handing_over_to is None:
            others = sorted(m for m in leader.core.config.replicas if m != leader.id)
            if others:
                leader.core.hand_over(r.choice(others))
                self.counts["handovers_asked"] += 1
                self._process(leader)
        self._at(self.now + r.uniform(1, 6), self._handover)

    def _count_handovers(self, node: Node) -> None:
        if node.core is not None:
            self.counts["handovers_taken"] += node.core.stats()["handovers_taken"]
            self.counts["handovers_failed"] += node.core.stats()["handovers_failed"]

    def _unpartition(self) -> None:
        for nid in self.group:
            self.group[nid] = 0

    def _restart(self, node: Node) -> None:
        if node.core is None and not node.retired:
            self._start(node)

    def _heal(self) -> None:
        self.faults = False
        self._unpartition()
        for node in list(self.nodes.values()):
            self._restart(node)
        self._at(self.now, self._probe)

    # ------------------------------------------------------------ membership
    def _leader(self) -> Node | None:
        leaders = sorted((n for n in self._alive() if n.core and n.core.is_leader), key=lambda n: n.id)
        return leaders[-1] if leaders else None

    def _membership(self) -> None:
        self._retire_removed()
        leader = self._leader()
        if leader is not None and leader.core is not None:
            core = leader.core
            cfg = core.config
            r = self.rng
            action = r.choice(("add", "remove", "add_log", "remove_log"))
            new_id = None
            if action == "add" and len(cfg.voters) < 6:
                new_id = f"n{self.next_id}"
                new = Config((*cfg.replicas, new_id), cfg.log_replicas)
            elif action == "add_log" and len(cfg.voters) < 6:
                new_id = f"l{self.next_id}"
                new = Config(cfg.replicas, (*cfg.log_replicas, new_id))
            elif action == "remove" and len(cfg.replicas) > 2 and len(cfg.voters) > 3:
                victim = r.choice([m for m in cfg.replicas if m != leader.id])
                new = Config(tuple(m for m in cfg.replicas if m != victim), cfg.log_replicas)
            elif action == "remove_log" and cfg.log_replicas and len(cfg.voters) > 3:
                victim = r.choice(cfg.log_replicas)
                new = Config(cfg.replicas, tuple(m for m in cfg.log_replicas if m != victim))
            else:
                new = None
            if new is not None:
                try:
                    idx = core.propose_config(new)
                except (ConfigChangeError, NotLeaderError):
                    idx = None
                if idx is not None:
                    self.counts["config_proposed"] += 1
                    if new_id is not None:
                        self.next_id += 1
                        self._add_node(new_id, new, new_id.startswith("l"))
                    else:
                        gone = min(cfg.voters - new.voters)
                        self.removals.append((idx, new.encode(), gone))
                    self._process(leader)
        if self.faults:
            self._at(self.now + self.rng.uniform(3, 8), self._membership)

    def _retire_removed(self) -> None:
        keep = []
        for idx, data, gone in self.removals:
            if self.chosen.get(idx) == (EntryKind.CONFIG, data):
                node = self.nodes[gone]
                self._crash(node)
                node.retired = True
                self.counts["removals_committed"] += 1
            else:
                keep.append((idx, data, gone))
        self.removals = keep

    # ------------------------------------------------------------ clients
    def _new_op(self, key: str, kind: str, value: str | None) -> int:
        self.ops.append(
            {"key": key, "kind": kind, "value": value, "invoke": self.now, "complete": None, "state": "pending"}
        )
        return len(self.ops) - 1

    def _client(self) -> None:
        r = self.rng
        alive = [n for n in self._alive() if not n.log_replica]
        leaders = [n for n in alive if n.core and n.core.is_leader]
        pool = leaders if leaders and r.random() < 0.9 else alive
        if pool:
            node = r.choice(pool)
            key = r.choice(KEYS)
            if r.random() < 0.5:
                self._put(node, key)
            else:
                self._get(node, key)
        if self.faults:
            self._at(self.now + r.uniform(0.1, 1.0), self._client)

    def _put(self, node: Node, key: str) -> int | None:
        assert node.core is not None
        if node.core.last_index - node.core.commit_index > 16:
            return None  # backpressure, as the real shell bounds its proposal queue
        slot = len(self.ops)
        data = f"{slot}|{key}|v{slot}".encode()
        try:
            idx = node.core.propose(data)
        except NotLeaderError:
            return None
        self._new_op(key, "put", f"v{slot}")
        node.pending_writes[idx] = (slot, data)
        self._process(node)
        return slot

    def _get(self, node: Node, key: str) -> None:
        assert node.core is not None
        idx = node.core.lease_read_index()
        if idx is None:
            return
        slot = self._new_op(key, "get", None)
        node.pending_reads.append((idx, slot, key))
        self._resolve_reads(node)

    def _resolve_reads(self, node: Node) -> None:
        keep = []
        for idx, slot, key in node.pending_reads:
            if node.applied >= idx:
                op = self.ops[slot]
                op["value"] = node.state.get(key)
                op["complete"] = self.now
                op["state"] = "ok"
            else:
                keep.append((idx, slot, key))
        node.pending_reads = keep

    def _probe(self) -> None:
        """After healing: a write must commit within the liveness bound."""
        if self.probe_done is not None:
            return
        done = [op for op in self.ops if op["state"] == "ok" and op["kind"] == "put" and op["invoke"] >= self.heal_at]
        if done:
            self.probe_done = self.now
            return
        leader = self._leader()
        if leader is not None:
            self._put(leader, self.rng.choice(KEYS))
        self._at(self.now + 1.0, self._probe)

    # ------------------------------------------------------------ verdicts
    def _history(self) -> list[Op]:
        out = []
        for op in self.ops:
            state = op["state"]
            if state in ("failed", "dropped") or (op["kind"] == "get" and state != "ok"):
                continue
            complete = op["complete"] if state == "ok" else None
            out.append(Op(op["key"], op["kind"], op["value"], op["invoke"], complete))
        return out

    def _final_checks(self) -> None:
        if self.probe_done is None:
            self.violations.append(
                f"liveness: no write committed between healing at t={self.heal_at:.1f} and t={self.now:.1f}"
            )
        for node in self._alive():
            self._check_commit(node)
        by_applied: dict[int, tuple[str, dict[str, str]]] = {}
        for node in self._alive():
            if node.log_replica:
                continue
            seen = by_applied.setdefault(node.applied, (node.id, node.state))
            if seen[1] != node.state:
                self.violations.append(f"{node.id} and {seen[0]} differ at applied index {node.applied}")
        leader = self._leader()
        if leader is not None and leader.core is not None and self.chosen:
            core = leader.core
            if core.lease_read_index() is not None and core.commit_index < max(self.chosen):
                self.violations.append(
                    f"leader {leader.id} commit {core.commit_index} is behind chosen {max(self.chosen)}"
                )


def run_seed(seed: int) -> Result:
    return Simulation(seed).run()
