"""`kynamo operator`: the Kubernetes operator (kopf)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "the Kubernetes operator: Table and Partition resources -> replica pods, routing, repair"
DESCRIPTION = """\
Reconcile Table and Partition resources (kynamo.io/v1alpha1): partitions sized from
throughput, replica pods with volumes pinned one per zone, a PodDisruptionBudget per
partition, a routing ConfigMap per table, log-replicas and rebuilds when a replica is lost,
and splits of partitions whose load stays over their share (read from each leader's
GET /v1/partitions/<id>/load every --interval seconds).
Credentials: in-cluster service account, else KUBECONFIG. Install the CRDs first:
kubectl apply -f crds/
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--namespace", default="", help="namespace to watch (default: cluster-wide)")
    add_flag(p, "--image", default="kynamo:latest", help="storage-node image for replica pods")
    add_flag(p, "--interval", default=10.0, type=float, help="seconds between periodic reconciles")
    add_flag(p, "--split-window", default=300.0, type=float,
             help="seconds a partition's load must stay over its share before it splits")
    add_flag(p, "--split-wcu", default=0.0, type=float,
             help="write units/s over which a partition counts as hot (0: its share of the table)")
    add_flag(p, "--split-rcu", default=0.0, type=float,
             help="read units/s over which a partition counts as hot (0: its share of the table)")
    add_flag(p, "--leader-balance", default=True,
             help="hand one partition leadership per interval from the node leading most groups to one leading fewest")
    add_flag(p, "--member-address-annotation", default="",
             help="pod annotation holding a member's host:port:peer_port (test kubelets; default: pod DNS names)")
    add_flag(p, "--metrics-port", default=0, type=int,
             help="serve Prometheus /metrics on this port (0: off)")
    add_flag(p, "--client-token", default="",
             help="token presented to the storage nodes' admin API (their --client-token; from a Secret)")
    add_flag(p, "--storage-auth-secret", default="",
             help="Secret (keys client-token, peer-token) replica pods take their tokens from by secretKeyRef, "
                  "in each table's namespace; empty: storage nodes run without tokens")
    add_flag(p, "--storage-node-env", default="",
             help="JSON object of KYNAMO_* variables set on every replica pod: `kynamo storage-node` flags such as "
                  "KYNAMO_MAX_READ_LAG (the chart's storageNode.* values); applies to pods created from then on")
    add_flag(p, "--peering", default="kynamo", help="kopf peering name: operator replicas never act at once")
    add_flag(p, "--standalone", default=False, help="no peering (a single operator)")
    add_log_flags(p)


def run(args: argparse.Namespace) -> int:
    # Timers take their interval when the handlers are imported.
    os.environ["KYNAMO_INTERVAL"] = str(args.interval)
    from kynamo.operator.resources import storage_env

    try:
        settings = storage_env(args.storage_node_env)
    except ValueError as exc:
        raise SystemExit(f"kynamo operator: --storage-node-env (KYNAMO_STORAGE_NODE_ENV): {exc}") from None
    import kopf
    from kynamo.operator import handlers

    handlers.CONFIG.image = args.image
    handlers.CONFIG.split_window = args.split_window
    handlers.CONFIG.split_wcu = args.split_wcu
    handlers.CONFIG.split_rcu = args.split_rcu
    handlers.CONFIG.leader_balance = args.leader_balance
    handlers.CONFIG.member_address_annotation = args.member_address_annotation or None
    handlers.CONFIG.client_token = args.client_token or None
    handlers.CONFIG.auth_secret = args.storage_auth_secret or None
    handlers.CONFIG.storage_env = settings
    if args.storage_auth_secret and not args.client_token:
        logging.getLogger("kynamo.operator").warning(
            "replica pods require a client token (--storage-auth-secret) but this operator has none to "
            "present (KYNAMO_CLIENT_TOKEN): its admin calls will be refused")
    if args.metrics_port:
        from kynamo.operator import metrics

        metrics.serve(args.metrics_port)
    logging.basicConfig(level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO))
    ns = args.namespace or None
    asyncio.run(kopf.operator(
        clusterwide=ns is None, namespaces=[ns] if ns else None,
        standalone=args.standalone, peering_name=args.peering,
    ))
    return 0
