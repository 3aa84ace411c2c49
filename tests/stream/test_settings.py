"""The one settings object: precedence, fail-fast on unknown keys, validation."""

from __future__ import annotations

import argparse

import pytest

from stream.errors import SettingsError
from stream.settings import TOPICS, Settings


def test_defaults_env_and_flags_precedence():
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(["--group-id", "from-flag"])
    env = {"DWCP_GROUP_ID": "from-env", "DWCP_TOPIC_PREFIX": "t.", "PATH": "/bin"}
    s = Settings.from_args(args, env)
    assert (s.group_id, s.topic_prefix, s.bootstrap_servers) == ("from-flag", "t.", "127.0.0.1:9092")
    assert [s.topic(t) for t in TOPICS] == ["t.telemetry", "t.labels", "t.alerts", "t.predictions", "t.dead-letter"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DWCP_GRUOP_ID": "x"}, "unknown setting DWCP_GRUOP_ID; did you mean DWCP_GROUP_ID?"),
        ({"DWCP_PARTITIONS": "many"}, "DWCP_PARTITIONS='many' is not an integer"),
        ({"DWCP_PARTITIONS": "0"}, "partitions must be >= 1, got 0"),
        ({"DWCP_BACKEND": "librdkafka"}, "backend 'librdkafka' is not one of kafka-python, confluent"),
        ({"DWCP_SECURITY_PROTOCOL": "TLS"}, "security_protocol 'TLS' is not one of"),
        ({"DWCP_GC_THRESHOLD": "-1"}, "gc_threshold must be >= 0 .0 keeps Python's default., got -1"),
    ],
)
def test_bad_settings_fail_fast_with_the_key_in_the_message(env, message):
    with pytest.raises(SettingsError, match=message.replace("?", r"\?").replace("[", r"\[")):
        Settings.from_env(env)


def test_unknown_topic_and_secret_not_in_repr():
    s = Settings(sasl_password="hunter2")
    assert "hunter2" not in repr(s)
    with pytest.raises(SettingsError, match="unknown topic 'alert'"):
        s.topic("alert")


def test_each_consumer_has_its_own_default_group_unless_one_is_set():
    assert Settings().consumer_group("bandwidth") == "dwcp-bandwidth"
    assert Settings().consumer_group("consensus") != Settings().consumer_group("bandwidth")
    assert Settings.from_env({"DWCP_GROUP_ID": "g"}).consumer_group("bandwidth") == "g"
