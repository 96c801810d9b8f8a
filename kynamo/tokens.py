"""The shared secrets between Kynamo's own processes: the client token and the peer token.

Storage nodes accept their HTTP API (`/v1/...`) only from callers presenting the client
token (routers, the control plane, the operator, peers sending snapshots) and replication
frames only from peers presenting the peer token. On Kubernetes both come from a Secret;
`kynamo local` generates them once per data directory (`control/tokens.json`, mode 0600)
and hands them to its storage processes through the environment, never argv (argv shows
in `ps` to every user of the machine).

Rotation without downtime: a token setting may hold several tokens separated by commas.
A storage node accepts any of them; a caller (and a peer) presents the first. Three rolling
restarts, each compatible with the one before: "old,new" everywhere (accept both, present
old), then "new,old" (present new), then "new".
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path

CLIENT_TOKEN_ENV = "KYNAMO_CLIENT_TOKEN"
PEER_TOKEN_ENV = "KYNAMO_PEER_TOKEN"
TOKENS_FILE = "tokens.json"


def token_list(setting: str | None) -> list[str]:
    """The tokens of a setting: comma-separated, blanks dropped; the first is the one presented."""
    return [t.strip() for t in (setting or "").split(",") if t.strip()]


def presented_token(setting: str | None) -> str | None:
    """The token a caller presents: the first of its setting (None: no token)."""
    tokens = token_list(setting)
    return tokens[0] if tokens else None


def accepts(tokens: list[bytes], given: bytes) -> bool:
    """Whether `given` is one of `tokens`, comparing with every one in constant time."""
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(given, t)
    return ok


def bearer(token: str | None) -> dict[str, str]:
    """The header a caller sends to a storage node (none when the token is empty: an open node).

    `token` is a setting: with several comma-separated tokens, the first is presented.
    """
    first = presented_token(token)
    return {"Authorization": f"Bearer {first}"} if first else {}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def load_or_create(directory: Path) -> dict[str, str]:
    """The `client` and `peer` tokens kept in `directory/tokens.json`, created (0600) on first use.

    Reused on restart: storage nodes and the router of one data directory must keep agreeing.
    A file found readable by others is tightened to 0600 (its tokens are kept: the nodes use them).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TOKENS_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        doc = json.loads(path.read_text())
        if not (isinstance(doc, dict) and doc.get("client") and doc.get("peer")):
            raise ValueError(f"{path}: expected {{'client': ..., 'peer': ...}}; delete it to generate new tokens")
        return {"client": str(doc["client"]), "peer": str(doc["peer"])}
    doc = {"client": new_token(), "peer": new_token()}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(doc))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return doc
