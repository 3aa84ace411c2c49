"""Authentication and authorization failures, named the same way by both backends.

Both client libraries report a rejected login as a connection problem (kafka-python: "Unable
to bootstrap" after ``bootstrap_timeout_ms``; librdkafka: "all brokers down" via ``error_cb``)
and a missing ACL as one error code among many. The backends turn those into
:class:`~stream.errors.KafkaAuthenticationError` / :class:`~stream.errors.KafkaAuthorizationError`
with the messages built here: who we are, where, and what to check; never the password.

Examples
--------
>>> s = Settings(bootstrap_servers="127.0.0.1:9094", security_protocol="SASL_PLAINTEXT",
...              sasl_mechanism="PLAIN", sasl_username="dwcp", sasl_password="secret")
>>> principal(s)
"user 'dwcp' (SASL PLAIN)"
>>> print(authentication_error(s, "Invalid username or password"))
authentication failed for user 'dwcp' (SASL PLAIN) at 127.0.0.1:9094: Invalid username or password; check DWCP_SASL_USERNAME / DWCP_SASL_PASSWORD
>>> print(authorization_error(s, "TopicAuthorizationFailedError", "topic 'dwcp.alerts'", "producing"))
authorization failed for user 'dwcp' (SASL PLAIN) at 127.0.0.1:9094: not allowed to use topic 'dwcp.alerts' (producing: TopicAuthorizationFailedError); the broker's ACLs must grant it to this principal
"""

from __future__ import annotations

from collections.abc import Sequence

from stream.errors import KafkaAuthenticationError, KafkaAuthorizationError
from stream.settings import Settings


def principal(settings: Settings) -> str:
    """Who the client connects as, for messages: ``user 'x' (SASL PLAIN)`` or the protocol."""
    if settings.security_protocol.startswith("SASL"):
        mechanism = settings.sasl_mechanism or "PLAIN"
        return f"user {settings.sasl_username!r} (SASL {mechanism})"
    if settings.ssl_certfile:
        return f"the client certificate {settings.ssl_certfile} ({settings.security_protocol})"
    return f"the anonymous {settings.security_protocol} client"


def resource(error: str, topics: Sequence[str] = (), group: str = "") -> str:
    """What an authorization error code refers to, by its name (either backend's spelling).

    >>> resource("TOPIC_AUTHORIZATION_FAILED", ["a", "b"]), resource("GroupAuthorizationFailedError", group="g")
    ("topic 'a', 'b'", "group 'g'")
    """
    name = error.upper()
    if "TOPIC" in name and topics:
        return "topic " + ", ".join(repr(t) for t in topics)
    if "GROUP" in name and group:
        return f"group {group!r}"
    if "CLUSTER" in name:
        return "the cluster (e.g. idempotent writes)"
    if "TRANSACTIONAL" in name:
        return "a transactional id"
    return "a topic, group or the cluster"


def is_authorization(error: str) -> bool:
    """Is this error name (kafka-python class or librdkafka code name) an ACL refusal?"""
    return "AUTHORIZATION" in error.upper()


def _hint(settings: Settings) -> str:
    if settings.security_protocol.startswith("SASL"):
        return "check DWCP_SASL_USERNAME / DWCP_SASL_PASSWORD"
    return "check DWCP_SSL_CAFILE (the CA that signed the broker's certificate) and the address"


def authentication_error(settings: Settings, reason: str) -> KafkaAuthenticationError:
    """The broker rejected our login (or the TLS handshake): ``reason`` is its own words."""
    return KafkaAuthenticationError(
        f"authentication failed for {principal(settings)} at {settings.bootstrap_servers}: "
        f"{reason}; {_hint(settings)}"
    )


def authorization_error(
    settings: Settings, error: str, resource: str, action: str
) -> KafkaAuthorizationError:
    """``resource`` (e.g. ``topic 'x'``, ``group 'g'``) was refused to us while ``action``."""
    return KafkaAuthorizationError(
        f"authorization failed for {principal(settings)} at {settings.bootstrap_servers}: "
        f"not allowed to use {resource} ({action}: {error}); the broker's ACLs must grant it "
        "to this principal"
    )


__all__ = [
    "authentication_error",
    "authorization_error",
    "is_authorization",
    "principal",
    "resource",
]
