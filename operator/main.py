"""`kynamo operator`: the Kubernetes operator (kopf)."""

from __future__ import annotations

import argparse
import sys

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "the Kubernetes operator (not built yet: see the README's status section)"
DESCRIPTION = """\
Reconcile Table and Partition resources: place replicas across zones, split
partitions on load, add log-replicas when a pod is lost, publish routing.
NOT BUILT YET: this command only reserves its flags.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--namespace", default="", help="namespace to watch (default: cluster-wide)")
    add_log_flags(p)


def run(args: argparse.Namespace) -> int:
    print("kynamo operator: not built yet (see README, 'Status').", file=sys.stderr)
    return 2
