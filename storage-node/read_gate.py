"""May a non-leader replica serve an eventually consistent read? A pure rule, no I/O, no clock.

DynamoDB's eventually consistent reads may be a moment stale, never missing data acknowledged
long ago. A follower that lost contact with its leader, is installing a snapshot, or is a new
member still replaying the log would answer "no such item" for old writes, so it refuses
(`Unavailable`, retried on another member) until it has caught up:

- it heard from the current leader within `horizon` seconds (the election timeout: the span in
  which the Paxos core itself still trusts that leader);
- after any gap in that contact (or a snapshot install, or a restart), it has applied at least
  the leader's commit index as first reported after the gap (the catch-up target);
- while in contact since then, it stays within `max_lag` entries of the leader's last reported
  commit index (beyond that it must catch up to a new target again).

The shell keeps a `GateState`, feeds it the core's view on every tick and every read, and keeps
what `advance` returns.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FollowerView:
    """What the core knows, sampled by the shell: all indexes are log indexes, times the shell's clock."""

    applied: int  # applied to local state
    leader_commit: int  # the highest commit index a leader reported to us
    leader_contact: float  # when an Accept of the current leader last arrived (-inf: never)
    installing: bool = False  # a snapshot install is replacing the local state


@dataclass(frozen=True, slots=True)
class GateState:
    """`synced`: caught up since the last gap; `target`: the commit index to reach before serving."""

    synced: bool = False
    target: int | None = None


def advance(state: GateState, view: FollowerView, now: float, *, horizon: float, max_lag: int) -> GateState:
    """The next gate state: contact gaps and installs reset it, reaching the target sets it."""
    if view.installing or now - view.leader_contact >= horizon:
        return GateState()
    if state.synced:
        if view.leader_commit - view.applied > max_lag:
            return GateState(False, view.leader_commit)  # fell far behind: catch up to today's commit
        return state
    target = view.leader_commit if state.target is None else state.target
    if view.applied >= target:
        return GateState(True, None)
    return GateState(False, target)


def refusal(state: GateState, view: FollowerView, now: float, *, horizon: float) -> str | None:
    """Why this replica must not serve an eventually consistent read now (None: it may).

    `state` is the one `advance` returned for the same view and time (it already holds the lag rule).
    """
    if view.installing:
        return "replica is catching up: installing a snapshot"
    if now - view.leader_contact >= horizon:
        return "replica is catching up: no recent contact with the partition leader"
    if not state.synced:
        return (
            f"replica is catching up: applied index {view.applied}, "
            f"leader commit index {view.leader_commit} (target {state.target})"
        )
    return None
