"""The one settings object: built once in ``main()`` from env vars and CLI flags, passed down.

Precedence: defaults < ``DWCP_*`` environment variables < command-line flags. Nothing else in
the package reads ``os.environ``. An unknown ``DWCP_*`` variable fails fast, naming it.

Examples
--------
>>> s = Settings.from_env({"DWCP_BOOTSTRAP_SERVERS": "k1:9092", "DWCP_PARTITIONS": "3"})
>>> s.bootstrap_servers, s.partitions, s.topic("alerts")
('k1:9092', 3, 'dwcp.alerts')
>>> Settings.from_env({"DWCP_BOOTSTRAP_SERVER": "k1:9092"})
Traceback (most recent call last):
...
stream.errors.SettingsError: unknown setting DWCP_BOOTSTRAP_SERVER; did you mean DWCP_BOOTSTRAP_SERVERS?
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from stream.errors import SettingsError

ENV_PREFIX = "DWCP_"
BACKENDS = ("kafka-python", "confluent")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

#: Logical topic names; the wire name is ``topic_prefix + name``.
TOPICS = ("telemetry", "labels", "alerts", "predictions", "dead-letter")


@dataclass(frozen=True)
class Settings:
    """Connection, topic and runtime settings shared by every producer and consumer."""

    bootstrap_servers: str = "127.0.0.1:9092"
    backend: str = "kafka-python"
    topic_prefix: str = "dwcp."
    partitions: int = 6
    replication_factor: int = 1
    client_id: str = "dwcp-stream"
    group_id: str = ""  # empty: each consumer uses its own group, dwcp-<name>
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = dataclasses.field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    max_record_bytes: int = 64 * 1024
    batch_size: int = 5000
    poll_timeout_ms: int = 500
    state_dir: str = ".cache/state"
    state_shards: int = 1  # >1: state per shard of the keys, following its partition
    log_level: str = "INFO"
    metrics_port: int = 0  # Prometheus /metrics, /healthz, /readyz over HTTP; 0 = not served
    metrics_host: str = "0.0.0.0"
    gc_threshold: int = 50_000  # young-generation threshold of the collector; 0 = Python's own

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingsError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"security_protocol {self.security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        for name in (
            "partitions",
            "replication_factor",
            "max_record_bytes",
            "batch_size",
            "poll_timeout_ms",
            "state_shards",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gc_threshold < 0:
            raise SettingsError(f"gc_threshold must be >= 0 (0 keeps Python's default), got {self.gc_threshold}")
        if not 0 <= self.metrics_port <= 65535:
            raise SettingsError(f"metrics_port must be 0 (off) or a TCP port, got {self.metrics_port}")
        if not self.bootstrap_servers.strip():
            raise SettingsError("bootstrap_servers is empty")

    # -- topics ---------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Wire name of a logical topic (one of :data:`TOPICS`)."""
        if name not in TOPICS:
            raise SettingsError(f"unknown topic {name!r} (known: {', '.join(TOPICS)})")
        return self.topic_prefix + name

    def consumer_group(self, name: str) -> str:
        """Consumer group of the consumer ``name``: ``group_id`` when set, else ``dwcp-<name>``.

        Each consumer has its own default group, so two different consumers never split one
        topic's partitions between them; copies of one consumer share its group.

        >>> Settings().consumer_group("reliability"), Settings(group_id="g").consumer_group("x")
        ('dwcp-reliability', 'g')
        """
        return self.group_id or f"dwcp-{name}"

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Map of ``DWCP_*`` environment variable -> field name."""
        return {ENV_PREFIX + f.name.upper(): f.name for f in fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build from ``DWCP_*`` variables in ``environ``, then ``overrides`` (CLI flags)."""
        names = cls.env_names()
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(sorted(names))})"
                raise SettingsError(f"unknown setting {key}{hint}")
            values[names[key]] = _coerce(names[key], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the common connection flags (each also settable as ``DWCP_<NAME>``)."""
        g = parser.add_argument_group("Kafka connection (flags override DWCP_* env vars)")
        g.add_argument("--bootstrap-servers", help="comma-separated host:port list (default 127.0.0.1:9092)")
        g.add_argument("--backend", choices=BACKENDS, help="Kafka client: kafka-python (default) or confluent (fast)")
        g.add_argument("--topic-prefix", help="prefix shared by all topic names (default 'dwcp.')")
        g.add_argument("--client-id", help="Kafka client id")
        g.add_argument("--group-id", help="consumer group id (default dwcp-<consumer name>)")
        g.add_argument("--security-protocol", choices=SECURITY_PROTOCOLS, help="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
        g.add_argument("--sasl-mechanism", help="e.g. PLAIN, SCRAM-SHA-256 (password only via DWCP_SASL_PASSWORD)")
        g.add_argument("--sasl-username")
        g.add_argument("--ssl-cafile")
        g.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
        g.add_argument(
            "--metrics-port",
            type=int,
            help="serve Prometheus metrics (/metrics) and health (/healthz, /readyz) on this "
            "HTTP port (default 0: off)",
        )
        g.add_argument("--metrics-host", help="address the metrics port binds (default 0.0.0.0)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str], **extra: Any) -> Settings:
        """Build from env vars overridden by parsed flags (those ``add_arguments`` added)."""
        flag_fields = {f.name for f in fields(cls)} & set(vars(args))
        overrides = {name: getattr(args, name) for name in flag_fields}
        overrides.update(extra)
        return cls.from_env(environ, **overrides)


def _coerce(name: str, raw: str) -> Any:
    default = next(f.default for f in fields(Settings) if f.name == name)
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not an integer") from None
    return raw
