"""The follower read gate: a pure rule, tested without processes or clocks."""

from __future__ import annotations

import random

from kynamo.storage_node import read_gate as g
from kynamo.storage_node.paxos import Options, PaxosCore
from kynamo.storage_node.paxos_types import Accept, Config, Entry, EntryKind

H = 0.5  # horizon (election timeout)
LAG = 100
NEVER = float("-inf")


def step(state: g.GateState, view: g.FollowerView, now: float) -> tuple[g.GateState, str | None]:
    new = g.advance(state, view, now, horizon=H, max_lag=LAG)
    return new, g.refusal(new, view, now, horizon=H)


def test_new_member_that_never_heard_a_leader_refuses() -> None:
    _, why = step(g.GateState(), g.FollowerView(0, 0, NEVER), 10.0)
    assert why is not None and "no recent contact" in why


def test_empty_member_refuses_even_when_the_gap_is_within_the_lag() -> None:
    # 50 entries behind is inside max_lag, but an empty member has never caught up: those
    # entries are long-acknowledged data, not a moment's staleness.
    state, why = step(g.GateState(), g.FollowerView(0, 50, 9.9), 10.0)
    assert why is not None and "applied index 0" in why
    assert state.target == 50
    # Still replaying: the target stays where it was set, even as the leader commits more.
    state, why = step(state, g.FollowerView(40, 70, 10.0), 10.1)
    assert why is not None and state.target == 50
    # Reached the target: serves, although new commits keep it a few entries behind.
    state, why = step(state, g.FollowerView(50, 80, 10.1), 10.2)
    assert why is None and state.synced


def test_caught_up_member_serves_within_the_lag_and_refuses_beyond_it() -> None:
    state = g.GateState(True, None)
    state, why = step(state, g.FollowerView(1000, 1000 + LAG, 5.0), 5.1)
    assert why is None
    state, why = step(state, g.FollowerView(1000, 1001 + LAG, 5.1), 5.2)
    assert why is not None and not state.synced and state.target == 1001 + LAG
    # Coming back within the lag is not enough: it must reach the target set when it fell behind.
    state, why = step(state, g.FollowerView(1050, 1101, 5.2), 5.3)
    assert why is not None
    state, why = step(state, g.FollowerView(1101, 1150, 5.3), 5.4)
    assert why is None


def test_losing_contact_refuses_and_needs_a_full_catch_up_after() -> None:
    state = g.GateState(True, None)
    view = g.FollowerView(500, 500, 1.0)
    state, why = step(state, view, 1.0 + H - 0.01)
    assert why is None
    state, why = step(state, view, 1.0 + H)  # the horizon passed without an Accept
    assert why is not None and "no recent contact" in why and state == g.GateState()
    # Contact is back and the gap is 3 entries (well inside the lag): still refused until applied.
    state, why = step(state, g.FollowerView(500, 503, 9.0), 9.0)
    assert why is not None and state.target == 503
    state, why = step(state, g.FollowerView(503, 503, 9.0), 9.05)
    assert why is None


def test_installing_a_snapshot_refuses_and_resets() -> None:
    state, why = step(g.GateState(True, None), g.FollowerView(10, 10, 1.0, installing=True), 1.0)
    assert why is not None and "snapshot" in why and not state.synced


def _core(node: str, now: float = 0.0) -> PaxosCore:
    cfg = Config(("a", "b", "c"))
    return PaxosCore(node, cfg, options=Options(), rng=random.Random(1), now=now)


def test_core_tracks_the_leaders_commit_and_last_contact() -> None:
    core = _core("b")
    assert core.leader_contact == NEVER and core.leader_commit == 0
    core.tick(3.0)
    # A heartbeat from a leader whose log this member does not hold yet: the commit it reports
    # is remembered although the member cannot commit that far itself.
    core.step(Accept("a", "b", (1, "a"), 1, (), 40, 3.0))
    assert core.leader_contact == 3.0
    assert core.leader_commit == 40 and core.commit_index == 0
    core.tick(4.0)
    entries = tuple(Entry(i, (1, "a"), EntryKind.NOOP) for i in range(1, 11))
    core.step(Accept("a", "b", (1, "a"), 1, entries, 10, 4.0))
    assert core.leader_contact == 4.0 and core.leader_commit == 40  # never goes back
    # A stale ballot's Accept is refused and is no contact with the current leader.
    core.step(Accept("c", "b", (0, "c"), 1, (), 99, 4.5))
    assert core.leader_contact == 4.0 and core.leader_commit == 40
