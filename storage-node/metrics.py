"""Prometheus metrics of a storage-node process, labelled by partition.

Gauges that mirror core counters are refreshed by each replica's periodic
export rather than on every event, so the hot path only touches counters it
must (request latency, fsync time). The node serves its own registry, so its
/metrics shows storage metrics and process stats, not whatever other component
modules the `kynamo` command happened to import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LAT = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_P = ("partition",)


def _counter(name: str, doc: str, labels: tuple[str, ...] = _P) -> Counter:
    return Counter(name, doc, labels, registry=REGISTRY)


def _gauge(name: str, doc: str, labels: tuple[str, ...] = _P) -> Gauge:
    return Gauge(name, doc, labels, registry=REGISTRY)


def _histogram(name: str, doc: str, labels: tuple[str, ...] = _P) -> Histogram:
    return Histogram(name, doc, labels, buckets=_LAT, registry=REGISTRY)


REQUESTS = _counter("kynamo_storage_requests_total", "Client requests served", ("partition", "op", "outcome"))
CHANNELS_OPEN = Gauge("kynamo_storage_channels_open", "Router channels (WebSockets) open", registry=REGISTRY)
CHANNEL_FRAMES = _counter(
    "kynamo_storage_channel_frames_total", "Router channel frames (in: calls, out: answers)", ("direction",)
)
HANDOVERS = _counter(
    "kynamo_storage_handovers_total", "Leadership handovers this node was asked for, by outcome (done, failed)",
    ("outcome",)
)
for _outcome in ("done", "failed"):
    HANDOVERS.labels(_outcome)  # both series exist from the start (dashboards, alerts)
CHANNEL_CALLS = _counter("kynamo_storage_channel_calls_total", "Client calls that arrived over a router channel", ())
CHANNEL_CALLS_AT_ONCE = _counter(
    "kynamo_storage_channel_calls_at_once_total",
    "Channel calls answered in the frame's own callback (reads that needed no wait)", ()
)
CHANNEL_REFUSED = _counter(
    "kynamo_storage_channel_refused_total", "Router channel frames or calls refused as malformed", ("reason",)
)
REQUEST_LATENCY = _histogram("kynamo_storage_request_seconds", "Client request latency", ("partition", "op"))
COMMIT_INDEX = _gauge("kynamo_storage_commit_index", "Highest committed log index")
APPLIED_INDEX = _gauge("kynamo_storage_applied_index", "Highest applied log index")
REPLICATION_LAG = _gauge("kynamo_storage_replication_lag_entries", "Committed entries not yet applied on this replica")
IS_LEADER = _gauge("kynamo_storage_is_leader", "1 when this replica leads its group")
BALLOT = _gauge("kynamo_storage_ballot_round", "Round of the ballot this replica follows")
ELECTIONS_STARTED = _counter("kynamo_storage_elections_started_total", "Elections started")
ELECTIONS_WON = _counter("kynamo_storage_elections_won_total", "Elections won")
LEADER_CHANGES = _counter("kynamo_storage_leader_changes_total", "Leader changes observed")
WAL_BYTES = _counter("kynamo_storage_wal_bytes_total", "Bytes appended to the WAL")
WAL_FSYNC = _histogram("kynamo_storage_wal_fsync_seconds", "WAL fsync latency (one per group commit)")
APPLY_OFFLOADED = _counter(
    "kynamo_storage_apply_offloaded_total",
    "Applied batches written to RocksDB in a thread because an on-loop write would have blocked "
    "(a flush or compaction stall, or the state busy with a scrub or checkpoint)",
)
WAL_CORRUPTION = _counter("kynamo_storage_wal_corruption_total", "WAL checksum failures found in the middle of a log")
CORRUPT_FRAMES = _counter("kynamo_storage_corrupt_frames_total", "Peer frames dropped on a bad checksum", ())
PEER_FRAMES = _counter("kynamo_storage_peer_frames_total", "Peer frames", ("direction",))
CONSUMED_RCU = _counter("kynamo_storage_consumed_read_capacity_units_total", "Read capacity consumed (1 per 4 KB)")
CONSUMED_WCU = _counter("kynamo_storage_consumed_write_capacity_units_total", "Write capacity consumed (1 per 1 KB)")
ITEM_COUNT = _gauge("kynamo_storage_item_count", "Items held by this replica")
SIZE_BYTES = _gauge("kynamo_storage_size_bytes", "Estimated item bytes held by this replica")
HOT_KEY = _gauge(
    "kynamo_storage_hot_key_share", "Share of recent requests taken by the hottest sampled keys", ("partition", "rank")
)
SNAPSHOTS_SENT = _counter("kynamo_storage_snapshots_sent_total", "Snapshot installs sent")
SNAPSHOTS_INSTALLED = _counter("kynamo_storage_snapshots_installed_total", "Snapshot installs received")
SCRUB_RUNS = _counter("kynamo_storage_scrub_runs_total", "Scrub comparisons completed")
SCRUB_DIVERGENCE = _counter("kynamo_storage_scrub_divergence_total", "Scrub comparisons that found a replica differing")
REPLICA_HEALTHY = _gauge(
    "kynamo_storage_replica_serving", "1 when the replica serves; 0 when it refuses (needs repair)"
)
UNAUTHORIZED = _counter(
    "kynamo_storage_unauthorized_requests_total",
    "Requests refused for a missing or wrong client token (never reached a replica)",
    ("api", "reason"),
)
PARTITION_LIMIT = _gauge("kynamo_storage_partition_limit_units",
                         "Capacity units/s this partition is held to (pushed limit, or the physical maximum)",
                         ("partition", "kind"))
PARTITION_BALANCE = _gauge("kynamo_storage_partition_balance_units",
                           "Capacity units left in the partition's bucket (burst)", ("partition", "kind"))
THROTTLED = _counter("kynamo_storage_throttled_requests_total",
                     "Client requests refused because the partition was over its limit", ("partition", "kind"))
SPLITS = _counter("kynamo_storage_splits_total", "Splits applied by this replica (as the parent)")
READS_REFUSED = _counter(
    "kynamo_storage_reads_refused_total",
    "Eventually consistent reads a follower refused (Unavailable) because it had not caught up with its leader",
)


def declare(partition: str) -> None:
    """Export a replica's rare-event counters at 0 from its start, so alerts and dashboards see them."""
    for counter in (
        WAL_CORRUPTION, SCRUB_RUNS, SCRUB_DIVERGENCE, SNAPSHOTS_SENT, SNAPSHOTS_INSTALLED, SPLITS, READS_REFUSED,
        APPLY_OFFLOADED,
    ):
        counter.labels(partition)

for _reason in ("frame", "call"):  # exported at 0 from the start, for alerts
    CHANNEL_REFUSED.labels(_reason)
for _direction in ("in", "out"):
    CHANNEL_FRAMES.labels(_direction)
