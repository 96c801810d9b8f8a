"""Seeded fault-injection simulation of the Paxos core: safety, linearizability, liveness.

A failing seed is reported with a one-line reproduction command. The default
test always runs 1,000 seeds; the soak test (marker `soak`) runs 20,000 *
KYNAMO_SOAK_SCALE more seeds from another range (scale 0.05 unless set, so a
plain `pytest` stays quick; `make test` uses 0.1, the full soak is scale 1).
"""

from __future__ import annotations

import os

import pytest

try:
    from tests.sim.simulator import Result, run_seed
except ImportError:  # tests/ on sys.path rather than the repo root
    from sim.simulator import Result, run_seed

SCALE = float(os.environ.get("KYNAMO_SOAK_SCALE", "0.05"))
RUNS = 1000
SOAK_BASE = 1_000_000


def _repro(seed: int) -> str:
    return f"KYNAMO_SIM_SEED={seed} python -m pytest tests/test_paxos_sim.py -k reproduce -q"


def _run_many(seeds: range) -> list[Result]:
    results = []
    for seed in seeds:
        result = run_seed(seed)
        assert result.ok, f"seed {seed} failed: {result.violations[0]}\nreproduce: {_repro(seed)}"
        results.append(result)
    return results


def test_simulated_runs_are_safe_linearizable_and_live() -> None:
    results = _run_many(range(RUNS))
    # The workload must actually exercise the system, not pass vacuously.
    assert sum(r.stats["commits"] for r in results) > 5 * RUNS
    assert sum(r.stats["ops"] for r in results) > 5 * RUNS
    # Leadership handovers (some to members that are down or cut off) happened and some completed.
    assert sum(r.stats["handovers_taken"] for r in results) > RUNS // 2
    assert sum(r.stats["handovers_failed"] for r in results) > 0


def test_simulation_is_deterministic() -> None:
    a, b = run_seed(7), run_seed(7)
    assert a.stats == b.stats and a.history == b.history


@pytest.mark.soak
def test_soak() -> None:
    _run_many(range(SOAK_BASE, SOAK_BASE + max(1, int(20_000 * SCALE))))


def test_reproduce() -> None:
    seed = os.environ.get("KYNAMO_SIM_SEED")
    if seed is None:
        pytest.skip("set KYNAMO_SIM_SEED to replay one seed")
    result = run_seed(int(seed))
    assert result.ok, "\n".join(result.violations)
