"""Fixtures for the real local Kafka broker (scripts/kafka-local.sh).

Nothing here starts Kafka unless a test asks for ``kafka_bootstrap`` (directly or through
``topic_factory``). Tests that use the broker must be marked ``@pytest.mark.integration``
so ``pytest -m "not integration"`` runs without one.

Other areas keep their own fixtures in their own conftest files; keep this one about the
broker only.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local.sh"
KAFKA_HOST = "127.0.0.1"
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
KAFKA_SASL_PORT = int(os.environ.get("KAFKA_SASL_PORT", "9094"))
KAFKA_SSL_PORT = int(os.environ.get("KAFKA_SSL_PORT", "9095"))
KAFKA_CACHE_DIR = Path(os.environ.get("KAFKA_CACHE_DIR", REPO_ROOT / ".cache" / "kafka"))
#: Dev credentials of the local broker's SASL_PLAINTEXT listener (scripts/kafka-local.sh).
SASL_USER, SASL_PASSWORD = "dwcp", "dwcp-secret"
SASL_READER, SASL_READER_PASSWORD = "reader", "reader-secret"


def kafka_answers(host: str = KAFKA_HOST, port: int = KAFKA_PORT, timeout: float = 3.0) -> bool:
    """True if a Kafka broker answers an ApiVersions (v0) request on host:port.

    A raw request rather than a client: it answers in milliseconds whether or not anything
    listens, and tells a Kafka broker apart from any other process holding the port.
    """
    client_id = b"pytest"
    # Request header v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id.
    body = struct.pack(">hhih", 18, 0, 4242, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            buf = b""
            while len(buf) < 10:  # size(4) + correlation_id(4) + error_code(2)
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                buf += chunk
    except OSError:
        return False
    _size, correlation_id, error_code = struct.unpack(">iih", buf[:10])
    return correlation_id == 4242 and error_code == 0


def _kafka_local(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_PORT": str(KAFKA_PORT)}
    return subprocess.run(
        ["bash", str(KAFKA_LOCAL), command],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address ("127.0.0.1:PORT") of a running single-node Kafka broker.

    A broker that already answers on the port (started by scripts/test.sh, CI or by hand)
    is reused and left running. Otherwise ``scripts/kafka-local.sh start`` starts one (the
    first run also downloads the jars) and it is stopped when the session ends.
    """
    bootstrap = f"{KAFKA_HOST}:{KAFKA_PORT}"
    if kafka_answers():
        yield bootstrap
        return

    started = _kafka_local("start", timeout=900)
    if started.returncode != 0:
        pytest.fail(
            f"scripts/kafka-local.sh start failed (exit {started.returncode}):\n"
            f"{started.stdout}{started.stderr}",
            pytrace=False,
        )
    try:
        yield bootstrap
    finally:
        stopped = _kafka_local("stop", timeout=120)
        if stopped.returncode != 0:
            print(f"warning: scripts/kafka-local.sh stop failed:\n{stopped.stderr}")


def _listener_fails(name: str, port: int, variable: str) -> None:
    pytest.fail(
        f"the local broker answers on {KAFKA_HOST}:{KAFKA_PORT} but not on its {name} listener "
        f"{KAFKA_HOST}:{port} ({variable}). scripts/kafka-local.sh always starts one; a broker "
        "started by an older script (or with other ports) needs a restart: "
        "bash scripts/kafka-local.sh stop && bash scripts/kafka-local.sh start",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(kafka_bootstrap: str) -> str:
    """``"127.0.0.1:PORT"`` of the local broker's SASL_PLAINTEXT (PLAIN) listener.

    The port comes from ``KAFKA_SASL_PORT`` (default 9094); users ``SASL_USER`` (a super user)
    and ``SASL_READER`` (no ACLs). Fails, never skips, if the listener does not answer.
    """
    if not kafka_answers(port=KAFKA_SASL_PORT):
        _listener_fails("SASL_PLAINTEXT", KAFKA_SASL_PORT, "KAFKA_SASL_PORT")
    return f"{KAFKA_HOST}:{KAFKA_SASL_PORT}"


@pytest.fixture(scope="session")
def kafka_ssl(kafka_bootstrap: str) -> tuple[str, str]:
    """``(bootstrap, ca_file)`` of the local broker's SSL listener (``KAFKA_SSL_PORT``, 9095)."""
    ca_file = KAFKA_CACHE_DIR / "tls" / "ca.pem"
    try:
        socket.create_connection((KAFKA_HOST, KAFKA_SSL_PORT), timeout=3).close()
    except OSError:
        _listener_fails("SSL", KAFKA_SSL_PORT, "KAFKA_SSL_PORT")
    if not ca_file.is_file():
        pytest.fail(f"no CA file {ca_file} (scripts/kafka-local.sh start makes it)", pytrace=False)
    return f"{KAFKA_HOST}:{KAFKA_SSL_PORT}", str(ca_file)


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics; they are deleted (best effort) after the test.

        topic = topic_factory(partitions=3)
        topic = topic_factory(1, prefix="telemetry", configs={"retention.ms": "60000"})

    Returns once every partition has a leader, so producing right away is safe.
    """
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="pytest-topic-factory")
    created: list[str] = []

    def create(
        partitions: int = 1, *, prefix: str = "test", configs: dict[str, str] | None = None
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex}"
        # The dict form of create_topics; a list of NewTopic is deprecated in kafka-python 3.
        spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
        admin.create_topics({name: spec}, wait_for_metadata=True)
        created.append(name)
        return name

    try:
        yield create
    finally:
        try:
            if created:
                admin.delete_topics(created, raise_errors=False)
        except Exception as exc:  # best effort: a leftover uuid topic harms nobody
            print(f"warning: could not delete test topics {created}: {exc!r}")
        finally:
            admin.close()


@pytest.fixture
def group_id() -> str:
    """A fresh consumer-group id, so tests never share committed offsets."""
    return f"test-group-{uuid.uuid4().hex}"
