"""Labelled Prometheus children, looked up once.

`metric.labels(...)` takes prometheus_client's lock and validates the labels on
every call; on a hot path (a counter bumped per request or per frame) that is a
measurable share of the work. Children are cached forever: nothing in Kynamo
removes a label set, so a cached child never goes stale.
"""

from __future__ import annotations

from typing import Any

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, cached: the hot path pays one dict lookup."""
    key = (id(metric), labels)
    c = _CHILDREN.get(key)
    if c is None:
        c = _CHILDREN[key] = metric.labels(*labels)
    return c
