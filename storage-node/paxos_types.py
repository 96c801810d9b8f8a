"""Value types shared by the Multi-Paxos core and its shell.

Kept apart from the core so the WAL, the transport codec and the simulator can
depend on the shapes without importing the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

# A ballot is (round, node_id); tuples compare lexicographically, which gives every
# proposer a distinct, totally ordered ballot without coordination.
Ballot = tuple[int, str]
ZERO_BALLOT: Ballot = (0, "")


class EntryKind(IntEnum):
    NOOP = 0  # fills gaps found in phase 1; also the first entry of every new ballot
    COMMAND = 1  # opaque client command, applied by full replicas
    CONFIG = 2  # membership; takes effect as soon as it is in the log (one change at a time)


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    ballot: Ballot
    kind: EntryKind
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Config:
    """Group membership. Every member votes; only `replicas` hold state or lead."""

    replicas: tuple[str, ...]
    log_replicas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(sorted(self.replicas)))
        object.__setattr__(self, "log_replicas", tuple(sorted(self.log_replicas)))
        if set(self.replicas) & set(self.log_replicas):
            raise ValueError("a member cannot be both a full replica and a log-replica")

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(self.replicas) | frozenset(self.log_replicas)

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def encode(self) -> bytes:
        return ("|".join(self.replicas) + ";" + "|".join(self.log_replicas)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Config:
        full, _, logs = data.decode().partition(";")
        return cls(tuple(x for x in full.split("|") if x), tuple(x for x in logs.split("|") if x))


@dataclass(slots=True)
class HardState:
    """What an acceptor must persist before answering: its promise and the commit point it knows."""

    promised: Ballot = ZERO_BALLOT
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """The log position a state snapshot covers and the membership at that point."""

    index: int
    ballot: Ballot
    config: Config


# ---------------------------------------------------------------- messages
# Every message names its sender and receiver (member ids). The shell adds the group id.


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a over the whole suffix of the log starting at `from_index`."""

    src: str
    dst: str
    ballot: Ballot
    from_index: int
    commit: int
    # Set by a candidate the leader handed over to (see Handover): the leader's ballot. An acceptor
    # still promised to exactly that ballot lets it in although it heard that leader recently.
    handover: Ballot | None = None


@dataclass(frozen=True, slots=True)
class Handover:
    """The leader to a caught-up replica: campaign now. The leader stopped serving lease reads and
    taking proposals before sending it, so acceptors may break their promise to it for this candidate."""

    src: str
    dst: str
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b. `entries` are every accepted entry with index >= from_index."""

    src: str
    dst: str
    ballot: Ballot
    ok: bool
    promised: Ballot
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    log_start: int = 1  # first index this acceptor still holds (after compaction)


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a, pipelined and batched; an empty `entries` is a heartbeat.

    `start` is the index of entries[0] (or next index for a heartbeat); `commit`
    propagates the commit point; `sent_at` is the leader's clock (from the shell),
    echoed back so the leader can extend its lease.
    """

    src: str
    dst: str
    ballot: Ballot
    start: int
    entries: tuple[Entry, ...]
    commit: int
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: `match` is the highest index known to hold the leader's log."""

    src: str
    dst: str
    ballot: Ballot
    ok: bool
    match: int
    promised: Ballot
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class LeaderCheck:
    """Gray-failure guard: 'do you still see a healthy leader?' before an election."""

    src: str
    dst: str
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class LeaderCheckReply:
    src: str
    dst: str
    healthy: bool
    leader: str | None
    ballot: Ballot


Message = Prepare | Promise | Accept | Accepted | LeaderCheck | LeaderCheckReply | Handover


@dataclass(slots=True)
class Ready:
    """One batch of work for the shell, handled in this order:

    1. persist `hard_state` (if not None) and `entries` (append; a later record for an
       index replaces an earlier one) with one fsync;
    2. send `messages`;
    3. call `core.advance(ready)`;
    4. apply `committed` (full replicas only) and call `core.applied_to(last index)`;
    5. start a snapshot install toward every peer in `snapshot_to`.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    snapshot_to: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.hard_state or self.entries or self.messages or self.committed or self.snapshot_to)


class NotLeaderError(Exception):
    """Raised by propose() on a non-leader; carries the member it believes leads."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class ConfigChangeError(Exception):
    """A membership change was refused (another in flight, or it would remove the leader)."""
