"""The operator's Prometheus metrics, in a registry of its own (no process/platform families mixed in).

Rare events are counters per table so an alert can say which table split or is repairing;
reconcile errors are counted per kind, since a failing reconcile is otherwise only a kopf retry log line.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

REGISTRY = CollectorRegistry()
SPLITS = Counter("kynamo_operator_splits_total", "partitions split (parent retired into two children)",
                 ["table"], registry=REGISTRY)
LOG_REPLICAS_ADDED = Counter("kynamo_operator_log_replicas_added_total",
                             "log-replicas added to a group to cover a lost replica", ["table"], registry=REGISTRY)
LOG_REPLICAS_RETIRED = Counter("kynamo_operator_log_replicas_retired_total",
                               "log-replicas removed from a group once its full replicas caught up",
                               ["table"], registry=REGISTRY)
LEADER_HANDOVERS = Counter("kynamo_operator_leader_handovers_total",
                           "leaderships handed between nodes to balance leaders, by outcome", ["outcome"],
                           registry=REGISTRY)
for _outcome in ("done", "failed"):
    LEADER_HANDOVERS.labels(_outcome)
RECONCILE_ERRORS = Counter("kynamo_operator_reconcile_errors_total", "reconciles that raised (kopf retries them)",
                           ["kind"], registry=REGISTRY)
for _kind in ("Table", "Partition"):
    RECONCILE_ERRORS.labels(_kind)  # exported at 0 from the start, so rate() sees the first error


def serve(port: int, host: str = "0.0.0.0") -> None:
    """`/metrics` on `port`, from a daemon thread (kopf owns the event loop)."""
    start_http_server(port, addr=host, registry=REGISTRY)
