"""The wrk pieces every benchmark shares: a Lua `done` that reports one JSON line, and its parser."""

from __future__ import annotations

import json
from typing import Any

# Appended to each benchmark's Lua script: one `RESULT {...}` line with counts and latency.
DONE_LUA = r"""
function done(summary, latency, requests)
  local errs = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format('RESULT {"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), errs))
end
"""


def parse_result(stdout: str, stderr: str = "") -> dict[str, Any]:
    """The RESULT line as a dict, with `ops` added: successful requests per second (an error is not an op)."""
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            doc = json.loads(line[7:])
            doc["ops"] = (doc["requests"] - doc["errors"]) / doc["seconds"]
            return doc
    raise RuntimeError(f"wrk printed no result: {stdout[-400:]} {stderr[-400:]}")
