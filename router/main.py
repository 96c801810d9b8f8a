"""`kynamo router`: the DynamoDB API in front of the storage nodes."""

from __future__ import annotations

import argparse
import sys

from kynamo.config import add_flag
from kynamo.logs import add_log_flags

SUMMARY = "the DynamoDB API as its own process, for Kubernetes (not built yet; `kynamo local` serves the API today)"
DESCRIPTION = """\
Serve DynamoDB's JSON 1.0 protocol (boto3, the AWS CLI) and route item
operations to partition leaders. The API itself is built and runs inside
`kynamo local` (port 8000) with the local control plane. This standalone
command needs the Kubernetes routing source (ConfigMaps published by the
operator), which is not built yet, so today it only reserves its flags.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--host", default="127.0.0.1", help="address to listen on")
    add_flag(p, "--port", default=8000, type=int, help="DynamoDB API port")
    add_log_flags(p)


def run(args: argparse.Namespace) -> int:
    print("kynamo router: the standalone router needs the Kubernetes operator's routing metadata, which is not "
          "built yet; run `kynamo local` for the DynamoDB API on port 8000.", file=sys.stderr)
    return 2
