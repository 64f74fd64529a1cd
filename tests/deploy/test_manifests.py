"""Offline validation of deploy/: compose spec, Kubernetes schemas, kustomize, nginx -t, Prometheus, and
the PostgreSQL connection budget (docs/performance.md) recomputed from the manifests. No network needed."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from gateway.config import GatewaySettings
from gateway.server import TIMEOUT_KEEP_ALIVE, GatewayProtocol, gateway_config
from shared.proxies import parse_trusted
from shared.serve import config as serve_config
from shared.topology import GATEWAY_OPS_PORT, SERVICES
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
INTERNAL_CONF = DEPLOY / "nginx" / "internal.conf"
LOCAL_TEMPLATE = DEPLOY / "nginx" / "local.conf.template"
K8S_VERSION = "1.32.0"  # kubernetes-validate ships its schemas
BUDGET = 80  # of PostgreSQL's default max_connections = 100
PORTS = {"auth": 8001, "scanning": 8002, "billing": 8003, "dashboard": 8004, "gateway": 8080}
SERVE = ["python", "-m", "shared.serve"]  # a service's entry point (uvicorn that drains on SIGTERM)
GATEWAY_COMMAND = ["python", "-m", "gateway", "--host", "0.0.0.0", "--port", "8080",
                   "--ops-host", "0.0.0.0", "--ops-port", str(GATEWAY_OPS_PORT)]
DB_SERVICES = SERVICES
IN_CI = os.environ.get("CI", "").lower() == "true"


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> list[dict]:
    return [doc for path in k8s_files() for doc in load_all(path)]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def container_env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    """A container's literal environment: its ConfigMaps (envFrom), then its own `env` values, which win."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def per_replica(env: dict, prefix: str) -> int:
    """What one replica can hold: its pool, its overflow, and the readiness ping's own connection (shared.db)."""
    return int(env[f"{prefix}_DB_POOL_SIZE"]) + int(env[f"{prefix}_DB_MAX_OVERFLOW"]) + 1


def documented_total(path: Path) -> int:
    match = re.search(r"^#\s+total\s+(\d+)", path.read_text(), re.M)
    assert match, f"{path.name}: the connection-budget comment lost its 'total N' line"
    return int(match.group(1))


# --- docker compose ---------------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_matches_compose_spec():
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_topology():
    services = compose()["services"]
    for name, port in PORTS.items():
        svc = services[name]
        probed = GATEWAY_OPS_PORT if name == "gateway" else port  # the gateway's probes are on its ops port
        assert f"127.0.0.1:{probed}/health" in " ".join(svc["healthcheck"]["test"]), name
        assert svc["deploy"]["replicas"] >= (2 if name in ("gateway", "scanning") else 1), name
        assert "ports" not in svc and "expose" not in svc, f"{name} must only be reachable through nginx"
        if name == "gateway":
            assert svc["command"] == GATEWAY_COMMAND
        else:
            assert svc["command"] == [*SERVE, f"services.{name}.app:create_app", "--host", "0.0.0.0", "--port",
                                      str(port)], name
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    assert not any(str(GATEWAY_OPS_PORT) in str(p) for p in published), "the gateway's ops port must stay unpublished"
    for name in DB_SERVICES:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["command"] == ["python", "-m", "shared.migrate", *DB_SERVICES]
    assert services["postgres"]["healthcheck"]["test"]
    assert services["nginx"]["ports"] == ["${BAGTRACK_HTTP_PORT:-8080}:8080"]
    assert "/nginx-health" in " ".join(services["nginx"]["healthcheck"]["test"])


def test_compose_has_no_literal_secrets():
    """Passwords come from ${VAR:?message} interpolation (deploy/.env), the JWT key from a compose secret."""
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key} must be ${{VAR:?message}}"
            if key == "DATABASE_URL":
                assert re.search(r"://postgres:\$\{POSTGRES_PASSWORD:\?[^}]+\}@", value), f"{name}.{key}"
    auth = compose()["services"]["auth"]
    assert auth["secrets"] == ["jwt_private_key"]
    assert auth["environment"]["AUTH_JWT_PRIVATE_KEY_FILE"] == "/run/secrets/jwt_private_key"
    assert not re.search(r"PASSWORD\w*:\s*[\"']?(?!\$\{)\w", COMPOSE.read_text()), "a literal password in compose"


def test_compose_connection_budget():
    data = compose()
    command = data["services"]["postgres"]["command"]
    max_connections = int(next(a.split("=", 1)[1] for a in command if a.startswith("max_connections=")))
    total = 0
    for name in DB_SERVICES:
        svc = data["services"][name]
        env = svc["environment"]
        prefix = name.upper()
        assert f"{prefix}_DB_POOL_SIZE" in env and f"{prefix}_DB_MAX_OVERFLOW" in env, f"{name}: pool not sized"
        total += svc["deploy"]["replicas"] * per_replica(env, prefix)
    assert total <= BUDGET <= 0.8 * max_connections, f"compose opens up to {total} connections"
    assert documented_total(COMPOSE) == total, "update the budget comment in docker-compose.yml"


# --- Kubernetes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_k8s_manifest_validates(path: Path):
    docs = load_all(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_k8s_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in k8s_files())
    for generator in kustomization.get("configMapGenerator", []):
        for file in generator["files"]:
            assert (K8S / file).is_file(), file


def test_kustomize_build_validates():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: `kubectl kustomize deploy/k8s` not checked (apt-get install kubectl)")
    result = run([kubectl, "kustomize", str(K8S)])
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"kustomize output {doc['kind']}/{doc['metadata']['name']}: {exc}")
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "bagtrack", doc["metadata"]["name"]
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated, volume


def test_k8s_workloads():
    objects = k8s_objects()
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == set(PORTS)
    assert set(by_kind(objects, "Service")) == set(PORTS)
    assert set(by_kind(objects, "PodDisruptionBudget")) == set(PORTS)
    assert {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler").values()} >= {"gateway", "scanning"}
    assert not by_kind(objects, "Secret"), "Secrets are created by hand (deploy/README.md), never committed"
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        assert container["ports"][0]["containerPort"] == PORTS[name], name
        assert "--port" in container["command"] and str(PORTS[name]) in container["command"], name
        limit = container["resources"]["limits"]["memory"]
        assert re.fullmatch(r"\d+Mi", limit) and 150 <= int(limit[:-2]) <= 256, f"{name}: memory limit {limit}"
        if name in DB_SERVICES:
            init = pod["initContainers"][0]
            assert init["command"][-2:] == ["/opt/bagtrack/wait_for_migrations.py", name], name
    job = by_kind(objects, "Job")["bagtrack-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "shared.migrate", *DB_SERVICES]
    gateway = deployments["gateway"]["spec"]["template"]
    container = gateway["spec"]["containers"][0]
    assert container["command"] == GATEWAY_COMMAND
    assert {"name": "ops", "containerPort": GATEWAY_OPS_PORT} in container["ports"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "ops", probe
    assert gateway["metadata"]["annotations"]["prometheus.io/port"] == str(GATEWAY_OPS_PORT)
    exposed = by_kind(objects, "Service")["gateway"]["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in exposed] == [(8080, "http")], "the Service must not expose ops"
    ingress = by_kind(objects, "Ingress")["gateway"]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"
    secrets = set(re.findall(r"(?:secretName|name):\s*(bagtrack-[\w-]+)", "".join(p.read_text() for p in k8s_files())))
    assert {"bagtrack-secrets", "bagtrack-auth-jwt"} <= secrets


def _surge(deployment: dict, replicas: int) -> int:
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    return math.ceil(replicas * int(surge[:-1]) / 100) if isinstance(surge, str) else int(surge)


def test_k8s_connection_budget():
    """Worst case: every service at its maximum replicas plus the pods a rolling update surges."""
    objects = k8s_objects()
    configmaps = by_kind(objects, "ConfigMap")
    hpa_max = {h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"] for h in by_kind(objects, "HorizontalPodAutoscaler").values()}
    total = 0
    for name in DB_SERVICES:
        deployment = by_kind(objects, "Deployment")[name]
        env = container_env(deployment["spec"]["template"]["spec"]["containers"][0], configmaps)
        prefix = name.upper()
        assert f"{prefix}_DB_POOL_SIZE" in env and f"{prefix}_DB_MAX_OVERFLOW" in env, f"{name}: pool not sized"
        if name in hpa_max:
            assert "replicas" not in deployment["spec"], f"{name}: replicas belong to its HPA"
        replicas = hpa_max.get(name, deployment["spec"].get("replicas", 1))
        total += (replicas + _surge(deployment, replicas)) * per_replica(env, prefix)
    assert total <= BUDGET, f"Kubernetes can open up to {total} PostgreSQL connections (> {BUDGET})"
    assert documented_total(K8S / "configmap.yaml") == total, "update the budget comment in k8s/configmap.yaml"


def test_wait_for_migrations_script(tmp_path: Path):
    """The init containers' check: waits while the database is behind, exits 0 once it is at head."""
    env = {k: v for k, v in os.environ.items() if "DATABASE_" not in k}
    env.update(BAGTRACK_ENV="development", BAGTRACK_VAR_DIR=str(tmp_path), BAGTRACK_APP_DIR=str(ROOT),
               WAIT_INTERVAL_SECONDS="0.2")
    script = [sys.executable, str(K8S / "wait_for_migrations.py"), "scanning"]
    with pytest.raises(subprocess.TimeoutExpired) as waiting:
        subprocess.run(script, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=3)
    assert b"waiting for" in (waiting.value.stdout or b""), waiting.value.stderr
    migrated = run([sys.executable, "-m", "shared.migrate", "scanning"], env=env, cwd=ROOT)
    assert migrated.returncode == 0, migrated.stderr
    done = subprocess.run(script, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "at head" in done.stdout, done.stdout + done.stderr


# --- nginx ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [NGINX_CONF, INTERNAL_CONF], ids=lambda p: p.name)
def test_nginx_config(tmp_path: Path, path: Path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if not nginx:
        message = f"nginx not installed: deploy/nginx/{path.name} not checked with `nginx -t` (apt-get install nginx)"
        if IN_CI:
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    text = path.read_text()
    # Compose service names do not resolve here; nginx -t resolves upstream hosts, so point them at 127.0.0.1.
    # Debian's nginx (1.22) predates `resolve` on upstream servers (1.27.3, the image's): dropped for the check, with
    # the resolver it needs.
    local, count = re.subn(r"(\bserver\s+)[A-Za-z][\w.-]*(:\d+)( resolve)?", r"\g<1>127.0.0.1\2", text)
    assert count >= 1, "no upstream server found to rewrite"
    local = re.sub(r"^\s*resolver .*;$", "", local, flags=re.M)
    conf = tmp_path / "nginx.conf"
    conf.write_text(local)
    result = run([nginx, "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)])
    assert result.returncode == 0, result.stderr


def test_nginx_edge_settings():
    text = NGINX_CONF.read_text()
    for needle in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";', "client_max_body_size 1m;",
                   "proxy_set_header X-Request-ID $bagtrack_request_id;", "default                     $request_id;",
                   "proxy_set_header X-Forwarded-For", "location = /nginx-health", "proxy_pass http://gateway;"):
        assert needle in text, needle
    upstream = re.search(r"upstream gateway \{(.*?)\}", text, re.S).group(1)
    assert re.search(r"^\s*keepalive \d+;", upstream, re.M)
    # nginx must close idle upstream connections before the gateway does (else: spurious 502s).
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    assert nginx_idle < TIMEOUT_KEEP_ALIVE
    # Re-resolved, so a changed gateway count is seen without restarting nginx.
    assert re.search(r"server gateway:8080 resolve", upstream) and "resolver 127.0.0.11 valid=5s" in text


def locations(text: str) -> set[str]:
    return set(re.findall(r"^\s*location\s+([^{]+?)\s*\{", text, re.M))


def test_the_edges_expose_the_same_public_routes_and_nothing_else():
    """compose's edge, the local one (`make up`) and the Kubernetes Ingress: the API, /health, the docs, the stream,
    the web app (/ and /app/); everything else (/ready, /metrics, /internal/...) is the edge's own 404."""
    template = LOCAL_TEMPLATE.read_text()
    edge = template[template.index("# @EDGE begin"):template.index("# @EDGE end")]
    public = {"/api/v1/", "= /health", "= /docs", "= /openapi.json", "= /api/v1/dashboard/stream", "= /", "/app/"}
    assert locations(NGINX_CONF.read_text()) == locations(edge) == public | {"= /nginx-health", "/"}
    for text in (NGINX_CONF.read_text(), edge):
        catch_all = re.search(r"location / \{(.*?)\}", text, re.S).group(1)
        assert "return 404" in catch_all and "proxy_pass" not in catch_all
    ingress = by_kind(k8s_objects(), "Ingress")
    paths = {(p["path"], p["pathType"]) for i in ingress.values() for r in i["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {("/api/v1", "Prefix"), ("/health", "Exact"), ("/docs", "Exact"), ("/openapi.json", "Exact"),
                     ("/", "Exact"), ("/app", "Prefix"), ("/api/v1/dashboard/stream", "Exact")}
    backends = {p["backend"]["service"]["port"]["name"] for i in ingress.values() for r in i["spec"]["rules"]
                for p in r["http"]["paths"]}
    assert backends == {"http"}, "the ops port is never behind the Ingress"


def test_compose_calls_every_service_through_the_internal_balancer():
    """As under `make up`: callers name the internal nginx, which balances over the replicas and re-resolves them."""
    data = compose()
    services = data["services"]
    text = INTERNAL_CONF.read_text()
    for name in SERVICES:
        port = PORTS[name]
        for caller in (*SERVICES, "gateway"):
            assert services[caller]["environment"][f"{name.upper()}_URL"] == f"http://internal-lb:{port}", caller
        upstream = re.search(r"upstream %s \{(.*?)\}" % name, text, re.S).group(1)
        assert re.search(rf"server {name}:{port} resolve max_fails=\d+ fail_timeout=\d+s;", upstream), name
        assert re.search(r"^\s*keepalive \d+;", upstream, re.M) and "least_conn;" in upstream
        assert re.search(rf"listen {port};\s*location / {{ proxy_pass http://{name}; }}", text), name
    assert "resolver 127.0.0.11 valid=5s" in text
    assert set(services["internal-lb"]["networks"]) == {"internal"} and "ports" not in services["internal-lb"]
    for name in (*SERVICES, "gateway"):
        assert "internal-lb" in services[name]["depends_on"], name


# --- client addresses (shared/proxies.py) ----------------------------------------------------------

def compose_default(value: str) -> str:
    """A compose value with every ${VAR:-default} replaced by its default (what runs when deploy/.env is silent)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def server_commands() -> dict[str, list[str]]:
    """Every server command line in deploy/ (uvicorn for a service, `python -m gateway` for the gateway): compose
    services, Kubernetes containers, the image's CMD."""
    commands = {f"compose {name}": svc["command"] for name, svc in compose()["services"].items()
                if svc.get("command", [])[:3] in (SERVE, GATEWAY_COMMAND[:3])}
    for name, deployment in by_kind(k8s_objects(), "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            commands[f"k8s {name}/{container['name']}"] = container["command"]
    cmd = re.search(r"^CMD (\[.*?\])", (DEPLOY / "Dockerfile").read_text(), re.M | re.S).group(1)
    commands["Dockerfile CMD"] = yaml.safe_load(cmd.replace("\\\n", ""))
    return commands


def test_uvicorn_never_reads_proxy_headers_itself():
    """shared/proxies.py is the one rule: uvicorn's own X-Forwarded-For handling would be a second one. The gateway's
    entry point configures uvicorn in code (gateway/server.py), with proxy headers off."""
    commands = server_commands()
    assert len(commands) == 2 * len(PORTS) + 1, sorted(commands)
    gateways = {where for where, command in commands.items() if command[:3] == GATEWAY_COMMAND[:3]}
    assert gateways == {"compose gateway", "k8s gateway/gateway", "Dockerfile CMD"}
    for where, command in commands.items():
        if where in gateways:
            assert command == GATEWAY_COMMAND, where
        else:
            assert command[:3] == SERVE, where
        assert "--proxy-headers" not in command and not any("forwarded-allow-ips" in a for a in command), where
    config = gateway_config(GatewaySettings(), "0.0.0.0", 8080)
    assert config.proxy_headers is False and config.http is GatewayProtocol
    service = serve_config("services.scanning.app:create_app", "0.0.0.0", 8002)
    assert service.proxy_headers is False and service.timeout_keep_alive == TIMEOUT_KEEP_ALIVE
    text = "".join(p.read_text() for p in (COMPOSE, DEPLOY / "Dockerfile", *K8S.glob("*.yaml")))
    assert "FORWARDED_ALLOW_IPS" not in text, "uvicorn's trust setting is unused: set <PREFIX>_TRUSTED_PROXIES"


def test_every_compose_process_trusts_only_the_network_its_proxy_is_on():
    data = compose()
    services = data["services"]
    subnets = {name: compose_default(net["ipam"]["config"][0]["subnet"]) for name, net in data["networks"].items()}
    assert set(services["nginx"]["networks"]) == {"edge"}
    assert set(services["gateway"]["networks"]) == {"edge", "internal"}
    for name, port in PORTS.items():
        env = services[name]["environment"]
        raw = str(env.get(f"{name.upper()}_TRUSTED_PROXIES", ""))
        assert raw and "*" not in raw, f"{name}: no {name.upper()}_TRUSTED_PROXIES of its own"
        trusted = parse_trusted(compose_default(raw))
        expected = "edge" if name == "gateway" else "internal"
        assert [str(n) for n in trusted] == [subnets[expected]], f"{name} must trust the {expected} network only"
        if name != "gateway":
            assert services[name]["networks"] == ["internal"], f"{name} must not be reachable from the edge"


# Who calls whom (besides Prometheus): the only pods each service's NetworkPolicy lets in.
CALLERS = {"auth": {"gateway", "scanning", "billing", "dashboard"}, "scanning": {"gateway", "billing", "dashboard"},
           "billing": {"gateway", "dashboard"}, "dashboard": {"gateway"}}


def test_every_k8s_process_has_its_trusted_list_and_only_proxies_reach_it():
    objects = k8s_objects()
    configmaps = by_kind(objects, "ConfigMap")
    for name, deployment in by_kind(objects, "Deployment").items():
        env = container_env(deployment["spec"]["template"]["spec"]["containers"][0], configmaps)
        raw = env.get(f"{name.upper()}_TRUSTED_PROXIES", "")
        assert raw and "*" not in raw and parse_trusted(raw), f"{name}: no {name.upper()}_TRUSTED_PROXIES of its own"
    policies = by_kind(objects, "NetworkPolicy")
    gateway = policies["gateway"]["spec"]
    assert gateway["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gateway"}}
    sources = [peer for rule in gateway["ingress"] for peer in rule["from"]]
    namespaces = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in sources}
    assert namespaces == {"ingress-nginx", "monitoring"} and all(set(peer) == {"namespaceSelector"} for peer in sources)
    ports = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: [p["port"] for p in rule["ports"]]
             for rule in gateway["ingress"] for peer in rule["from"]}
    assert ports == {"ingress-nginx": ["http"], "monitoring": ["ops"]}  # the edge never reaches the ops port
    for name, callers in CALLERS.items():
        spec = policies[name]["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": name}}
        sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
        assert not any("ipBlock" in peer for peer in sources), f"{name} reachable from an address range"
        pods = {value for peer in sources if "podSelector" in peer
                for expression in peer["podSelector"]["matchExpressions"] for value in expression["values"]}
        assert pods == callers, f"{name} is reached by {sorted(pods)}, its callers are {sorted(callers)}"
    assert set(policies) == {"gateway", *CALLERS}
    for policy in policies.values():
        assert policy["spec"]["policyTypes"] == ["Ingress"] and all(rule["from"] for rule in policy["spec"]["ingress"])


# --- Prometheus and the image -----------------------------------------------------------------------

def test_prometheus_scrapes_every_process():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {(sd["names"][0], sd["port"]) for job in config["scrape_configs"] for sd in job["dns_sd_configs"]}
    assert targets == set({**PORTS, "gateway": GATEWAY_OPS_PORT}.items())  # the gateway's /metrics: its ops port
    rules = (DEPLOY / "prometheus-alerts.yml").read_text()
    for metric in ("bagtrack_http_requests_total", "bagtrack_circuit_breaker_open", "bagtrack_http_request_duration_seconds_bucket"):
        assert metric in rules, metric
    for rule_file in config["rule_files"]:
        assert (DEPLOY / rule_file).is_file(), rule_file
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed: Prometheus files only parsed, not checked (apt-get install prometheus)")
    result = run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "the image must run as non-root"
    assert "pip install --no-compile -r requirements.txt" in text
    for folder in ("shared", "services", "gateway"):
        assert f"COPY {folder}/ {folder}/" in text, folder
