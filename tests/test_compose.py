"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with the code:
services, commands, environment and the broker version."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {name: svc for name, svc in SERVICES.items() if name != "kafka"}


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
