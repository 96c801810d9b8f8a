"""`kynamo router`: the DynamoDB API in front of the storage nodes."""

from __future__ import annotations

import argparse
import sys

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "the DynamoDB API (not built yet: see the README's status section)"
DESCRIPTION = """\
Serve DynamoDB's JSON 1.0 protocol (boto3, the AWS CLI) and route item
operations to partition leaders. NOT BUILT YET: this command only reserves its
flags; the storage node is the first component delivered.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--host", default="127.0.0.1", help="address to listen on")
    add_flag(p, "--port", default=8000, type=int, help="DynamoDB API port")
    add_log_flags(p)


def run(args: argparse.Namespace) -> int:
    print("kynamo router: not built yet (see README, 'Status').", file=sys.stderr)
    return 2
