"""Member ids name a storage-node process: `host:api_port:peer_port`.

Carrying both addresses in the id keeps group configs self-describing: a new
member added through the log is reachable without any directory service.
"""

from __future__ import annotations


def member_id(host: str, api_port: int, peer_port: int) -> str:
    return f"{host}:{api_port}:{peer_port}"


def split_member(member: str) -> tuple[str, int, int]:
    host, api, peer = member.rsplit(":", 2)
    return host, int(api), int(peer)


def api_address(member: str) -> str:
    host, api, _ = split_member(member)
    return f"{host}:{api}"


def peer_address(member: str) -> str:
    host, _, peer = split_member(member)
    return f"{host}:{peer}"
