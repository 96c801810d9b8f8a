"""Seeded fault-injection simulation of the Paxos core: safety, linearizability, liveness.

A failing seed is reported with a one-line reproduction command.  The default
suite runs 1000 * KYNAMO_SOAK_SCALE seeds; the soak test (marker `soak`) runs 20x
more with a different seed range and only when selected with `-m soak`.
"""

from __future__ import annotations

import os

import pytest

try:
    from tests.sim.simulator import Result, run_seed
except ImportError:  # tests/ on sys.path rather than the repo root
    from sim.simulator import Result, run_seed

SCALE = float(os.environ.get("KYNAMO_SOAK_SCALE", "1"))
RUNS = max(1, int(1000 * SCALE))
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


def test_simulation_is_deterministic() -> None:
    a, b = run_seed(7), run_seed(7)
    assert a.stats == b.stats and a.history == b.history


@pytest.mark.soak
def test_soak(request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.getoption("-m") or ""):
        pytest.skip("soak runs only with -m soak")
    _run_many(range(SOAK_BASE, SOAK_BASE + max(1, int(20_000 * SCALE))))


def test_reproduce() -> None:
    seed = os.environ.get("KYNAMO_SIM_SEED")
    if seed is None:
        pytest.skip("set KYNAMO_SIM_SEED to replay one seed")
    result = run_seed(int(seed))
    assert result.ok, "\n".join(result.violations)
