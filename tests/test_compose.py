"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with the code:
services, commands, environment and the broker version."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
#: Services from public images: the broker, and Prometheus and Grafana for the metrics.
INFRA = {"kafka", "prometheus", "grafana"}
APP_SERVICES = {name: svc for name, svc in SERVICES.items() if name not in INFRA}


def entry_modules() -> set[str]:
    """Every runnable module: producers/consumers with a main() and a build_parser()."""
    found = set()
    for pkg in ("producers", "consumers"):
        for path in sorted((ROOT / pkg).glob("*.py")):
            text = path.read_text()
            if 'if __name__ == "__main__"' in text and "def build_parser" in text:
                found.add(f"{pkg}.{path.stem}")
    return found


def test_every_producer_and_consumer_has_a_service():
    commanded = {svc["command"][2] for svc in APP_SERVICES.values()}
    missing = entry_modules() - commanded
    assert not missing, f"entry points without a compose service: {sorted(missing)}"
    assert {"producers.synthetic", "consumers.ingest"} <= commanded


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_service_command_parses_with_the_modules_own_cli(name):
    svc = APP_SERVICES[name]
    assert svc["build"] == "." and (ROOT / "Dockerfile").is_file()
    python, dash_m, module, *args = svc["command"]
    assert (python, dash_m) == ("python", "-m")
    mod = importlib.import_module(module)
    assert callable(mod.main)
    mod.build_parser().parse_args(args)  # raises SystemExit(2) on a flag the module does not know


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_service_environment_is_a_valid_settings_object(name):
    env = {k: str(v) for k, v in APP_SERVICES[name]["environment"].items()}
    unknown = {k for k in env if k.startswith("DWCP_")} - set(Settings.env_names()) - {"DWCP_STATE_DIR"}
    assert not unknown
    settings = Settings.from_env(env)
    assert settings.bootstrap_servers == advertised_internal_listener()


def advertised_internal_listener() -> str:
    env = SERVICES["kafka"]["environment"]
    listeners = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    return listeners[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]


def test_kafka_service_is_a_single_kraft_node_matching_the_local_broker_version():
    kafka = SERVICES["kafka"]
    pom = (ROOT / "scripts/kafka/pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    assert kafka["image"] == f"apache/kafka:{version}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert int(env[key]) == 1
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    names = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert names == set(protocols)


def test_apps_wait_for_topics_and_topics_wait_for_a_healthy_broker():
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, svc in APP_SERVICES.items():
        if name != "topics":
            assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully", name


# -- metrics: Prometheus scrapes every process that serves them; the dashboard's queries exist --
DEPLOY = ROOT / "deploy"
SERVING = {name: svc for name, svc in APP_SERVICES.items() if "healthcheck" in svc}


def test_every_long_running_service_is_health_checked_on_its_metrics_port():
    long_running = {n for n, s in APP_SERVICES.items() if "profiles" not in s and n != "topics"}
    # the monitor only prints what it reads; everything else serves /metrics and /healthz
    assert set(SERVING) == long_running - {"monitor"}
    for name, svc in SERVING.items():
        port = svc["environment"]["DWCP_METRICS_PORT"]
        assert Settings.from_env({"DWCP_METRICS_PORT": port}).metrics_port == 9108
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc["healthcheck"]["test"]), name


def test_prometheus_scrapes_exactly_the_services_that_serve_metrics():
    cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in cfg["scrape_configs"]
    }
    assert targets == {
        name: [f"{name}:{svc['environment']['DWCP_METRICS_PORT']}"] for name, svc in SERVING.items()
    }
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def exported_names() -> set[str]:
    """Every sample name a process of ours can export (families, _total, _bucket, ...)."""
    from stream.metrics import Metrics

    return set(Metrics().registry._names_to_collectors) | {"up"}


def dashboard_exprs() -> list[str]:
    doc = json.loads((DEPLOY / "grafana/dashboards/dwcp.json").read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and by/without lists removed).

    >>> sorted(metric_names('sum by (job) (rate(dwcp_x_total{topic=~"a"}[1m])) / up'))
    ['dwcp_x_total', 'up']
    """
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    functions = {"sum", "max", "min", "avg", "rate", "increase", "histogram_quantile", "count"}
    return {w for w in words if w not in functions}


def test_the_dashboards_queries_name_metrics_that_exist():
    known = exported_names()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        missing = metric_names(expr) - known
        assert not missing, f"{expr!r} names metrics no process exports: {sorted(missing)}"
    used = set().union(*(metric_names(e) for e in exprs))
    for needed in ("dwcp_consumer_lag_records", "dwcp_event_time_lag_seconds", "dwcp_alerts_total",
                   "dwcp_forecast_mean_absolute_error", "dwcp_records_consumed_total"):  # fmt: skip
        assert needed in used, f"the dashboard shows no {needed}"


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard():
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = ds["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    doc = json.loads((DEPLOY / "grafana/dashboards/dwcp.json").read_text())
    assert {p["datasource"]["uid"] for p in doc["panels"]} == {source["uid"]}
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dwcp.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in SERVICES["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in SERVICES["grafana"]["volumes"]
