"""Prometheus metrics of the router: requests, latency, errors by `__type`, route retries."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
