"""The AWS CLI commands a newcomer copies from the README, run against `kynamo local`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
from router_env import LocalKynamo, kynamo  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("aws") is None, reason="AWS CLI not installed")]


def aws(env: LocalKynamo, *args: str) -> dict[str, Any]:
    cmd = ["aws", "dynamodb", *args, "--endpoint-url", env.endpoint, "--region", "us-east-1", "--output", "json"]
    environ = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_PAGER": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_readme_cli_walkthrough(kynamo: LocalKynamo) -> None:  # noqa: F811
    aws(kynamo, "create-table", "--table-name", "Music",
        "--attribute-definitions", "AttributeName=Artist,AttributeType=S", "AttributeName=SongTitle,AttributeType=S",
        "--key-schema", "AttributeName=Artist,KeyType=HASH", "AttributeName=SongTitle,KeyType=RANGE",
        "--billing-mode", "PAY_PER_REQUEST")
    aws(kynamo, "wait", "table-exists", "--table-name", "Music")
    aws(kynamo, "put-item", "--table-name", "Music",
        "--item", '{"Artist": {"S": "No One You Know"}, "SongTitle": {"S": "Call Me Today"}, "Year": {"N": "2015"}}')
    got = aws(kynamo, "query", "--table-name", "Music", "--key-condition-expression", "Artist = :a",
              "--expression-attribute-values", '{":a": {"S": "No One You Know"}}')
    assert got["Count"] == 1 and got["Items"][0]["Year"] == {"N": "2015"}
    assert "Music" in aws(kynamo, "list-tables")["TableNames"]


def test_settle_gc_freezes_startup_objects_and_spaces_collections() -> None:
    """What the router, `kynamo local` and storage nodes call once started (full collections of a
    router's startup objects paused every request in flight for up to 35 ms)."""
    import gc

    from kynamo.loop import settle_gc

    thresholds = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (50_000, 50, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
