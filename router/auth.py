"""Who may call the API: access keys, the anonymous rule, and per-key permissions.

The rule, stated once (README and the startup line repeat it):
- keys configured, `--allow-anonymous` not given: every request must carry a valid
  SigV4 signature from a configured key;
- no keys configured: anonymous access is on (any or no signature is accepted), as
  DynamoDB Local does, so the quick start with dummy keys `x`/`x` works;
- keys configured and `--allow-anonymous`: a request that is unsigned or signed with
  an access key that is not configured is served as anonymous (admin); a request
  signed with a configured key must verify and gets that key's permissions.
- `--no-allow-anonymous` with no keys configured refuses to start.

Credentials file (`--credentials-file`, `KYNAMO_CREDENTIALS_FILE`; or the same text
in `KYNAMO_CREDENTIALS`, e.g. from a Kubernetes Secret), one key per line:

    # access-key-id  secret-access-key  [read-only|read-write|admin]  [table,table,...]
    AKIAKYNAMOEXAMPLE  wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY  admin
    AKIAREADER         s3cr3t                                    read-only  Music,Orders

The permission defaults to admin; the table list (default: all tables) limits
every table-scoped operation. The file is re-read when it changes (Secret rotation).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kynamo.router import sigv4
from kynamo.router.sigv4 import (
    AccessDeniedException,
    Headers,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

from kynamo.config import _parse_bool, add_flag

LEVELS = {"read-only": 1, "read-write": 2, "admin": 3}
READ_OPS = {"GetItem", "BatchGetItem", "Query", "Scan", "DescribeTable", "ListTables"}
WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
ACCOUNT = "000000000000"
RELOAD_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class Key:
    access_key: str
    secret: str
    level: int = LEVELS["admin"]
    tables: frozenset[str] | None = None  # None: every table


ANONYMOUS = Key("anonymous", "", LEVELS["admin"])


def parse_credentials(text: str, where: str = "credentials") -> dict[str, Key]:
    keys: dict[str, Key] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2 or len(fields) > 4:
            raise ValueError(f"{where}:{n}: expected 'access-key-id secret [permission] [tables]'")
        level = LEVELS["admin"]
        tables = None
        for extra in fields[2:]:
            if extra in LEVELS:
                level = LEVELS[extra]
            else:
                tables = frozenset(t for t in extra.split(",") if t)
        keys[fields[0]] = Key(fields[0], fields[1], level, tables)
    return keys


def required_level(op: str) -> int:
    if op in READ_OPS:
        return LEVELS["read-only"]
    if op in WRITE_OPS:
        return LEVELS["read-write"]
    return LEVELS["admin"]


def tables_of(body: dict[str, Any]) -> list[str]:
    if isinstance(body.get("RequestItems"), dict):
        return [str(t) for t in body["RequestItems"]]
    name = body.get("TableName")
    return [name] if isinstance(name, str) else []


class Authenticator:
    """Verifies each request's signature and the caller's right to the operation."""

    def __init__(self, keys: dict[str, Key], *, allow_anonymous: bool | None = None, region: str | None = None,
                 source: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.allow_anonymous = (not keys) if allow_anonymous is None else allow_anonymous
        self.region = region
        self.source = source
        self.clock = clock
        self._mtime = source.stat().st_mtime if source and source.exists() else 0.0
        self._checked = time.monotonic()
        if not keys and not self.allow_anonymous:
            raise ValueError("anonymous access is disabled but no access keys are configured")

    def describe(self) -> str:
        if not self.keys:
            return "auth: no access keys configured, anonymous access allowed (any credentials work)"
        mode = "anonymous access also allowed" if self.allow_anonymous else "anonymous access refused"
        return f"auth: SigV4 required, {len(self.keys)} access key(s) configured, {mode}"

    def _maybe_reload(self) -> None:
        if self.source is None or time.monotonic() - self._checked < RELOAD_EVERY:
            return
        self._checked = time.monotonic()
        try:
            mtime = self.source.stat().st_mtime
            if mtime != self._mtime:
                self.keys = parse_credentials(self.source.read_text(), str(self.source))
                self._mtime = mtime
        except (OSError, ValueError):
            pass  # keep the keys we have; a half-written Secret update is retried next time

    def authenticate(self, method: str, raw_path: str, raw_query: str, headers: Headers, body: bytes) -> Key:
        """The key that signed this request (or ANONYMOUS), else the DynamoDB auth error."""
        self._maybe_reload()
        if not self.keys:
            return ANONYMOUS
        query = sigv4.parse_query(raw_query)
        signed = sigv4.extract(headers, query)
        if signed is None:
            if self.allow_anonymous:
                return ANONYMOUS
            raise MissingAuthenticationTokenException()
        key = self.keys.get(signed.access_key)
        if key is None:
            if self.allow_anonymous:
                return ANONYMOUS
            raise UnrecognizedClientException()
        sigv4.check_scope(signed, self.region, "dynamodb")
        sigv4.check_time(signed, self.clock())
        sigv4.verify_signature(signed, key.secret, method, raw_path, query, headers, body)
        return key

    def authorize(self, key: Key, op: str, body: dict[str, Any]) -> None:
        if key is ANONYMOUS:
            return
        region = self.region or "us-east-1"
        tables = tables_of(body) or ["*"]
        denied = key.level < required_level(op)
        for table in tables:
            if denied or (key.tables is not None and table != "*" and table not in key.tables):
                raise AccessDeniedException(
                    f"User: arn:aws:iam::{ACCOUNT}:user/{key.access_key} is not authorized to perform: "
                    f"dynamodb:{op} on resource: arn:aws:dynamodb:{region}:{ACCOUNT}:table/{table}")


def add_auth_flags(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--credentials-file", default="",
             help="access keys, one 'key-id secret [read-only|read-write|admin] [tables]' per line "
                  "(or the text itself in KYNAMO_CREDENTIALS)")
    raw = os.environ.get("KYNAMO_ALLOW_ANONYMOUS")
    p.add_argument("--allow-anonymous", action=argparse.BooleanOptionalAction,
                   default=_parse_bool(raw) if raw is not None else None,
                   help="serve unsigned requests and unknown keys as anonymous [env KYNAMO_ALLOW_ANONYMOUS; "
                        "default: only when no keys are configured]")


def from_args(args: argparse.Namespace, region: str | None) -> Authenticator:
    """Keys from the credentials file or KYNAMO_CREDENTIALS; the anonymous rule from the flags."""
    keys: dict[str, Key] = {}
    source = None
    if args.credentials_file:
        source = Path(args.credentials_file)
        keys.update(parse_credentials(source.read_text(), str(source)))
    if os.environ.get("KYNAMO_CREDENTIALS"):
        keys.update(parse_credentials(os.environ["KYNAMO_CREDENTIALS"], "KYNAMO_CREDENTIALS"))
    return Authenticator(keys, allow_anonymous=args.allow_anonymous, region=region, source=source)
