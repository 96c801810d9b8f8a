"""A small Wing & Gong / Lowe-style linearizability checker for a key-value register history.

Each key is an independent register (linearizability is compositional), so the
search runs per key.  A write whose outcome is unknown (the client lost its
leader) has `complete=None`: it may take effect at any point after its
invocation, or never.  Reads with an unknown outcome carry no information and
should simply be left out of the history.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Op:
    key: str
    kind: str  # "put" or "get"
    value: object  # put: the value written; get: the value read (None = absent)
    invoke: float
    complete: float | None  # None: outcome unknown (writes only)
    client: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    key: str | None = None
    reason: str = ""


def check(history: Iterable[Op], initial: object = None) -> Verdict:
    """Is the whole history linearizable?  Returns the first offending key if not."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind == "get" and op.complete is None:
            continue
        by_key[op.key].append(op)
    for key in sorted(by_key):
        if not check_key(by_key[key], initial):
            ops = sorted(by_key[key], key=lambda o: o.invoke)
            return Verdict(False, key, f"no linearization for key {key!r}: {ops}")
    return Verdict(True)


def check_key(ops: list[Op], initial: object = None) -> bool:
    """Depth-first search over linearization orders with memoized (done-set, value) states.

    Unknown-outcome writes that no read observed are dropped first: they may simply not
    have happened, and with writes of unique values that never changes the verdict, while
    keeping them makes the search exponential in their number.
    """
    read = {o.value for o in ops if o.kind == "get"}
    ops = sorted(
        (o for o in ops if not (o.kind == "put" and o.complete is None and o.value not in read)),
        key=lambda o: o.invoke,
    )
    n = len(ops)
    ends = [math.inf if o.complete is None else o.complete for o in ops]
    required = 0
    for i, o in enumerate(ops):
        if o.complete is not None:
            required |= 1 << i
    seen: set[tuple[int, object]] = set()
    stack: list[tuple[int, object]] = [(0, initial)]
    while stack:
        done, value = stack.pop()
        if done & required == required:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        # The next op must be invoked no later than the earliest completion still pending.
        horizon = min((ends[i] for i in range(n) if not done >> i & 1), default=math.inf)
        for i in range(n):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.invoke > horizon:
                break
            if op.kind == "put":
                stack.append((done | 1 << i, op.value))
            elif op.value == value:
                stack.append((done | 1 << i, value))
    return False
