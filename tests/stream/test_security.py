"""The local broker's secured listeners, through our clients and a consumer CLI.

SASL_PLAINTEXT (PLAIN) as the super user round-trips records with both backends; a wrong
password is a ``KafkaAuthenticationError`` that says so (not "unreachable") within seconds;
the user without ACLs gets a ``KafkaAuthorizationError`` naming the topic or group. The SSL
listener round-trips with the broker's dev CA and refuses another CA.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import orjson
import pytest

from stream.errors import KafkaAuthenticationError, KafkaAuthorizationError
from stream.kafka import make_consumer, make_producer
from stream.settings import Settings
from tests.conftest import (
    REPO_ROOT,
    SASL_PASSWORD,
    SASL_READER,
    SASL_READER_PASSWORD,
    SASL_USER,
)

pytestmark = pytest.mark.integration

#: A refused login or ACL must surface well inside this (kafka-python's bootstrap alone would
#: take 30 s to say only "Unable to bootstrap").
BOUND_S = 10.0


def sasl(bootstrap: str, backend: str, user: str, password: str) -> Settings:
    return Settings(
        bootstrap_servers=bootstrap,
        backend=backend,
        client_id="pytest-security",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=user,
        sasl_password=password,
    )


def round_trip(settings: Settings, topic: str, group_id: str, n: int = 20) -> list[bytes]:
    """Produce ``n`` records over ``settings``, read them back and commit; the values read."""
    sent = [f"record-{i}".encode() for i in range(n)]
    with make_producer(settings) as producer:
        for i, value in enumerate(sent):
            producer.produce(topic, value, key=f"k{i % 3}".encode())
        producer.flush(30)
    consumer = make_consumer(settings, [topic], group_id=group_id, from_beginning=True)
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            batch = consumer.poll_batch(100, 200)
            got += [m.value for m in batch]
            if batch:
                consumer.commit({m.topic_partition: m.next_offset for m in batch})
        assert consumer.committed([(topic, 0)]) == {(topic, 0): n}
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)
    return got


def raises_within(exc_type: type[Exception], action: Callable[[], object]) -> tuple[str, float]:
    """Run ``action``; it must raise ``exc_type`` within ``BOUND_S``. (message, seconds)."""
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        action()
    took = time.monotonic() - t0
    assert took < BOUND_S, f"{exc_type.__name__} took {took:.1f}s"
    return str(info.value), took


def produce_one(settings: Settings, topic: str) -> None:
    with make_producer(settings) as producer:
        producer.produce(topic, b"x")
        producer.flush(30)


def consume_some(settings: Settings, topic: str, group_id: str) -> None:
    consumer = make_consumer(settings, [topic], group_id=group_id, from_beginning=True)
    try:
        deadline = time.monotonic() + 2 * BOUND_S  # raising ends it much earlier
        while time.monotonic() < deadline:
            consumer.poll_batch(100, 200)
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_sasl_plain_round_trip(kafka_sasl_bootstrap, backend, topic_factory, group_id):
    topic = topic_factory(partitions=1)
    round_trip(sasl(kafka_sasl_bootstrap, backend, SASL_USER, SASL_PASSWORD), topic, group_id)


@pytest.mark.timeout(120)
def test_wrong_password_is_named_an_authentication_failure_at_once(
    kafka_sasl_bootstrap, backend, topic_factory, group_id
):
    topic = topic_factory(partitions=1)
    bad = sasl(kafka_sasl_bootstrap, backend, SASL_USER, "not-the-password")
    for action in (lambda: produce_one(bad, topic), lambda: consume_some(bad, topic, group_id)):
        message, _took = raises_within(KafkaAuthenticationError, action)
        assert message.startswith(f"authentication failed for user '{SASL_USER}' (SASL PLAIN)")
        assert kafka_sasl_bootstrap in message
        assert "DWCP_SASL_PASSWORD" in message
        assert "unreachable" not in message
        assert "not-the-password" not in message


@pytest.mark.timeout(120)
def test_a_user_without_acls_is_named_an_authorization_failure(
    kafka_sasl_bootstrap, backend, topic_factory, group_id
):
    topic = topic_factory(partitions=1)
    reader = sasl(kafka_sasl_bootstrap, backend, SASL_READER, SASL_READER_PASSWORD)

    message, _ = raises_within(KafkaAuthorizationError, lambda: produce_one(reader, topic))
    assert message.startswith(f"authorization failed for user '{SASL_READER}' (SASL PLAIN)")
    assert f"topic '{topic}'" in message and "producing" in message

    message, _ = raises_within(
        KafkaAuthorizationError, lambda: consume_some(reader, topic, group_id)
    )
    assert message.startswith(f"authorization failed for user '{SASL_READER}' (SASL PLAIN)")
    assert f"group '{group_id}'" in message or f"topic '{topic}'" in message
    assert SASL_READER_PASSWORD not in message


def _ssl(bootstrap: str, backend: str, ca_file: str) -> Settings:
    return Settings(
        bootstrap_servers=bootstrap, backend=backend, security_protocol="SSL", ssl_cafile=ca_file
    )


@pytest.mark.timeout(120)
def test_ssl_round_trip_with_the_dev_ca(kafka_ssl, backend, topic_factory, group_id):
    bootstrap, ca_file = kafka_ssl
    round_trip(_ssl(bootstrap, backend, ca_file), topic_factory(partitions=1), group_id)


@pytest.mark.timeout(120)
def test_ssl_with_another_ca_is_an_authentication_failure(kafka_ssl, backend, topic_factory):
    bootstrap, _ca_file = kafka_ssl
    other_ca = ssl.get_default_verify_paths().cafile
    assert other_ca and os.path.isfile(other_ca), "no system CA bundle to use as the wrong CA"
    wrong = _ssl(bootstrap, backend, other_ca)
    message, _ = raises_within(
        KafkaAuthenticationError, lambda: produce_one(wrong, topic_factory(partitions=1))
    )
    assert "authentication failed" in message and "DWCP_SSL_CAFILE" in message
    assert "unreachable" not in message


# -- a consumer CLI over SASL ------------------------------------------------------------


def _cli(argv: list[str], password: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWCP_")}
    env["DWCP_SASL_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(240)
def test_ingest_cli_over_sasl_and_its_wrong_password_exit(
    kafka_sasl_bootstrap, make_telemetry, tmp_path
):
    prefix = f"sec-{uuid.uuid4().hex[:12]}."
    conn = [
        "--bootstrap-servers", kafka_sasl_bootstrap,
        "--security-protocol", "SASL_PLAINTEXT",
        "--sasl-mechanism", "PLAIN",
        "--sasl-username", SASL_USER,
        "--topic-prefix", prefix,
    ]  # fmt: skip
    created = _cli(["-m", "stream.topics", "create", "--partitions", "2", *conn], SASL_PASSWORD)
    assert created.returncode == 0, created.stderr
    settings = dataclasses.replace(
        sasl(kafka_sasl_bootstrap, "kafka-python", SASL_USER, SASL_PASSWORD), topic_prefix=prefix
    )
    n = 30
    try:
        with make_producer(settings) as producer:
            for seq in range(n):
                node = f"n-{seq % 3:03d}"
                producer.produce(
                    settings.topic("telemetry"), make_telemetry(node, seq), node.encode()
                )
            producer.flush(30)

        summary = tmp_path / "summary.json"
        argv = ["-m", "consumers.ingest", *conn, "--from-beginning", "--max-records", str(n)]
        ok = _cli([*argv, "--idle-timeout", "20", "--summary", str(summary)], SASL_PASSWORD)
        assert ok.returncode == 0, ok.stderr
        assert orjson.loads(summary.read_bytes())["ingest"]["nodes"] == 3

        t0 = time.monotonic()
        bad = _cli([*argv, "--idle-timeout", "5"], "not-the-password")
        took = time.monotonic() - t0
        assert bad.returncode == 1, bad.stderr
        last = bad.stderr.strip().splitlines()[-1]
        assert last.startswith("error: authentication failed for user 'dwcp' (SASL PLAIN)"), last
        assert "unreachable" not in bad.stderr and "not-the-password" not in bad.stderr
        assert took < BOUND_S + 10, f"the CLI took {took:.1f}s to give up"  # + interpreter start
    finally:
        _cli(["-m", "stream.topics", "delete", "--yes", *conn], SASL_PASSWORD)
