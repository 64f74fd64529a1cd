"""Observability an SRE can use, checked offline: the Grafana dashboard's structure, every PromQL expression of the
dashboard and the alert rules against the metric names the processes really export, the Kubernetes scrape config
against the manifests, promtool on all of it (rules, configs, the alerts' unit tests), and the new metrics on a
real /metrics. Grafana cannot run here; promtool can (Debian's `prometheus` package, scripts/ensure-tools.sh)."""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.app import create_service_app
from shared.topology import GATEWAY_OPS_PORT, local_ports
from tests.support import IN_CI, drop_pg_databases, free_port, pg_database_url, require_postgres

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "bagtrack-dashboard.json"
ALERTS = DEPLOY / "prometheus-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus-alerts.test.yml"
PROMETHEUS_CONFIGS = (DEPLOY / "prometheus.yml", DEPLOY / "prometheus-k8s.yml")
K8S_CONFIG = DEPLOY / "prometheus-k8s.yml"
PORTS = local_ports()  # each process's port, in the manifests too (tests/deploy/test_manifests.py)

# Every module that defines metrics is imported by one of these (each process's app module).
APP_MODULES = ("gateway.app", "services.auth.app", "services.scanning.app", "services.billing.app",
               "services.dashboard.app")
# Series the expressions may use that no bagtrack process exports, and who does.
EXTERNAL = {
    "up": "Prometheus itself, per target",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_pod_status_phase": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_pod_container_status_last_terminated_reason": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
}
# prometheus-client's default collectors: exported by every bagtrack process (checked in the registry below).
DEFAULT_COLLECTOR_SERIES = ("process_start_time_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total")
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# --- PromQL metric names ------------------------------------------------------------------------------

# Words that are PromQL, not series: aggregations (may stand before `by (...)`), set and comparison modifiers.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "and", "or", "unless", "atan2", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
    "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: identifiers outside strings, label matchers, ranges and grouping lists
    that are not functions (followed by "(") nor PromQL words. Grafana's $variables are not names."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_WORDS}


def test_metric_names_reads_promql():
    expr = ('histogram_quantile(0.95, sum by (service, le) (rate(a_bucket{route!~"x|y(z)", le="0.1"}[$__range])))'
            ' / on (service) group_left (pod) b offset 1h > 1e-3 * c and ignoring (state) max without (x) (d{e="f"})'
            ' or vector(0) unless on () e')
    assert metric_names(expr) == {"a_bucket", "b", "c", "d", "e"}


def exported_series() -> set[str]:
    """Every series name the bagtrack processes can export: each registered family expanded by its type, since a
    labelled metric has no samples until first used."""
    for module in APP_MODULES:
        importlib.import_module(module)
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",)}
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target, and the expression inside each query variable's label_values()."""
    board = dashboard()
    queries = [(f"panel {p['id']} {p['title']!r}", t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: expected label_values(<series>, <label>)"
            queries.append((f"variable {variable['name']}", match.group(1)))
    return queries


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def test_every_expression_uses_only_exported_metrics():
    exported = exported_series()
    for series in DEFAULT_COLLECTOR_SERIES:
        assert series in exported, f"{series}: prometheus-client's default collectors are not registered"
    queries = dashboard_queries() + [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    used: set[str] = set()
    unknown = []
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        used |= names
        unknown += [f"{where}: {name}" for name in sorted(names - exported - set(EXTERNAL))]
    assert not unknown, "metrics no process exports (nor Prometheus or kube-state-metrics):\n" + "\n".join(unknown)
    assert not set(EXTERNAL) & exported, "an external series is one of ours now: drop it from EXTERNAL"
    assert set(EXTERNAL) <= used, f"EXTERNAL lists series nothing uses: {sorted(set(EXTERNAL) - used)}"


# --- the Grafana dashboard ----------------------------------------------------------------------------

def test_dashboard_structure():
    board = dashboard()
    assert re.fullmatch(r"[\w-]{1,40}", board["uid"]) and board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["service"]["type"] == "query" and variables["service"]["includeAll"]
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), "panel ids must be unique integers"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        where = f"panel {p['id']} {p.get('title')!r}"
        assert p["type"] in {"row", "stat", "timeseries", "state-timeline"} and p["title"], where
        pos = p["gridPos"]
        assert all(isinstance(pos[k], int) for k in "xywh") and pos["w"] > 0 and pos["h"] > 0, where
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{where}: wider than the 24-column grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{where} overlaps {cells[(x, y)]}"
                cells[(x, y)] = where
        if p["type"] == "row":
            assert not p.get("targets"), where
            continue
        assert p["datasource"] == DATASOURCE, f"{where}: datasource must be the $datasource variable"
        targets = p["targets"]
        assert targets, f"{where}: no query"
        assert len({t["refId"] for t in targets}) == len(targets), f"{where}: duplicate refId"
        for t in targets:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), where
            for name in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert name in variables or name in GRAFANA_BUILTINS, f"{where}: unknown variable ${name}"


def test_dashboard_covers_what_an_sre_asks():
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    used = set().union(*map(metric_names, exprs))
    assert {"bagtrack_http_requests_total", "bagtrack_http_request_duration_seconds_bucket",  # RED
            "bagtrack_circuit_breaker_open", "bagtrack_rate_limited_total", "bagtrack_auth_lockouts_total",
            "bagtrack_db_pool_connections", "bagtrack_dependency_up", "bagtrack_event_loop_lag_seconds",
            "up", "kube_deployment_status_replicas_available", "process_start_time_seconds"} <= used
    groupings = [set(re.split(r",\s*", g)) for e in exprs for g in re.findall(r"\bby \(([^)]*)\)", e)]
    assert {"service"} in groupings, "RED per service"
    assert any({"service", "route"} <= g for g in groupings), "RED per route"
    assert all('service=~"$service"' in e or 'job=~"$service"' in e for e in exprs
               if metric_names(e) & {"bagtrack_http_requests_total", "up"}), "a panel ignores the service variable"


# --- alert rules -------------------------------------------------------------------------------------

REQUIRED_ALERTS = {
    "BagtrackServiceNotReady", "BagtrackPodNotReady", "BagtrackDatabaseDown", "BagtrackRedisDown",
    "BagtrackContainerRestarting", "BagtrackProcessRestarting", "BagtrackOOMKilled", "BagtrackErrorBudgetBurn",
    "BagtrackLatencyBudgetBurn", "BagtrackRateLimitSpike", "BagtrackLockoutSpike",
    # the first four, kept
    "BagtrackTargetDown", "BagtrackHigh5xxRate", "BagtrackCircuitBreakerOpen", "BagtrackHighP95Latency",
}


def test_alert_rules_say_what_and_what_to_do():
    rules = alert_rules()
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, f"{rule['alert']}: say what to do"
    documented = (DEPLOY / "README.md").read_text()
    for name in REQUIRED_ALERTS:
        assert name in documented, f"{name} is not explained in deploy/README.md"


def test_burn_alerts_use_both_windows_of_a_999_and_a_100ms_slo():
    burns = {(r["alert"], r["labels"]["window"]): r["expr"] for r in alert_rules() if "window" in r["labels"]}
    windows = {"fast": ("[1h]", "[5m]"), "slow": ("[6h]", "[30m]")}
    for (alert, window), expr in burns.items():
        for span in windows[window]:
            assert span in expr, f"{alert} {window}: no {span} window"
        assert re.search(r"\band\b", expr), f"{alert} {window}: both windows must hold"
        assert 'route!~"/health|/ready|/metrics' in expr, f"{alert}: probes (and /ready's 503 while draining) count"
    assert {k for k in burns} == {(a, w) for a in ("BagtrackErrorBudgetBurn", "BagtrackLatencyBudgetBurn")
                                  for w in windows}
    assert "14.4 * 0.001" in burns["BagtrackErrorBudgetBurn", "fast"]
    assert 'le="0.1"' in burns["BagtrackLatencyBudgetBurn", "fast"]


# --- the Kubernetes scrape config ---------------------------------------------------------------------

def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus' relabelling (keep, drop, replace) of one discovered target; None when it is dropped."""
    labels = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)  # Prometheus anchors every regex
        if (action == "keep" and not match) or (action == "drop" and match):
            return None
        if action == "replace":
            if match:  # Prometheus' $1 is Python's \g<1>
                replacement = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
                labels[rule["target_label"]] = match.expand(replacement)
        elif action not in ("keep", "drop"):
            raise AssertionError(f"relabel action {action} is not emulated here")
    return labels


def discovered(pod: dict, name: str, ip: str) -> list[dict[str, str]]:
    """What role: pod discovers for a pod template: a target per container port, one port-free target per
    container (init containers included) that declares none."""
    def meta(key: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", key)

    common = {"__meta_kubernetes_namespace": "bagtrack", "__meta_kubernetes_pod_name": f"{name}-7d9f-x2x",
              "__meta_kubernetes_pod_ip": ip}
    common.update({f"__meta_kubernetes_pod_annotation_{meta(k)}": v
                   for k, v in pod["metadata"].get("annotations", {}).items()})
    common.update({f"__meta_kubernetes_pod_label_{meta(k)}": v for k, v in pod["metadata"].get("labels", {}).items()})
    host = f"[{ip}]" if ":" in ip else ip
    targets = []
    spec = pod["spec"]
    containers = [("true", c) for c in spec.get("initContainers", [])] + [("false", c) for c in spec["containers"]]
    for init, container in containers:
        ports = [p["containerPort"] for p in container.get("ports", [])]
        for address in [f"{host}:{port}" for port in ports] or [host]:
            targets.append({**common, "__address__": address, "__meta_kubernetes_pod_container_init": init})
    return targets


@pytest.mark.parametrize("ip", ["10.244.1.7", "fd00:10:244::7"])
def test_k8s_scrape_config_finds_every_process_on_its_metrics_port(ip):
    config = yaml.safe_load(K8S_CONFIG.read_text())
    pods_job = next(job for job in config["scrape_configs"] if job["job_name"] == "bagtrack-pods")
    assert pods_job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["bagtrack"]}}]
    workloads = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
                 if doc and doc["kind"] in ("Deployment", "Job")]
    templates = {doc["metadata"]["name"]: doc["spec"]["template"] for doc in workloads}
    assert set(PORTS) < set(templates), "a Deployment per process, and the migration Job (never scraped)"
    found = set()
    for name, pod in templates.items():
        for target in discovered(pod, name, ip):
            labels = relabel(target, pods_job["relabel_configs"])
            if labels is not None:
                found.add((labels["job"], labels["__address__"], labels.get("__metrics_path__", "/metrics"),
                           labels["namespace"]))
    host = f"[{ip}]" if ":" in ip else ip
    expected = {(name, f"{host}:{GATEWAY_OPS_PORT if name == 'gateway' else port}", "/metrics", "bagtrack")
                for name, port in PORTS.items()}
    assert found == expected  # job = the service label the process sets; the gateway on its ops port only
    assert config["rule_files"] == ["prometheus-alerts.yml"]
    ksm = next(job for job in config["scrape_configs"] if job["job_name"] == "kube-state-metrics")
    assert ksm["honor_labels"] is True, "kube-state-metrics' namespace/pod labels must win over the target's"


def test_both_prometheus_configs_load_the_alerts_and_name_jobs_alike():
    compose = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert {job["job_name"] for job in compose["scrape_configs"]} == set(PORTS)  # job == the service label
    for path in PROMETHEUS_CONFIGS:
        assert yaml.safe_load(path.read_text())["rule_files"] == ["prometheus-alerts.yml"], path.name


# --- promtool -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool not installed (apt-get install prometheus, or `make tools`)"
    if IN_CI:
        pytest.fail(f"{message}: CI=true, the Prometheus files must be checked")
    pytest.skip(message)


def test_promtool_checks_the_alert_rules(promtool):
    result = run([promtool, "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts(promtool):
    """Database down fires only when no replica reaches it; both 5xx burn windows fire, and /ready's 503s do not."""
    result = run([promtool, "test", "rules", str(ALERT_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(promtool, tmp_path):
    """promtool has no bare-expression check: each query goes in as a recording rule, Grafana's variables set as
    Grafana would render them."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h", "service": ".+", "route": ".+"}
    rules = [{"record": f"dashboard:query_{i}",
              "expr": re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)}
             for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_k8s_config_as_mounted(promtool, tmp_path):
    """Laid out as its ConfigMap mounts it (deploy/README.md): prometheus.yml beside prometheus-alerts.yml. Debian's
    promtool is built without Kubernetes discovery; there its kubernetes_sd_configs become static_configs (the
    discovery blocks themselves are checked in test_k8s_scrape_config_finds_every_process_on_its_metrics_port)."""
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    config = tmp_path / "prometheus.yml"
    shutil.copy(K8S_CONFIG, config)
    result = run([promtool, "check", "config", str(config)])
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        data = yaml.safe_load(K8S_CONFIG.read_text())
        for job in data["scrape_configs"]:
            job.pop("kubernetes_sd_configs")
            job["static_configs"] = [{"targets": []}]
        config.write_text(yaml.safe_dump(data))
        result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


# --- the new metrics on a real /metrics ---------------------------------------------------------------

def samples(text: str, name: str) -> dict[tuple, float]:
    """name's samples in an exposition, keyed by their sorted label pairs."""
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def pool(exposition: str) -> dict[str, float]:
    """scanning's primary pool, by state."""
    found = {}
    for key, value in samples(exposition, "bagtrack_db_pool_connections").items():
        labels = dict(key)
        if labels["service"] == "scanning" and labels["pool"] == "primary":
            found[labels["state"]] = value
    return found


def scanning_app(tmp_path, **overrides):
    from services.scanning.config import Settings

    settings = Settings(**{"var_dir": tmp_path, "database_url": f"sqlite:///{tmp_path}/s.db", "access_log": False,
                           **overrides})
    return create_service_app(settings, title="test")


def test_readiness_and_pool_use_are_exported(tmp_path):
    app = scanning_app(tmp_path, db_pool_size=3, db_max_overflow=2)
    with TestClient(app) as client:
        assert client.get("/ready").json()["status"] == "ready"
        text = client.get("/metrics").text
        up = samples(text, "bagtrack_dependency_up")
        assert up[(("dependency", "database"), ("service", "scanning"))] == 1
        assert up[(("dependency", "cache"), ("service", "scanning"))] == 1

        assert pool(text) == {"in_use": 0, "idle": 0, "size": 3, "max": 5}  # readiness pings on its own pool

        async def scrape_while_holding_one() -> str:
            async with app.state.db.read():
                return generate_latest().decode()

        assert pool(client.portal.call(scrape_while_holding_one)) == {"in_use": 1, "idle": 0, "size": 3, "max": 5}
        assert pool(client.get("/metrics").text) == {"in_use": 0, "idle": 1, "size": 3, "max": 5}
    assert not pool(generate_latest().decode()), "a closed database's pool is still reported"


def test_a_dead_database_is_exported_as_down(tmp_path):
    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    with TestClient(scanning_app(tmp_path, database_url=dead)) as client:
        assert client.get("/ready").json()["status"] == "degraded"
        up = samples(client.get("/metrics").text, "bagtrack_dependency_up")
        assert up[(("dependency", "database"), ("service", "scanning"))] == 0


def test_the_gateway_exports_each_upstreams_readiness():
    from gateway.app import create_app
    from gateway.config import GatewaySettings

    nowhere = {f"{name}_url": f"http://127.0.0.1:{free_port()}" for name in PORTS if name != "gateway"}
    # TestClient's requests arrive on port 80: make that the ops port, where /ready and /metrics are served.
    settings = GatewaySettings(ops_port=80, access_log=False, ready_timeout=0.5, **nowhere)
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").json()["status"] == "degraded"
        up = samples(client.get("/metrics").text, "bagtrack_dependency_up")
    for name in ("scanning", "billing", "dashboard"):
        assert up[(("dependency", name), ("service", "gateway"))] == 0, name


@pytest.fixture(params=["sqlite", "postgres"])
def auth_settings(request, tmp_path):
    from services.auth.config import Settings

    database = None
    if request.param == "postgres":
        require_postgres()
        prefix = f"bt_obs_{os.getpid()}"
        drop_pg_databases(prefix)
        request.addfinalizer(lambda: drop_pg_databases(prefix))
        database = pg_database_url(prefix)
    # Two wrong passwords refuse a (username, address) pair, three from anywhere lock the account, four login
    # attempts from one address pass the per-address limit. Cheap argon2.
    return Settings(environment="test", var_dir=tmp_path, shared_database_url=database, access_log=False,
                    argon2_time_cost=1, argon2_memory_kib=1024, admin_username="root", admin_password="R00t!pass",
                    login_failures_per_client=2, lockout_threshold=3, login_limit_per_ip=3)


def test_refusals_and_lockouts_are_counted(auth_settings):
    from services.auth.app import create_app
    from shared import migrate

    migrate.upgrade("auth", auth_settings.database_url)

    def counts(text: str) -> dict[str, float]:
        refused = samples(text, "bagtrack_rate_limited_total")
        return {**{dict(k)["limit"]: v for k, v in refused.items() if dict(k)["service"] == "auth"},
                "lockouts": samples(text, "bagtrack_auth_lockouts_total").get((("service", "auth"),), 0.0)}

    with TestClient(create_app(auth_settings)) as client:
        def login(address: str, password: str = "wrong") -> int:
            other = TestClient(client.app, client=(address, 50000))
            other.portal = client.portal
            return other.post("/auth/login", json={"username": "root", "password": password}).status_code

        before = counts(client.get("/metrics").text)
        assert before["login:fail"] >= 0 and before["password:fail"] >= 0  # exported from start-up
        assert [login("192.0.2.1") for _ in range(4)] == [401, 401, 429, 429]  # pair refused, then the address
        assert login("192.0.2.2") == 401  # the third wrong password for the account: locked
        assert login("192.0.2.3", "R00t!pass") == 401
        after = counts(client.get("/metrics").text)
    assert after["login:fail"] - before["login:fail"] == 1
    assert after["login:ip"] - before.get("login:ip", 0) == 1
    assert after["lockouts"] - before["lockouts"] == 1
