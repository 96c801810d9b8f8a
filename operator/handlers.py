"""kopf handlers: read objects into the planner's snapshot, hand its decisions to the actuator.

No decision is made here (they live in `kynamo.planner`); every handler is a full,
idempotent reconcile, so a retry, a restart or a duplicate event only repeats no-ops.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import uuid
from collections import defaultdict
from typing import Any

import kopf
from kynamo.operator import kube as K
from kynamo.operator import metrics as M
from kynamo.operator import resources as R
from kynamo.operator import snapshot, validation
from kynamo.operator.actions import Actuator, OperatorConfig

from kynamo import planner

log = logging.getLogger("kynamo.operator")

CONFIG = OperatorConfig(interval=float(os.environ.get("KYNAMO_INTERVAL", "10")),  # set by flags or a test
                        member_address_annotation=os.environ.get("KYNAMO_MEMBER_ADDRESS_ANNOTATION") or None)
_state: dict[str, Any] = {}
MAX_STEPS = 8  # membership steps one partition pass may take back to back
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
_balanced: dict[str, float] = {}  # namespace -> when its leaders were last balanced
TABLES = (R.GROUP, R.VERSION, "tables")
PARTITIONS = (R.GROUP, R.VERSION, "partitions")


def actuator() -> Actuator:
    if _state.get("stopped"):
        # A handler kopf left running past shutdown (an orphaned timer): a new Actuator here
        # would open sessions nobody closes.
        raise RuntimeError("the operator has shut down")
    if "actuator" not in _state:
        _state["actuator"] = Actuator(K.Kube(), CONFIG)
    return _state["actuator"]


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress in annotations: our status schema is ours, and kopf's bookkeeping stays out of it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kynamo.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kynamo.io")
    settings.persistence.finalizer = "kynamo.io/cleanup"
    settings.peering.name = "kynamo"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    _state["stopped"] = False
    stale = _state.pop("actuator", None)  # a previous run's, in the same process (tests)
    if stale is not None:
        await stale.close()
    _locks.clear()  # asyncio locks bind to the loop that first waited on them: a restarted operator needs new ones


async def shut_down() -> None:
    """Close the Actuator (its storage and Kubernetes sessions) and refuse to make another.

    kopf's cleanup calls it; so does whoever runs the operator in-process (tests), because
    kopf skips cleanup when its own shutdown is cut short. Idempotent.
    """
    _state["stopped"] = True
    a = _state.pop("actuator", None)
    if a is not None:
        await a.close()


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    await shut_down()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(old: list[dict[str, Any]] | None, **wanted: tuple[bool, str, str]) -> list[dict[str, Any]]:
    """Conditions with lastTransitionTime kept unless the status flips."""
    prev = {c["type"]: c for c in old or []}
    out = []
    for typ, (ok, reason, message) in wanted.items():
        status = "True" if ok else "False"
        p = prev.get(typ)
        t = p["lastTransitionTime"] if p and p.get("status") == status and p.get("lastTransitionTime") else _now()
        out.append({"type": typ, "status": status, "reason": reason, "message": message, "lastTransitionTime": t})
    return out


async def _nodes() -> list[dict[str, Any]] | None:
    try:
        return await actuator().kube.list(K.NODES)
    except K.ApiError as e:  # no RBAC for nodes, or an API without them: trust the Table's zones
        log.info("cannot list nodes (%s): using the Table's zones", e)
        return None


# ------------------------------------------------------------ Table


@kopf.on.create(*TABLES)
@kopf.on.resume(*TABLES)
@kopf.on.update(*TABLES, field="spec")
async def table_changed(body: kopf.Body, **_: Any) -> None:
    await reconcile_table(dict(body))


@kopf.timer(*TABLES, interval=CONFIG.interval, initial_delay=1.0)
async def table_timer(body: kopf.Body, **_: Any) -> None:
    if not body.get("metadata", {}).get("deletionTimestamp"):
        await reconcile_table(dict(body))


async def reconcile_table(table: dict[str, Any]) -> None:
    ns, name = table["metadata"]["namespace"], table["metadata"]["name"]
    async with _locks[f"table/{ns}/{name}"]:
        try:
            await _reconcile_table(table)
        except Exception:
            M.RECONCILE_ERRORS.labels("Table").inc()
            raise


async def _reconcile_table(table: dict[str, Any]) -> None:
    a = actuator()
    ns, name = table["metadata"]["namespace"], table["metadata"]["name"]
    spec, status = table["spec"], dict(table.get("status") or {})
    errs = validation.table_spec_errors(spec)
    if errs:
        if status.get("phase") != "FAILED":
            kopf.warn(table, reason="InvalidSpec", message="; ".join(errs))
        await a.kube.patch(K.TABLES, ns, name, {"status": {"phase": "FAILED", "conditions": conditions(
            status.get("conditions"), Ready=(False, "InvalidSpec", "; ".join(errs)),
            Progressing=(False, "InvalidSpec", ""), Degraded=(True, "InvalidSpec", "; ".join(errs)))}}, status=True)
        return
    if not status.get("tableId"):  # persisted before any partition is named after it
        status["tableId"] = uuid.uuid4().hex
        await a.kube.patch(K.TABLES, ns, name, {"status": {"tableId": status["tableId"], "phase": "CREATING"}},
                           status=True)
        table = {**table, "status": status}
    await a.ensure(K.SERVICES, R.service(table))

    parts = await a.kube.list(K.PARTITIONS, ns, {R.L_TABLE: name})
    replicas = int(spec.get("replicasPerPartition", planner.REPLICATION_FACTOR))
    peak = status.get("peak") or {}
    want = planner.desired_partition_count(
        spec["billingMode"], (spec.get("provisionedThroughput") or {}).get("readCapacityUnits"),
        (spec.get("provisionedThroughput") or {}).get("writeCapacityUnits"),
        peak_rcu=peak.get("rcu", 0.0), peak_wcu=peak.get("wcu", 0.0))
    if not parts:
        nodes = await _nodes()
        topo, unavailable = snapshot.topology(nodes, spec.get("zones"))
        # Every table's replicas count, so a new table's pods go to the nodes (and zones) holding fewest.
        zone_load, node_load = snapshot.load(await a.kube.list(K.PODS, ns, R.STORAGE_PODS))
        try:
            placement = planner.place_table(topo, want, replicas, unavailable=unavailable,
                                            zone_load=zone_load, node_load=node_load)
        except planner.PlacementError as e:
            kopf.warn(table, reason="PlacementFailed", message=str(e))
            await a.kube.patch(K.TABLES, ns, name, {"status": {"conditions": conditions(
                status.get("conditions"), Ready=(False, "PlacementFailed", str(e)),
                Progressing=(True, "WaitingForZones", str(e)), Degraded=(True, "PlacementFailed", str(e)))}},
                status=True)
            return
        bounds = [b"", *planner.keycodec.hash_space_boundaries(want), None]
        for i, slots in enumerate(placement):
            pid = planner.partition_id(name, status["tableId"], i)
            members = [{"name": planner.member_name(pid, j), "zone": s.zone, "role": planner.REPLICA,
                        "inGroup": True, **({"node": s.node} if s.node else {})} for j, s in enumerate(slots)]
            await a.ensure(K.PARTITIONS, R.partition(table, pid, i, bounds[i], bounds[i + 1], 1, members))
        kopf.info(table, reason="PartitionsCreated", message=f"{want} partitions x {replicas} replicas")
        parts = await a.kube.list(K.PARTITIONS, ns, {R.L_TABLE: name})
    elif want > len([p for p in parts if (p.get("status") or {}).get("phase") != "RETIRED"]):
        splits = planner.plan_throughput_splits(
            [(p["metadata"]["name"], bytes.fromhex(p["spec"]["start"]),
              None if p["spec"].get("end") is None else bytes.fromhex(p["spec"]["end"])) for p in parts], want)
        msg = ", ".join(f"{s.partition}@{s.key.hex()}" for s in splits)
        kopf.info(table, reason="SplitPlanned", message=f"throughput needs {want} partitions: {msg}")

    a.learn(await a.kube.list(K.PODS, ns, {R.L_TABLE: name}))
    # Routing: publish a new version whenever the partitions' routing content changes.
    version = int(status.get("routingVersion") or 0)
    doc = snapshot.routing_doc(table, parts, version)
    cm = await a.kube.get(K.CONFIGMAPS, ns, R.routing_name(name))
    current = json.loads(((cm or {}).get("data") or {}).get("routing.json") or "null")
    if current is None or {**current, "version": 0} != {**doc, "version": 0}:
        version += 1
        doc["version"] = version
        await a.ensure(K.CONFIGMAPS, R.routing_configmap(table, doc), update=True)
        kopf.info(table, reason="RoutingPublished", message=f"routing version {version}")

    phases = [(p.get("status") or {}).get("phase") for p in parts]
    formed = all((p.get("status") or {}).get("formed") for p in parts)
    degraded = [p["metadata"]["name"] for p in parts if (p.get("status") or {}).get("phase") == "DEGRADED"]
    ready = formed and not degraded
    # A table that has served stays ACTIVE while a split child forms (routers refuse a CREATING table).
    phase = "ACTIVE" if formed or status.get("phase") == "ACTIVE" else "CREATING"
    st = {p["metadata"]["name"]: p.get("status") or {} for p in parts}
    splitting = [n for n, x in st.items() if x.get("phase") == "SPLITTING"]
    moving = [n for n, x in st.items()
              if x.get("inheritedMembers") or (x.get("phase") == "RETIRED" and not x.get("podsReleased"))]
    if not ready:
        progress = (True, "Reconciling", "")
    elif splitting:
        progress = (True, "Splitting", ", ".join(splitting))
    elif moving:
        progress = (True, "MovingReplica", ", ".join(moving))
    else:
        progress = (False, "Stable", "")
    await a.kube.patch(K.TABLES, ns, name, {"status": {
        "phase": phase, "partitions": len([x for x in phases if x != "RETIRED"]), "routingVersion": version,
        "observedGeneration": table["metadata"].get("generation"),
        "conditions": conditions(
            status.get("conditions"),
            Ready=(ready, "AllPartitionsServing" if ready else "NotReady",
                   "" if ready else f"{sum(1 for p in parts if not (p.get('status') or {}).get('formed'))} "
                                    "partitions forming"),
            Progressing=progress,
            Degraded=(bool(degraded), "ReplicaLost" if degraded else "AllReplicasHealthy", ", ".join(degraded)),
        )}}, status=True)


@kopf.on.delete(*TABLES)
async def table_deleted(body: kopf.Body, **_: Any) -> None:
    """Delete partitions, pods, volumes, budgets and routing; owner references would too, but the
    finalizer makes the Table disappear only once its data volumes are really released."""
    a = actuator()
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    await a.kube.delete(K.CONFIGMAPS, ns, R.routing_name(name))
    for res in (K.PODS, K.PVCS, K.PDBS, K.PARTITIONS):
        for obj in await a.kube.list(res, ns, {R.L_TABLE: name}):
            await a.kube.delete(res, ns, obj["metadata"]["name"])
    await a.kube.delete(K.SERVICES, ns, R.service_name(name))
    kopf.info(body, reason="Deleted", message="partitions, pods and volumes deleted")


# ------------------------------------------------------------ Partition


@kopf.on.create(*PARTITIONS)
@kopf.on.resume(*PARTITIONS)
async def partition_changed(body: kopf.Body, **_: Any) -> None:
    await reconcile_partition(dict(body))


@kopf.timer(*PARTITIONS, interval=CONFIG.interval, initial_delay=1.0)
async def partition_timer(body: kopf.Body, **_: Any) -> None:
    await reconcile_partition(dict(body))


@kopf.on.event("", "v1", "pods", labels={R.L_PARTITION: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """A replica pod deleted or failed: act at once, not at the next timer tick."""
    failed = (body.get("status") or {}).get("phase") == "Failed"
    if event.get("type") != "DELETED" and not failed and not body["metadata"].get("deletionTimestamp"):
        return
    ns, pid = body["metadata"]["namespace"], body["metadata"]["labels"][R.L_PARTITION]
    actuator().learn([body])
    part = await actuator().kube.get(K.PARTITIONS, ns, pid)
    if part is not None:
        await reconcile_partition(part)


async def reconcile_partition(part: dict[str, Any]) -> None:
    ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
    async with _locks[f"partition/{ns}/{pid}"]:
        fresh = await actuator().kube.get(K.PARTITIONS, ns, pid)  # the lock may have queued us behind a change
        if fresh is not None and not fresh["metadata"].get("deletionTimestamp"):
            try:
                await _reconcile_partition(fresh)
            except Exception:
                M.RECONCILE_ERRORS.labels("Partition").inc()
                raise


async def _reconcile_partition(part: dict[str, Any]) -> None:
    a = actuator()
    ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
    table = await a.kube.get(K.TABLES, ns, part["spec"]["table"])
    if table is None or table["metadata"].get("deletionTimestamp"):
        return
    status = dict(part.get("status") or {})
    if status.get("phase") == "RETIRED":
        await _retire(part)
        return
    pods = await _member_pods(part)
    nodes = await _nodes()
    node_names = None if nodes is None else {n["metadata"]["name"] for n in nodes}

    if not status.get("formed"):
        for m in part["spec"]["members"]:
            if m["name"] not in pods:
                await a.ensure_member(part, table, m)
        pods = await _member_pods(part)
        if all(snapshot.pod_state(pods.get(m["name"]), node_names) == planner.READY
               for m in part["spec"]["members"]) and await a.bootstrap(part, table, pods):
            status["formed"] = True
            kopf.info(part, reason="GroupFormed", message=f"{len(pods)} replicas formed the group")

    stats = await a.member_stats(pid, pods)
    leader = next((n for n, d in stats.items() if d.get("is_leader")), None)
    view = snapshot.group_view({**part, "status": status}, pods, node_names, stats)
    changed = False
    if view.formed:
        tpods = await a.kube.list(K.PODS, ns, {R.L_TABLE: part["spec"]["table"]})
        zone_load, node_load = snapshot.load(tpods)
        topo, unavailable = snapshot.topology(nodes, table["spec"].get("zones")
                                              or sorted({m["zone"] for m in part["spec"]["members"]}))
        was_moving = planner.moving(view)
        # Steps that only need the storage nodes (membership changes, releases) run back to back within
        # one pass, re-reading the group between them: a move is many small steps, and a timer pass is slow.
        for _ in range(MAX_STEPS):
            routed = await _routed_members(part) if planner.moving(view) else set()
            actions = planner.plan_group(view, topo, unavailable=unavailable, zone_load=zone_load,
                                         node_load=node_load, routed=routed)
            for act in actions:
                # A split child moving its replicas off the parent's pods, or a repair.
                reason = ("MovingReplica" if planner.moving(view) and planner.repair_phase(view) == "healthy"
                          else type(act).__name__)
                log.info("partition %s: %s", pid, _describe(act), extra={"ctx": {"partition": pid, "reason": reason}})
                kopf.event(part, type="Warning" if reason == "CreateMember" else "Normal", reason=reason,
                           message=_describe(act))
                part = await a.apply(act, part, table, pods, leader)
            if actions:
                pods = await _member_pods(part)
            if not any(isinstance(x, planner.AddToGroup | planner.RemoveFromGroup | planner.ReleaseMember)
                       for x in actions):
                view = snapshot.group_view({**part, "status": status}, pods, node_names, stats)
                break
            changed = True
            if any(isinstance(x, planner.RemoveFromGroup) for x in actions):
                await _publish(part)  # routers stop using the member before its replica is dropped
            if any(isinstance(x, planner.AddToGroup) for x in actions):
                await asyncio.sleep(0.5)  # the new member installs the leader's snapshot meanwhile
            stats = await a.member_stats(pid, pods)
            leader = next((n for n, d in stats.items() if d.get("is_leader")), None)
            view = snapshot.group_view({**part, "status": status}, pods, node_names, stats)
        if was_moving and not planner.moving(view):
            kopf.info(part, reason="ReplicasMoved", message="every replica runs on a pod of this partition")

    repair = planner.repair_phase(view)
    degraded = view.formed and repair != "healthy"
    inherited = [m.name for m in view.members if not planner.owns_member(pid, m.name)]
    if status.get("split"):
        progress = (True, "Splitting", f"split at {status['split'].get('at')} into "
                                       f"{', '.join(status['split'].get('children') or [])}")
    elif not view.formed or degraded:
        progress = (True, repair, "")
    elif inherited:
        progress = (True, "MovingReplica", f"{len(inherited)} replicas still on the parent's pods: "
                                           f"{', '.join(inherited)}")
    else:
        progress = (False, repair, "")
    voters = sum(1 for m in part["spec"]["members"] if m.get("inGroup"))
    await a.ensure(K.PDBS, R.pdb(part, voters), update=True)
    leader_id = R.member_id(leader, part["spec"]["table"], ns) if leader else None
    await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {
        "formed": bool(status.get("formed")), "repair": repair, "leader": leader_id,
        "commitIndex": view.commit_index, "inheritedMembers": len(inherited),
        "phase": "SPLITTING" if status.get("split") else
                 ("DEGRADED" if degraded else ("ACTIVE" if view.formed else "CREATING")),
        "members": [{"name": m.name, "state": m.state, **({"appliedIndex": m.applied_index}
                                                        if m.applied_index is not None else {})}
                    for m in view.members],
        "conditions": conditions(
            status.get("conditions"),
            Ready=(view.formed and leader is not None, "Serving" if leader else "NoLeader", ""),
            Progressing=progress,
            Degraded=(degraded, repair, ", ".join(m.name for m in view.members if m.state == planner.LOST)),
        )}}, status=True)
    if changed:  # members changed: publish routing now, not at the table's next tick
        await _publish(part)
    if status.get("split") or (repair == "healthy" and leader is not None):
        await _split_step(part, table, status, stats, pods, leader, moving=bool(inherited))
    if CONFIG.leader_balance and repair == "healthy" and leader is not None and not status.get("split"):
        await _balance_leaders(ns)


async def _balance_leaders(ns: str) -> None:
    """At most one leadership handover per interval in a namespace (planner.plan_leader_balance): from
    the node whose storage pods lead most groups to one leading fewest. Any settled partition's pass
    may run it; the first one in an interval does."""
    now = asyncio.get_running_loop().time()
    if now - _balanced.get(ns, float("-inf")) < CONFIG.interval:
        return
    _balanced[ns] = now  # before any await: passes of other partitions meanwhile skip
    a = actuator()
    parts = await a.kube.list(K.PARTITIONS, ns)
    pods = await a.kube.list(K.PODS, ns, R.STORAGE_PODS)
    groups, node_of = snapshot.leader_views(parts, pods)
    move = planner.plan_leader_balance(groups, set(node_of.values()), node_of=node_of.__getitem__)
    if move is None:
        return
    part = next(p for p in parts if p["metadata"]["name"] == move.partition)
    leader = next(g.leader for g in groups if g.partition == move.partition)
    assert leader is not None
    pod = next(p for p in pods if p["metadata"]["name"] == leader)
    to_id = R.member_id(move.to, part["spec"]["table"], ns)
    done = await a.hand_over(move.partition, pod, to_id)
    M.LEADER_HANDOVERS.labels("done" if done else "failed").inc()
    if done:  # the next pass (maybe another partition's) must not plan from the old leader
        await a.kube.patch(K.PARTITIONS, ns, move.partition, {"status": {"leader": to_id}}, status=True)
    message = f"leadership from {leader} ({node_of[leader]}) to {move.to} ({node_of[move.to]}): balancing leaders"
    log.info("partition %s: %s%s", move.partition, message, "" if done else " failed",
             extra={"ctx": {"partition": move.partition, "done": done}})
    kopf.event(part, type="Normal" if done else "Warning", reason="LeaderMoved" if done else "LeaderMoveFailed",
               message=message)


async def _publish(part: dict[str, Any]) -> None:
    """Reconcile the partition's table now: routing follows a membership change at once."""
    fresh = await actuator().kube.get(K.TABLES, part["metadata"]["namespace"], part["spec"]["table"])
    if fresh is not None:
        await reconcile_table(fresh)


async def _routed_members(part: dict[str, Any]) -> set[str]:
    """Names of this partition's members that the published routing still lists (routers may use them)."""
    ns, pid, tname = part["metadata"]["namespace"], part["metadata"]["name"], part["spec"]["table"]
    cm = await actuator().kube.get(K.CONFIGMAPS, ns, R.routing_name(tname))
    doc = json.loads(((cm or {}).get("data") or {}).get("routing.json") or "{}")
    ids: set[str] = set()
    for p in doc.get("partitions") or []:
        if p.get("id") == pid:
            ids.update(p.get("replicas") or [], p.get("log_replicas") or [])
    return {m["name"] for m in part["spec"].get("members") or [] if R.member_id(m["name"], tname, ns) in ids}


async def _member_pods(part: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pods of a partition's members: its own, and after a split the parent's pods it shares."""
    ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
    names = {m["name"] for m in part["spec"].get("members") or []}
    pods = {p["metadata"]["name"]: p for p in await actuator().kube.list(K.PODS, ns, {R.L_TABLE: part["spec"]["table"]})
            if p["metadata"]["name"] in names or (p["metadata"].get("labels") or {}).get(R.L_PARTITION) == pid}
    actuator().learn(pods.values())
    return pods


# ------------------------------------------------------------ splitting on load

_loads: dict[str, tuple[float, float, float]] = {}  # partition -> last (monotonic time, rcu total, wcu total)
_samples: dict[str, list[planner.LoadSample]] = {}


def _sample(pid: str, doc: dict[str, Any], now: float, keep: float) -> tuple[planner.LoadSample, ...]:
    """Rates from two readings of the leader's consumed-unit totals (a reset total starts over)."""
    rcu, wcu = float(doc.get("rcu") or 0), float(doc.get("wcu") or 0)
    prev = _loads.get(pid)
    _loads[pid] = (now, rcu, wcu)
    samples = _samples.setdefault(pid, [])
    if prev is not None and now > prev[0] and rcu >= prev[1] and wcu >= prev[2]:
        dt = now - prev[0]
        samples.append(planner.LoadSample(now, (rcu - prev[1]) / dt, (wcu - prev[2]) / dt))
    samples[:] = [x for x in samples if x.at >= now - keep]
    return tuple(samples)


async def _record_peak(table: dict[str, Any], peak: dict[str, float],
                       rates: dict[str, tuple[float, float]]) -> None:
    """An on-demand table's peak (the table-wide rate, summed over its partitions) into its status:
    the planner provisions such a table for twice it, so the split threshold follows real traffic."""
    if table["spec"].get("billingMode") != "PAY_PER_REQUEST" or not rates:
        return
    before = (float(peak.get("rcu", 0.0)), float(peak.get("wcu", 0.0)))
    seen = (sum(r for r, _ in rates.values()), sum(w for _, w in rates.values()))
    after = planner.update_peak(before, seen)
    if after[0] > before[0] * 1.05 + 1 or after[1] > before[1] * 1.05 + 1:  # no status write per small rise
        meta = table["metadata"]
        await actuator().kube.patch(K.TABLES, meta["namespace"], meta["name"],
                                    {"status": {"peak": {"rcu": after[0], "wcu": after[1]}}}, status=True)


async def _split_step(part: dict[str, Any], table: dict[str, Any], status: dict[str, Any],
                      stats: dict[str, dict[str, Any]], pods: dict[str, dict[str, Any]], leader: str | None,
                      *, moving: bool = False) -> None:
    """Read the leader's load into plan_split; carry a split decision through, one idempotent step per pass:
    record it, commit it through the parent's log, create the children, retire the parent from routing."""
    a = actuator()
    ns, pid = part["metadata"]["namespace"], part["metadata"]["name"]
    info = status.get("split")
    if info is None:
        lpod = pods.get(leader or "")
        doc = await a.load(pid, lpod) if lpod is not None else None
        if doc is None or doc.get("frozen"):
            return
        now = asyncio.get_running_loop().time()
        cfg = a.cfg
        samples = _sample(pid, doc, now, cfg.split_window + 3 * cfg.interval)
        tspec, tstatus = table["spec"], table.get("status") or {}
        live = [p for p in await a.kube.list(K.PARTITIONS, ns, {R.L_TABLE: part["spec"]["table"]})
                if (p.get("status") or {}).get("phase") != "RETIRED"]
        pt = tspec.get("provisionedThroughput") or {}
        peak = tstatus.get("peak") or {}
        share_r, share_w = planner.partition_share(tspec["billingMode"], pt.get("readCapacityUnits"),
                                                   pt.get("writeCapacityUnits"), max(1, len(live)),
                                                   peak.get("rcu", 0.0), peak.get("wcu", 0.0))
        # Adaptive capacity: this partition's limit from every live sibling's latest rate, to each replica.
        rates = {n: (s[-1].rcu, s[-1].wcu) for p in live if (s := _samples.get(n := p["metadata"]["name"]))}
        lim_r, lim_w = planner.partition_limits(tspec["billingMode"], pt.get("readCapacityUnits"),
                                                pt.get("writeCapacityUnits"), rates,
                                                [p["metadata"]["name"] for p in live]).get(pid, (None, None))
        for pod in pods.values():
            await a.push_limits(pid, pod, {"rcu": lim_r, "wcu": lim_w})
        await _record_peak(table, peak, rates)
        load = planner.PartitionLoad(
            partition=pid, start=bytes.fromhex(part["spec"]["start"]),
            end=None if part["spec"].get("end") is None else bytes.fromhex(part["spec"]["end"]),
            samples=samples,
            distribution=tuple((bytes.fromhex(k), float(w)) for k, w in doc.get("distribution") or []),
            recent=tuple(bytes.fromhex(k) for k in doc.get("recent") or []),
            size_bytes=int(doc.get("size_bytes") or 0), moving=moving)
        decision = planner.plan_split(load, cfg.split_rcu or share_r, cfg.split_wcu or share_w, now,
                                      window=cfg.split_window)
        if not isinstance(decision, planner.Split):
            if decision.reason not in ("not-hot", status.get("lastSplitDecision")):
                await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"lastSplitDecision": decision.reason}},
                                   status=True)
            return
        all_parts = await a.kube.list(K.PARTITIONS, ns, {R.L_TABLE: part["spec"]["table"]})
        index = max(int(p["spec"].get("index") or 0) for p in all_parts) + 1
        tid = part["spec"].get("tableId") or tstatus.get("tableId", "")
        info = {"at": decision.key.hex(), "reason": decision.reason, "index": index,
                "children": [planner.partition_id(part["spec"]["table"], tid, index + i) for i in (0, 1)],
                "epoch": max(int(p["spec"]["epoch"]) for p in all_parts) + 1}
        await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"split": info, "phase": "SPLITTING",
                                                              "lastSplitDecision": decision.reason}}, status=True)
        kopf.info(part, reason="SplitPlanned", message=f"{decision.reason}: at {info['at']} into "
                                                       f"{', '.join(info['children'])}")
    # Commit through the parent's log: any member forwards nothing, so ask each until the leader takes it.
    if not status.get("splitCommitted"):
        order = ([leader] if leader else []) + [n for n in pods if n != leader]
        for name in order:
            if name in pods and await a.split(pid, pods[name], info):
                break
        else:
            return
        await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"splitCommitted": True}}, status=True)
    # The children live in the parent's pods (each hosting member seeded them); they own their halves.
    members = [{k: v for k, v in m.items()} for m in part["spec"]["members"]
               if m.get("inGroup") and m["role"] == planner.REPLICA]
    at = bytes.fromhex(info["at"])
    start = bytes.fromhex(part["spec"]["start"])
    end = None if part["spec"].get("end") is None else bytes.fromhex(part["spec"]["end"])
    for i, (cid, lo, hi) in enumerate(zip(info["children"], (start, at), (at, end), strict=True)):
        child = R.partition(table, cid, int(info["index"]) + i, lo, hi, int(info["epoch"]), members, parent=pid)
        await a.ensure(K.PARTITIONS, child)
        await a.kube.patch(K.PARTITIONS, ns, cid, {"status": {"formed": True, "phase": "ACTIVE"}}, status=True)
    await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"phase": "RETIRED"}}, status=True)
    M.SPLITS.labels(part["spec"]["table"]).inc()
    kopf.info(part, reason="Split", message=f"split at {info['at']} into {', '.join(info['children'])}")
    fresh = await a.kube.get(K.TABLES, ns, part["spec"]["table"])
    if fresh is not None:
        await reconcile_table(fresh)  # publish the routing switch now, not at the next tick


async def _retire(part: dict[str, Any]) -> None:
    """A split parent out of routing: drop its replicas from the storage nodes, then delete each of its pods
    (and volume) once no child has a replica on it any more, then its PodDisruptionBudget."""
    a = actuator()
    ns, pid, tname = part["metadata"]["namespace"], part["metadata"]["name"], part["spec"]["table"]
    status = part.get("status") or {}
    if status.get("podsReleased"):
        return
    if not status.get("replicasDropped"):
        cm = await a.kube.get(K.CONFIGMAPS, ns, R.routing_name(tname))
        routed = json.loads(((cm or {}).get("data") or {}).get("routing.json") or "{}")
        if any(p.get("id") == pid for p in routed.get("partitions") or []):
            return  # routers may still send here: wait for the switch
        pods = await _member_pods(part)
        if not all([await a.drop_replica(pid, pod) for pod in pods.values()]):
            return
        await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"replicasDropped": True}}, status=True)
        kopf.info(part, reason="Retired", message="split parent's replicas dropped from the storage nodes")
    own = [p["metadata"]["name"] for p in await a.kube.list(K.PODS, ns, {R.L_TABLE: tname, R.L_PARTITION: pid})]
    hosted = {m["name"] for p in await a.kube.list(K.PARTITIONS, ns, {R.L_TABLE: tname})
              if p["metadata"]["name"] != pid for m in p["spec"].get("members") or []}
    idle = planner.idle_pods(own, hosted)
    for name in idle:
        log.info("deleting pod %s of retired partition %s: it hosts no replica any more", name, pid,
                 extra={"ctx": {"partition": pid, "pod": name}})
        await a.kube.delete(K.PODS, ns, name)
        await a.kube.delete(K.PVCS, ns, f"data-{name}")
    if idle:
        kopf.info(part, reason="PodsReleased", message=f"deleted {', '.join(idle)}: no replica left on them")
    left = sorted(set(own) - set(idle))
    if not left:
        await a.kube.delete(K.PDBS, ns, pid)
    await a.kube.patch(K.PARTITIONS, ns, pid, {"status": {"podsReleased": not left, "conditions": conditions(
        status.get("conditions"), Ready=(False, "Retired", "split into " + ", ".join(
            (status.get("split") or {}).get("children") or [])),
        Progressing=(bool(left), "MovingReplica" if left else "Retired",
                     f"children still on {', '.join(left)}" if left else ""),
        Degraded=(False, "Retired", ""))}}, status=True)


def _describe(act: planner.Action | planner.TransferLeader | planner.ReleaseMember) -> str:
    if isinstance(act, planner.CreateMember):
        return f"starting {act.role} {act.name} in zone {act.slot.zone}"
    if isinstance(act, planner.TransferLeader):
        return f"handing leadership to {act.to}"
    if isinstance(act, planner.ReleaseMember):
        return f"dropping the replica from {act.name} (the pod stays for the partition that owns it)"
    if isinstance(act, planner.AddToGroup):
        return f"adding {act.role} {act.name} to the group"
    if isinstance(act, planner.RemoveFromGroup):
        return f"removing {act.name} from the group"
    return f"deleting {act.name}"
