"""Kubernetes objects -> the planner's inputs. Pure: dicts in, planner dataclasses out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kynamo.operator import resources as R
from kynamo.operator import validation

from kynamo import planner


def ready_nodes(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nodes that can take replicas: Ready and schedulable."""
    out = []
    for n in nodes:
        conds = {c.get("type"): c.get("status") for c in n.get("status", {}).get("conditions") or []}
        if conds.get("Ready", "True") == "True" and not n.get("spec", {}).get("unschedulable"):
            out.append(n)
    return out


def topology(
    nodes: list[dict[str, Any]] | None, wanted: list[str] | None
) -> tuple[dict[str, list[str]], set[str]]:
    """(zone -> node names, unavailable zones). `nodes` None: the nodes could not be read, so
    the Table's zones are taken on trust and the scheduler picks nodes."""
    if nodes is None:
        return {z: [] for z in wanted or []}, set()
    topo: dict[str, list[str]] = {}
    for n in ready_nodes(nodes):
        z = (n["metadata"].get("labels") or {}).get(R.ZONE_LABEL)
        if z and (not wanted or z in wanted):
            topo.setdefault(z, []).append(n["metadata"]["name"])
    all_zones = {(n["metadata"].get("labels") or {}).get(R.ZONE_LABEL) for n in nodes} - {None}
    unavailable = {z for z in (wanted or all_zones) if z not in topo}
    for z in wanted or []:
        topo.setdefault(z, [])
    return topo, unavailable


def pod_state(pod: dict[str, Any] | None, node_names: set[str] | None) -> str:
    """pending / ready / lost, as the repair planner counts a member."""
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return planner.LOST
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return planner.LOST
    node = pod.get("spec", {}).get("nodeName")
    if node and node_names is not None and node not in node_names:
        return planner.LOST  # its node is gone: the pod will never run again
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return planner.READY if conds.get("Ready") == "True" else planner.PENDING


def load(pods: Iterable[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    """Members per zone and per node, so new members go where there is least."""
    zones: dict[str, int] = {}
    nodes: dict[str, int] = {}
    for p in pods:
        z = (p["metadata"].get("labels") or {}).get(R.L_ZONE)
        if z:
            zones[z] = zones.get(z, 0) + 1
        n = p.get("spec", {}).get("nodeName")
        if n:
            nodes[n] = nodes.get(n, 0) + 1
    return zones, nodes


def leader_views(parts: Iterable[dict[str, Any]],
                 pods: Iterable[dict[str, Any]]) -> tuple[list[planner.LeaderView], dict[str, str]]:
    """Settled groups (ACTIVE, healthy, not splitting or moving) as leader balance sees them, by
    member name, and the node each ready storage pod runs on."""
    node_of = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods
               if (p.get("spec") or {}).get("nodeName") and pod_state(p, None) == planner.READY}
    groups = []
    for part in parts:
        st = part.get("status") or {}
        if (st.get("phase") != "ACTIVE" or st.get("repair") != "healthy" or st.get("split")
                or st.get("inheritedMembers")):
            continue
        ns, table = part["metadata"]["namespace"], part["spec"]["table"]
        members = part["spec"]["members"]
        by_id = {R.member_id(m["name"], table, ns): m["name"] for m in members}
        leader = by_id.get(st.get("leader") or "")
        if leader is None or leader not in node_of:
            continue
        candidates = tuple(m["name"] for m in members
                           if m["role"] == planner.REPLICA and m.get("inGroup") and m["name"] in node_of)
        groups.append(planner.LeaderView(part["metadata"]["name"], leader, candidates))
    return groups, node_of


def group_view(
    part: dict[str, Any],
    pods: dict[str, dict[str, Any]],
    node_names: set[str] | None,
    stats: dict[str, dict[str, Any]],
) -> planner.GroupView:
    """A partition as the repair planner sees it. `stats` maps member name -> its storage node's
    status document (GET /v1/partitions/<id>), for those that answered."""
    spec = part["spec"]
    leader = next((d for d in stats.values() if d.get("is_leader")), None)
    members = tuple(
        planner.Member(
            name=m["name"], zone=m["zone"], role=m["role"],
            state=pod_state(pods.get(m["name"]), node_names),
            in_group=bool(m.get("inGroup")),
            applied_index=(stats.get(m["name"]) or {}).get("applied_index"),
        )
        for m in spec.get("members") or []
    )
    return planner.GroupView(
        partition=part["metadata"]["name"], members=members,
        replicas=int(spec.get("replicas", planner.REPLICATION_FACTOR)),
        commit_index=None if leader is None else leader.get("commit_index"),
        formed=bool((part.get("status") or {}).get("formed")),
        leader=next((n for n, d in stats.items() if d.get("is_leader")), None),
    )


def storage_spec(part: dict[str, Any], table: dict[str, Any], member: dict[str, Any]) -> dict[str, Any]:
    """The storage node's PartitionSpec document for one member (PUT /v1/partitions/<id>)."""
    ns, tname = part["metadata"]["namespace"], part["spec"]["table"]
    ks = validation.key_schema(table["spec"])
    full = [R.member_id(m["name"], tname, ns) for m in part["spec"]["members"]
            if m.get("inGroup") and m["role"] == planner.REPLICA]
    logs = [R.member_id(m["name"], tname, ns) for m in part["spec"]["members"]
            if m.get("inGroup") and m["role"] == planner.LOG_REPLICA]
    return {
        "partition_id": part["metadata"]["name"], "table": validation.table_name(table),
        "key_schema": ks.to_dict(), "start": part["spec"]["start"], "end": part["spec"].get("end"),
        "epoch": part["spec"]["epoch"], "role": member["role"], "replicas": full, "log_replicas": logs,
    }


def routing_doc(table: dict[str, Any], parts: list[dict[str, Any]], version: int) -> dict[str, Any]:
    """The routing table (kynamo.routing format) of a table's live partitions."""
    ns, tname = table["metadata"]["namespace"], table["metadata"]["name"]
    entries = []
    for p in sorted(parts, key=lambda p: p["spec"]["start"]):
        if (p.get("status") or {}).get("phase") == "RETIRED":
            continue
        ms = [m for m in p["spec"].get("members") or [] if m.get("inGroup")]
        leader = (p.get("status") or {}).get("leader")
        entries.append({
            "id": p["metadata"]["name"], "start": p["spec"]["start"], "end": p["spec"].get("end"),
            "epoch": p["spec"]["epoch"],
            "replicas": [R.member_id(m["name"], tname, ns) for m in ms if m["role"] == planner.REPLICA],
            "log_replicas": [R.member_id(m["name"], tname, ns) for m in ms if m["role"] == planner.LOG_REPLICA],
            "leader": leader,
        })
    return {"table": validation.table_name(table), "version": version,
            "key_schema": validation.key_schema(table["spec"]).to_dict(), "partitions": entries}
