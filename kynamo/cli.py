"""The `kynamo` command: one entry point for every component."""

from __future__ import annotations

import argparse
import sys

from kynamo import __version__

DESCRIPTION = """\
Kynamo: a DynamoDB-compatible database that runs on Kubernetes.

Components (each flag also reads a KYNAMO_* environment variable):
  storage-node  hosts partition replicas (Multi-Paxos + WAL + RocksDB)
  router        the DynamoDB API (boto3, the AWS CLI) in front of the storage nodes
  operator      the Kubernetes operator reconciling Table and Partition resources
  local         the whole database on one machine, no Kubernetes
"""


def build_parser() -> argparse.ArgumentParser:
    from kynamo import local as local_main
    from kynamo.operator import main as operator_main
    from kynamo.router import main as router_main
    from kynamo.storage_node import main as storage_main

    parser = argparse.ArgumentParser(
        prog="kynamo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kynamo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in (
        ("storage-node", storage_main),
        ("router", router_main),
        ("operator", operator_main),
        ("local", local_main),
    ):
        p = sub.add_parser(
            name,
            help=module.SUMMARY,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
