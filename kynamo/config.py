"""One configuration story: every flag has a `KYNAMO_*` environment fallback.

The same names appear in the CLI, the Helm values and the README, so a flag
`--peer-port` is always `KYNAMO_PEER_PORT` and `storageNode.peerPort`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any


def env_name(flag: str) -> str:
    return "KYNAMO_" + flag.lstrip("-").replace("-", "_").upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def add_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: Any,
    help: str,
    type: Callable[[str], Any] | None = None,
    choices: list[str] | None = None,
) -> None:
    """Add `--flag` whose default comes from `KYNAMO_FLAG` when set, else `default`."""
    env = env_name(flag)
    if isinstance(default, bool):
        raw = os.environ.get(env)
        value = _parse_bool(raw) if raw is not None else default
        parser.add_argument(
            flag,
            default=value,
            action=argparse.BooleanOptionalAction,
            help=f"{help} [env {env}; default {default}]",
        )
        return
    conv = type or (lambda s: s)
    raw = os.environ.get(env)
    try:
        value = conv(raw) if raw is not None else default
    except ValueError as exc:
        raise SystemExit(f"kynamo: invalid {env}={raw!r}: {exc}") from exc
    parser.add_argument(
        flag,
        default=value,
        type=conv,
        choices=choices,
        help=f"{help} [env {env}; default {default!r}]",
    )
