"""Prometheus metrics of a storage-node process, labelled by partition.

Gauges that mirror core counters are refreshed by each replica's periodic
export rather than on every event, so the hot path only touches counters it
must (request latency, fsync time).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LAT = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "kynamo_storage_requests_total", "Client requests served", ["partition", "op", "outcome"]
)
REQUEST_LATENCY = Histogram(
    "kynamo_storage_request_seconds", "Client request latency", ["partition", "op"], buckets=_LAT
)
COMMIT_INDEX = Gauge("kynamo_storage_commit_index", "Highest committed log index", ["partition"])
APPLIED_INDEX = Gauge("kynamo_storage_applied_index", "Highest applied log index", ["partition"])
REPLICATION_LAG = Gauge(
    "kynamo_storage_replication_lag_entries",
    "Committed entries not yet applied on this replica",
    ["partition"],
)
IS_LEADER = Gauge("kynamo_storage_is_leader", "1 when this replica leads its group", ["partition"])
BALLOT = Gauge("kynamo_storage_ballot_round", "Round of the ballot this replica follows", ["partition"])
ELECTIONS_STARTED = Counter("kynamo_storage_elections_started_total", "Elections started", ["partition"])
ELECTIONS_WON = Counter("kynamo_storage_elections_won_total", "Elections won", ["partition"])
LEADER_CHANGES = Counter("kynamo_storage_leader_changes_total", "Leader changes observed", ["partition"])
WAL_BYTES = Counter("kynamo_storage_wal_bytes_total", "Bytes appended to the WAL", ["partition"])
WAL_FSYNC = Histogram(
    "kynamo_storage_wal_fsync_seconds", "WAL fsync latency (one per group commit)", ["partition"],
    buckets=_LAT,
)
WAL_CORRUPTION = Counter(
    "kynamo_storage_wal_corruption_total", "WAL checksum failures found in the middle of a log", ["partition"]
)
CORRUPT_FRAMES = Counter("kynamo_storage_corrupt_frames_total", "Peer frames dropped on a bad checksum")
PEER_FRAMES = Counter("kynamo_storage_peer_frames_total", "Peer frames", ["direction"])
CONSUMED_RCU = Counter(
    "kynamo_storage_consumed_read_capacity_units_total", "Read capacity consumed (1 per 4 KB)", ["partition"]
)
CONSUMED_WCU = Counter(
    "kynamo_storage_consumed_write_capacity_units_total", "Write capacity consumed (1 per 1 KB)", ["partition"]
)
ITEM_COUNT = Gauge("kynamo_storage_item_count", "Items held by this replica", ["partition"])
SIZE_BYTES = Gauge("kynamo_storage_size_bytes", "Estimated item bytes held by this replica", ["partition"])
HOT_KEY = Gauge(
    "kynamo_storage_hot_key_share",
    "Share of recent requests taken by the hottest sampled keys",
    ["partition", "rank"],
)
SNAPSHOTS_SENT = Counter("kynamo_storage_snapshots_sent_total", "Snapshot installs sent", ["partition"])
SNAPSHOTS_INSTALLED = Counter(
    "kynamo_storage_snapshots_installed_total", "Snapshot installs received", ["partition"]
)
SCRUB_RUNS = Counter("kynamo_storage_scrub_runs_total", "Scrub comparisons completed", ["partition"])
SCRUB_DIVERGENCE = Counter(
    "kynamo_storage_scrub_divergence_total", "Scrub comparisons that found a replica differing", ["partition"]
)
REPLICA_HEALTHY = Gauge(
    "kynamo_storage_replica_serving", "1 when the replica serves; 0 when it refuses (needs repair)",
    ["partition"],
)
