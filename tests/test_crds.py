"""The CRDs' schemas accept the examples and reject bad specs (checked with jsonschema)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kynamo.operator.validation import table_spec_errors

ROOT = Path(__file__).resolve().parent.parent


def crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / f"{name}.yaml").read_text())


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 -> JSON Schema: `nullable: true` becomes a null type; x-kubernetes-* stay (ignored)."""
    if isinstance(node, dict):
        out = {k: to_json_schema(v) for k, v in node.items()}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    return node


def schema(name: str) -> dict[str, Any]:
    return to_json_schema(crd(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def examples() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "examples" / "table.yaml").read_text()) if d]


def errors(doc: dict[str, Any], kind: str = "table") -> list[str]:
    v = jsonschema.Draft7Validator(schema(kind))
    return [e.message for e in v.iter_errors(doc)]


def test_crd_names_and_shape():
    for name, kind, plural in (("table", "Table", "tables"), ("partition", "Partition", "partitions")):
        c = crd(name)
        assert c["metadata"]["name"] == f"{plural}.kynamo.io"
        assert c["spec"]["group"] == "kynamo.io" and c["spec"]["names"]["kind"] == kind
        v = c["spec"]["versions"][0]
        assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
        assert v["subresources"] == {"status": {}}
        assert c["spec"]["names"]["shortNames"]
        cols = {col["name"] for col in v["additionalPrinterColumns"]}
        assert {"Status", "Age"} <= cols
    cols = {col["name"] for col in crd("table")["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Status", "Partitions", "RCU", "WCU", "Age"} <= cols


def _structural(node: Any, path: str = "") -> list[str]:
    """Kubernetes rejects non-structural schemas: every property needs a type, no tuple items."""
    bad = []
    if isinstance(node, dict):
        for k, sub in (node.get("properties") or {}).items():
            if "type" not in sub and not sub.get("x-kubernetes-int-or-string") and not sub.get(
                    "x-kubernetes-preserve-unknown-fields"):
                bad.append(f"{path}.{k}: no type")
            bad += _structural(sub, f"{path}.{k}")
        if isinstance(node.get("items"), list):
            bad.append(f"{path}: tuple items")
        if isinstance(node.get("items"), dict):
            bad += _structural(node["items"], f"{path}[]")
        for kw in ("anyOf", "oneOf", "allOf"):
            for alt in node.get(kw) or []:
                if "type" in alt and path.endswith("spec"):
                    bad.append(f"{path}: type inside {kw}")
    return bad


@pytest.mark.parametrize("name", ["table", "partition"])
def test_schemas_are_structural(name):
    assert _structural(crd(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]) == []


def test_examples_pass_the_schema_and_the_operator_checks():
    docs = examples()
    assert len(docs) >= 1
    for d in docs:
        assert d["apiVersion"] == "kynamo.io/v1alpha1" and d["kind"] == "Table"
        assert errors(d) == []
        assert table_spec_errors(d["spec"]) == []


def bad(mutate) -> dict[str, Any]:
    d = copy.deepcopy(examples()[0])
    mutate(d["spec"])
    return d


SCHEMA_REJECTS = {
    "no keySchema": lambda s: s.pop("keySchema"),
    "no billingMode": lambda s: s.pop("billingMode"),
    "bad billingMode": lambda s: s.update(billingMode="ON_DEMAND"),
    "provisioned without throughput": lambda s: s.pop("provisionedThroughput"),
    "zero WCU": lambda s: s["provisionedThroughput"].update(writeCapacityUnits=0),
    "string RCU": lambda s: s["provisionedThroughput"].update(readCapacityUnits="100"),
    "bad attribute type": lambda s: s["attributeDefinitions"][0].update(attributeType="X"),
    "bad key type": lambda s: s["keySchema"][0].update(keyType="PARTITION"),
    "three keys": lambda s: s["keySchema"].append({"attributeName": "x", "keyType": "RANGE"}),
    "unknown attribute field": lambda s: s["attributeDefinitions"][0].update(nullable=True),
    "zero replicas": lambda s: s.update(replicasPerPartition=0),
    "bad size": lambda s: s.update(storage={"size": "10GB"}),
    "bad table name": lambda s: s.update(tableName="a b"),
    "short table name": lambda s: s.update(tableName="ab"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_REJECTS))
def test_schema_rejects_bad_specs(case):
    assert errors(bad(SCHEMA_REJECTS[case])), case


# Rules the CRD states in CEL (x-kubernetes-validations): the operator checks them too.
CEL_REJECTS = {
    "range key first": lambda s: s["keySchema"].reverse(),
    "key not defined": lambda s: s["keySchema"][1].update(attributeName="nope"),
    "too few zones": lambda s: s.update(zones=["a", "b"]),
    "unused attribute": lambda s: s["attributeDefinitions"].append({"attributeName": "x", "attributeType": "S"}),
}


@pytest.mark.parametrize("case", sorted(CEL_REJECTS))
def test_operator_rejects_what_cel_rejects(case):
    assert table_spec_errors(bad(CEL_REJECTS[case])["spec"]), case


def test_cel_rules_are_declared():
    rules = crd("table")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"]
    assert len(rules) >= 4


def test_partition_schema():
    good = {"apiVersion": "kynamo.io/v1alpha1", "kind": "Partition", "metadata": {"name": "orders-0"},
            "spec": {"table": "orders", "start": "", "end": None, "epoch": 1,
                     "members": [{"name": "orders-0-0", "zone": "a", "role": "replica"}]}}
    assert errors(good, "partition") == []
    worse = copy.deepcopy(good)
    worse["spec"]["start"] = "xyz"
    worse["spec"]["members"][0]["role"] = "witness"
    assert len(errors(worse, "partition")) == 2
