"""End to end against a real Kubernetes cluster (the current kube context), skipped unless asked.

Set KYNAMO_E2E=1 with a cluster prepared by `tests/e2e/kind-up.sh` (three zones, the image,
the CRDs) and an operator running against it (`kynamo operator --namespace kynamo-e2e
--image kynamo:e2e`, in the cluster or beside it). The test applies a Table and waits for the
operator to make partitions, one replica pod per zone, and the routing ConfigMap; then deletes
a replica pod and waits for the log-replica / rebuild cycle to bring the partition back healthy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

NS = os.environ.get("KYNAMO_E2E_NAMESPACE", "kynamo-e2e")
pytestmark = pytest.mark.skipif(
    os.environ.get("KYNAMO_E2E") != "1" or shutil.which("kubectl") is None,
    reason="needs a cluster: KYNAMO_E2E=1 and kubectl on PATH (see tests/e2e/kind-up.sh)",
)

TABLE = {
    "apiVersion": "kynamo.io/v1alpha1", "kind": "Table",
    "metadata": {"name": "e2e-orders", "namespace": NS},
    "spec": {
        "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"}],
        "keySchema": [{"attributeName": "pk", "keyType": "HASH"}],
        "billingMode": "PAY_PER_REQUEST",
    },
}


def kubectl(*args: str, stdin: str | None = None) -> Any:
    out = subprocess.run(["kubectl", "-n", NS, *args], input=stdin, capture_output=True, text=True, check=True)
    return json.loads(out.stdout) if "-o" in args and "json" in args else out.stdout


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, KeyError, subprocess.CalledProcessError):
            pass
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(2)


def test_table_to_pods_in_three_zones_and_pod_loss_heals() -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps(TABLE))
    try:
        def ready() -> bool:
            t = kubectl("get", "tables.kynamo.io", "e2e-orders", "-o", "json")
            return t.get("status", {}).get("phase") == "ACTIVE"

        wait_for(ready, 300)
        pods = kubectl("get", "pods", "-l", "kynamo.io/table=e2e-orders", "-o", "json")["items"]
        assert sorted({p["metadata"]["labels"]["kynamo.io/zone"] for p in pods}) == ["zone-a", "zone-b", "zone-c"]
        cm = kubectl("get", "configmap", "kynamo-routing-e2e-orders", "-o", "json")
        assert json.loads(cm["data"]["routing.json"])["partitions"]

        victim = pods[0]["metadata"]["name"]
        pid = pods[0]["metadata"]["labels"]["kynamo.io/partition"]
        kubectl("delete", "pod", victim, "--wait=false")

        def healed() -> bool:
            part = kubectl("get", "partitions.kynamo.io", pid, "-o", "json")
            members = part["spec"]["members"]
            return (part["status"].get("repair") == "healthy" and victim not in {m["name"] for m in members}
                    and all(m["role"] == "replica" for m in members))

        wait_for(healed, 600)
    finally:
        kubectl("delete", "tables.kynamo.io", "e2e-orders", "--ignore-not-found", "--wait=false")
