"""Kubernetes manifests for a table's objects: pure functions of names, specs and placements."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from kynamo import planner

GROUP, VERSION = "kynamo.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
L_TABLE, L_PARTITION, L_ROLE, L_ZONE, L_MEMBER = (
    "kynamo.io/table", "kynamo.io/partition", "kynamo.io/role", "kynamo.io/zone", "kynamo.io/member")
ZONE_LABEL = "topology.kubernetes.io/zone"
HOST_LABEL = "kubernetes.io/hostname"
API_PORT, PEER_PORT = 7100, 7101
DEFAULT_IMAGE = "kynamo:latest"
UID = 10001  # the image's `kynamo` user (Dockerfile)
# Keys of the storage auth Secret (the Helm chart's `storage.auth`): the tokens reach the storage
# node as env through secretKeyRef, so the operator never reads the Secret's values.
SECRET_KEYS = {"KYNAMO_CLIENT_TOKEN": "client-token", "KYNAMO_PEER_TOKEN": "peer-token"}
# What the operator itself sets on a replica pod (addresses, ports, volume, tokens): not configurable.
OWNED_ENV = frozenset({"KYNAMO_DATA_DIR", "KYNAMO_HOST", "KYNAMO_ADVERTISE_HOST", "KYNAMO_PORT",
                       "KYNAMO_PEER_PORT", *SECRET_KEYS})
MANAGED = {"app.kubernetes.io/name": "kynamo", "app.kubernetes.io/managed-by": "kynamo-operator"}


def owner(obj: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReference to `obj`: Kubernetes garbage-collects children even if the operator is gone."""
    m = obj["metadata"]
    return {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj.get("kind", ""), "name": m["name"],
            "uid": m.get("uid", ""), "controller": controller, "blockOwnerDeletion": True}


def service_name(table: str) -> str:
    return f"kynamo-{table}"


def routing_name(table: str) -> str:
    return f"kynamo-routing-{table}"


# (namespace, pod) -> "host:port:peer_port", learnt from the pod annotation named by
# --member-address-annotation (test kubelets run many nodes on one host, on ports of their own).
ADDRESSES: dict[tuple[str, str], str] = {}


def learn_addresses(pods: Iterable[dict[str, Any]], annotation: str | None) -> None:
    """Remember each annotated pod's address; kept after the pod is gone, so it can still be removed."""
    if not annotation:
        return
    for p in pods:
        addr = (p["metadata"].get("annotations") or {}).get(annotation)
        if addr:
            ADDRESSES[(p["metadata"].get("namespace", ""), p["metadata"]["name"])] = addr


def member_id(pod: str, table: str, namespace: str) -> str:
    """The member id the Paxos group uses: a stable DNS name (pod IPs change on reschedule)."""
    return ADDRESSES.get((namespace, pod)) or f"{pod}.{service_name(table)}.{namespace}.svc:{API_PORT}:{PEER_PORT}"


def partition(table: dict[str, Any], pid: str, index: int, start: bytes, end: bytes | None, epoch: int,
              members: list[dict[str, Any]], parent: str | None = None) -> dict[str, Any]:
    name = table["metadata"]["name"]
    spec: dict[str, Any] = {
        "table": name, "tableId": table.get("status", {}).get("tableId", ""), "index": index,
        "start": start.hex(), "end": None if end is None else end.hex(), "epoch": epoch,
        "replicas": table["spec"].get("replicasPerPartition", planner.REPLICATION_FACTOR), "members": members,
    }
    if parent:
        spec["parent"] = parent
    return {
        "apiVersion": API_VERSION, "kind": "Partition",
        "metadata": {"name": pid, "namespace": table["metadata"]["namespace"],
                     "labels": {**MANAGED, L_TABLE: name}, "ownerReferences": [owner(table)]},
        "spec": spec,
    }


def pvc(part: dict[str, Any], member: dict[str, Any], table_spec: dict[str, Any]) -> dict[str, Any]:
    storage = table_spec.get("storage") or {}
    # A log-replica keeps only the recent log: a small volume is enough.
    size = "1Gi" if member["role"] == planner.LOG_REPLICA else storage.get("size", "10Gi")
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage.get("storageClassName"):
        spec["storageClassName"] = storage["storageClassName"]
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"data-{member['name']}", "namespace": part["metadata"]["namespace"],
                     "labels": member_labels(part, member), "ownerReferences": [owner(part)]},
        "spec": spec,
    }


STORAGE_PODS = {**MANAGED, "app.kubernetes.io/component": "storage-node"}  # selects every table's replica pods


def member_labels(part: dict[str, Any], member: dict[str, Any]) -> dict[str, str]:
    return {**STORAGE_PODS, L_TABLE: part["spec"]["table"],
            L_PARTITION: part["metadata"]["name"], L_ROLE: member["role"], L_ZONE: member["zone"],
            L_MEMBER: member["name"]}


def storage_env(text: str) -> dict[str, str]:
    """The `kynamo storage-node` settings for every replica pod, from a JSON object of KYNAMO_* variables.

    The operator's --storage-node-env (the Helm chart renders it from `storageNode.*`). Names the
    operator sets itself (OWNED_ENV) are refused, so a value cannot move a pod's ports or tokens.
    """
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"storage-node env: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError("storage-node env: expected a JSON object of KYNAMO_* variables")
    env: dict[str, str] = {}
    for name, value in doc.items():
        if not isinstance(name, str) or re.fullmatch(r"KYNAMO_[A-Z0-9_]+", name) is None:
            raise ValueError(f"storage-node env: {name!r} is not a KYNAMO_* variable")
        if name in OWNED_ENV:
            raise ValueError(f"storage-node env: {name} is set by the operator itself")
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float):
            raise ValueError(f"storage-node env: {name} must be a string or a number")
        env[name] = str(value)
    return env


def pod(part: dict[str, Any], member: dict[str, Any], table_spec: dict[str, Any], *,
        image: str = DEFAULT_IMAGE, auth_secret: str | None = None,
        settings: dict[str, str] | None = None) -> dict[str, Any]:
    """One replica (or log-replica) of one partition: `kynamo storage-node` on its own volume, in its zone.

    With `auth_secret`, the client and peer tokens come from that Secret in the pod's namespace
    (not optional: a pod without its Secret must not start open). `settings`: more KYNAMO_*
    variables (storage_env), over the defaults here (the log level) but never over OWNED_ENV.
    """
    ns = part["metadata"]["namespace"]
    table = part["spec"]["table"]
    name = member["name"]
    labels = member_labels(part, member)
    node_terms: list[dict[str, Any]] = []
    if member.get("node"):
        node_terms.append({"weight": 50, "preference": {"matchExpressions": [
            {"key": HOST_LABEL, "operator": "In", "values": [member["node"]]}]}})
    env = {
        "KYNAMO_DATA_DIR": "/data", "KYNAMO_HOST": "0.0.0.0",
        "KYNAMO_ADVERTISE_HOST": f"{name}.{service_name(table)}.{ns}.svc",
        "KYNAMO_PORT": str(API_PORT), "KYNAMO_PEER_PORT": str(PEER_PORT), "KYNAMO_LOG_LEVEL": "info",
    }
    env.update({k: v for k, v in (settings or {}).items() if k not in OWNED_ENV})
    probe = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [owner(part)]},
        "spec": {
            "hostname": name, "subdomain": service_name(table),
            "restartPolicy": "Always",  # a crash restarts in place, from this pod's own WAL and RocksDB
            "terminationGracePeriodSeconds": 30,
            # The image's unprivileged user; fsGroup makes the data volume writable for it.
            "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                "fsGroupChangePolicy": "OnRootMismatch",
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": ZONE_LABEL, "operator": "In", "values": [member["zone"]]}]}]},
                    **({"preferredDuringSchedulingIgnoredDuringExecution": node_terms} if node_terms else {}),
                },
                # Spread members of one group over nodes, and a table's pods too where there is room.
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"topologyKey": HOST_LABEL, "labelSelector": {
                        "matchLabels": {L_PARTITION: part["metadata"]["name"]}}}},
                    {"weight": 10, "podAffinityTerm": {"topologyKey": HOST_LABEL, "labelSelector": {
                        "matchLabels": {L_TABLE: table}}}},
                ]},
            },
            "containers": [{
                "name": "storage-node", "image": image, "command": ["kynamo", "storage-node"],
                "env": [{"name": k, "value": v} for k, v in env.items()] + [
                    {"name": k, "valueFrom": {"secretKeyRef": {"name": auth_secret, "key": key}}}
                    for k, key in SECRET_KEYS.items() if auth_secret],
                "ports": [{"name": "api", "containerPort": API_PORT}, {"name": "peer", "containerPort": PEER_PORT}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "api"}, **probe},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "api"}, "initialDelaySeconds": 10,
                                  **probe, "failureThreshold": 6},
                "resources": table_spec.get("resources") or {},
                # Writes go to /data (WAL, RocksDB, checkpoints) and /tmp only.
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        },
    }


def pdb(part: dict[str, Any], voters: int) -> dict[str, Any]:
    """Voluntary disruptions (drains, upgrades) may never take the group below its quorum."""
    name = part["metadata"]["name"]
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": part["metadata"]["namespace"],
                     "labels": {**MANAGED, L_TABLE: part["spec"]["table"], L_PARTITION: name},
                     "ownerReferences": [owner(part)]},
        "spec": {"minAvailable": planner.quorum(voters), "selector": {"matchLabels": {L_PARTITION: name}}},
    }


def service(table: dict[str, Any]) -> dict[str, Any]:
    """Headless service: stable DNS names for member ids; not-ready pods resolve too (peers catch up)."""
    name = table["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(name), "namespace": table["metadata"]["namespace"],
                     "labels": {**MANAGED, L_TABLE: name}, "ownerReferences": [owner(table)]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {L_TABLE: name},
                 "ports": [{"name": "api", "port": API_PORT}, {"name": "peer", "port": PEER_PORT}]},
    }


def routing_configmap(table: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The routing document routers watch (`kynamo.routing.RoutingTable.from_doc` reads `routing.json`)."""
    name = table["metadata"]["name"]
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": routing_name(name), "namespace": table["metadata"]["namespace"],
                     "labels": {**MANAGED, L_TABLE: name, "kynamo.io/routing-version": str(doc["version"])},
                     "ownerReferences": [owner(table)]},
        "data": {"routing.json": json.dumps(doc, sort_keys=True)},
    }
