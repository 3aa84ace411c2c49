"""ensure_topics and the ``python -m stream.topics`` command, over both backends."""

from __future__ import annotations

import uuid

import pytest

from stream import topics
from stream.errors import KafkaUnavailableError
from stream.kafka import make_admin
from stream.settings import TOPICS, Settings


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_ensure_topics_is_idempotent(kafka_settings):
    names = [kafka_settings.topic(t) for t in TOPICS]
    try:
        assert topics.ensure_topics(kafka_settings, partitions=2) == dict.fromkeys(names, True)
        assert topics.ensure_topics(kafka_settings, partitions=4) == dict.fromkeys(names, False)
        assert topics.describe_topics(kafka_settings) == dict.fromkeys(
            names, 2
        )  # left as they were
    finally:
        with make_admin(kafka_settings) as admin:
            admin.delete_topics(names)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_cli_create_then_list(kafka_settings, capsys):
    flags = [
        "--bootstrap-servers",
        kafka_settings.bootstrap_servers,
        "--backend",
        kafka_settings.backend,
        "--topic-prefix",
        kafka_settings.topic_prefix,
    ]
    try:
        assert topics.main(["create", "--partitions", "2", *flags]) == 0
        created = capsys.readouterr().out
        assert topics.main(["create", *flags]) == 0
        again = capsys.readouterr().out
        assert topics.main(["list", *flags]) == 0
        listed = capsys.readouterr().out
    finally:
        with make_admin(kafka_settings) as admin:
            admin.delete_topics([kafka_settings.topic(t) for t in TOPICS])
    assert created.count("created") == 5 and again.count("exists") == 5
    assert (
        f"{kafka_settings.topic_prefix}telemetry" in listed and listed.count("2 partition(s)") == 5
    )


@pytest.mark.timeout(60)
def test_unreachable_broker_raises_with_the_address(backend):
    settings = Settings(bootstrap_servers="127.0.0.1:1", backend=backend)
    with pytest.raises(KafkaUnavailableError, match="127.0.0.1:1"):
        topics.ensure_topics(settings, timeout_s=2)


@pytest.mark.timeout(60)
def test_cli_unreachable_broker_is_a_one_line_error(capsys):
    assert topics.main(["list", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "127.0.0.1:1" in err


def test_cli_help_explains_the_topics_and_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        topics.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "idempotent" in out and "node_id" in out and "create" in out and "list" in out
    with pytest.raises(SystemExit):
        topics.main(["create", "--help"])
    sub = capsys.readouterr().out
    assert "--partitions" in sub and "--bootstrap-servers" in sub and "DWCP_" in out + sub


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_delete_removes_only_this_prefix_and_needs_yes(kafka_bootstrap):
    prefix = f"del-{uuid.uuid4().hex[:8]}."
    other = f"keep-{uuid.uuid4().hex[:8]}."
    flags = ["--bootstrap-servers", kafka_bootstrap]
    for p in (prefix, other):
        assert topics.main(["create", "--partitions", "1", "--topic-prefix", p, *flags]) == 0
    assert topics.main(["delete", "--topic-prefix", prefix, *flags]) == 2
    assert topics.main(["delete", "--yes", "--topic-prefix", prefix, *flags]) == 0
    mine = topics.describe_topics(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix))
    kept = topics.describe_topics(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=other))
    assert all(v is None for v in mine.values()) and all(v == 1 for v in kept.values())
    assert topics.main(["delete", "--yes", "--topic-prefix", other, *flags]) == 0
