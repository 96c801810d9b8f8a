"""Prometheus metrics of the router: requests, latency, errors by `__type`, route retries."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from kynamo.promcache import child  # noqa: F401  (re-exported: router code calls metrics.child)

REQUESTS = Counter("kynamo_router_requests_total", "API requests", ["table", "operation"])
ERRORS = Counter("kynamo_router_errors_total", "API errors by DynamoDB error type", ["table", "operation", "type"])
LATENCY = Histogram(
    "kynamo_router_request_seconds",
    "API request latency",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter("kynamo_router_route_retries_total", "storage calls retried after a stale route", ["table", "reason"])
CONSUMED_RCU = Counter("kynamo_router_consumed_rcu_total", "read capacity units consumed", ["table"])
CONSUMED_WCU = Counter("kynamo_router_consumed_wcu_total", "write capacity units consumed", ["table"])
THROTTLES = Counter(
    "kynamo_router_throttled_requests_total", "requests refused by admission control", ["table", "kind"]
)
THROTTLED = Counter(
    "kynamo_router_throttled_total", "requests refused, by reason (table_read, table_write, ...)", ["table", "reason"]
)
EARLY_REFUSALS = Counter("kynamo_router_early_refusals_total",
                         "throttled requests refused from the table name alone, before parsing", ["table", "kind"])
PROVISIONED = Gauge("kynamo_router_provisioned_capacity_units", "provisioned rate of a table", ["table", "kind"])
CONSUMED = Counter("kynamo_router_consumed_capacity_units_total", "capacity units consumed", ["table", "kind"])
GAC_GRANTS = Counter("kynamo_router_gac_grants_total", "chunk requests answered by this router's GAC",
                     ["table", "kind"])
GAC_GRANTED = Counter("kynamo_router_gac_granted_units_total", "capacity units granted by this router's GAC",
                      ["table", "kind"])
GAC_RECEIVED = Counter("kynamo_router_gac_received_units_total", "capacity units this router received from the GAC",
                       ["table", "kind"])
GAC_ERRORS = Counter("kynamo_router_gac_errors_total", "failed requests to the global admission controller")
BURST_BALANCE = Gauge("kynamo_router_burst_balance_units", "unused capacity held at the GAC (burst)", ["table", "kind"])
ON_DEMAND_CAPACITY = Gauge("kynamo_router_on_demand_capacity_units",
                           "rate an on-demand table is served at: twice its previous peak, at least the floor",
                           ["table", "kind"])
LOCAL_BALANCE = Gauge("kynamo_router_local_balance_units", "capacity units this router holds", ["table", "kind"])
AUTH_FAILURES = Counter("kynamo_router_auth_failures_total", "requests refused by SigV4 or permissions", ["type"])

