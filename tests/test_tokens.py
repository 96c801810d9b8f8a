"""The token file `kynamo local` keeps per data dir, and the bearer check storage nodes apply."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from kynamo.storage_node import access

from kynamo import tokens


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_once_0600_and_reused(tmp_path: Path) -> None:
    first = tokens.load_or_create(tmp_path / "control")
    path = tmp_path / "control" / tokens.TOKENS_FILE
    assert mode(path) == 0o600
    assert len(first["client"]) >= 40 and len(first["peer"]) >= 40 and first["client"] != first["peer"]
    assert tokens.load_or_create(tmp_path / "control") == first
    other = tokens.load_or_create(tmp_path / "elsewhere")
    assert other["client"] != first["client"], "each data dir gets its own tokens"


def test_a_loose_file_is_tightened_and_kept_a_broken_one_refused(tmp_path: Path) -> None:
    path = tmp_path / tokens.TOKENS_FILE
    path.write_text(json.dumps({"client": "c", "peer": "p"}))
    path.chmod(0o644)
    assert tokens.load_or_create(tmp_path) == {"client": "c", "peer": "p"}
    assert mode(path) == 0o600
    path.write_text(json.dumps({"client": "c"}))
    with pytest.raises(ValueError, match="delete it"):
        tokens.load_or_create(tmp_path)


def test_bearer_header() -> None:
    assert tokens.bearer("abc") == {"Authorization": "Bearer abc"}
    assert tokens.bearer("") == {} and tokens.bearer(None) == {}


@pytest.mark.parametrize(("header", "expected"), [
    ("Bearer s3cret", None),
    ("bearer s3cret", None),  # the scheme is case-insensitive (RFC 7235)
    ("Bearer  s3cret ", None),
    ("Bearer s3cre", "wrong"),
    ("Bearer s3cretx", "wrong"),
    ("Bearer ", "wrong"),
    ("Basic s3cret", "missing"),
    ("s3cret", "missing"),
    ("", "missing"),
    (None, "missing"),
    ("Bearer s3cr\u00e9t", "wrong"),  # non-ASCII never crashes the compare
])
def test_bearer_check(header: str | None, expected: str | None) -> None:
    assert access.check(header, b"s3cret") == expected


def test_no_token_no_middleware() -> None:
    assert access.middlewares(None) == [] and access.middlewares("") == []
    assert len(access.middlewares("t")) == 1


def test_token_lists_for_rotation() -> None:
    """A setting may list tokens: callers present the first, nodes accept any (constant-time compares)."""
    assert tokens.token_list(" new , old ,,") == ["new", "old"]
    assert tokens.token_list("") == [] and tokens.token_list(None) == []
    assert tokens.bearer("new,old") == {"Authorization": "Bearer new"}
    assert tokens.bearer(" , ") == {}
    listed = [b"new", b"old"]
    assert access.check("Bearer new", listed) is None and access.check("Bearer old", listed) is None
    assert access.check("Bearer older", listed) == "wrong" and access.check(None, listed) == "missing"
    assert access.check("Bearer new,old", listed) == "wrong"  # the whole setting is no token
    assert len(access.middlewares("new,old")) == 1 and access.middlewares(" , ") == []
    from kynamo.storage_node.transport import handshake_bytes

    assert handshake_bytes("a:1:2", "pnew,pold").endswith(b"pnew")
