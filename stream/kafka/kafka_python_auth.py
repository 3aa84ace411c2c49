"""Auth failures for kafka-python: a fast login check, and its errors mapped to ours.

kafka-python 3.0.12 treats a failed SASL authentication (or TLS handshake) during bootstrap
like any connection failure: it retries with backoff until ``bootstrap_timeout_ms`` (30 s by
default) and then raises ``KafkaTimeoutError('Unable to bootstrap ...')``, which reads as "the
broker is down". :func:`check_login` makes one connection to each bootstrap server first, the
way kafka-python itself does (its connection manager, ApiVersions, then the SASL exchange or
TLS handshake), and raises :class:`~stream.errors.KafkaAuthenticationError` at once if the
broker refused us. A server that cannot be reached is left to the real bootstrap, so a dead
broker still reports :class:`~stream.errors.KafkaUnavailableError` as before. PLAINTEXT
clients skip the check (there is nothing to refuse). :func:`refusal` maps kafka-python's
``AuthorizationError`` family (topic, group, cluster) to
:class:`~stream.errors.KafkaAuthorizationError`.

It uses ``kafka.net`` (the connection layer under kafka-python's public clients), which is
pinned with kafka-python in ``uv.lock``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import kafka.errors as kerr
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector

from stream.errors import KafkaAuthError
from stream.kafka.auth import authentication_error, authorization_error, resource
from stream.settings import Settings


def check_login(settings: Settings, cfg: dict[str, Any], timeout_ms: int = 10_000) -> None:
    """Raise ``KafkaAuthenticationError`` if a bootstrap server refuses our credentials."""
    if settings.security_protocol == "PLAINTEXT":
        return
    keys = set(KafkaConnectionManager.DEFAULT_CONFIG) | {"client_id"}
    conf = {k: v for k, v in cfg.items() if k in keys}
    conf["socket_connection_setup_timeout_ms"] = timeout_ms
    # The broker closes the socket right after its refusal; kafka-python often handles the
    # close first and reports only "socket disconnected" (it read the ApiVersions answer, so
    # the broker is there: it dropped us in the SASL exchange). Such a drop is tried again,
    # for the broker's own words; if every attempt ends so, that drop is the refusal.
    for _attempt in range(_ATTEMPTS):
        refused, dropped = _login_once(conf, timeout_ms)
        if refused is not None:
            raise authentication_error(settings, _reason(refused)) from refused
        if not dropped:
            return
    mechanism = settings.sasl_mechanism or "PLAIN"
    raise authentication_error(
        settings,
        f"the broker closed the connection in the SASL {mechanism} exchange, as it does "
        f"when it refuses a login ({_ATTEMPTS} tries)",
    )


_ATTEMPTS = 3


def _login_once(conf: dict[str, Any], timeout_ms: int) -> tuple[BaseException | None, bool]:
    """One connection per bootstrap server until one answers: ``(refusal, dropped)``;
    ``dropped``: a server answered ApiVersions, then closed the connection during SASL."""
    net = NetworkSelector(**conf)
    manager = KafkaConnectionManager(net, **conf)

    async def first_answer() -> tuple[BaseException | None, bool]:
        dropped = False
        for broker in manager.cluster.bootstrap_brokers():
            conn = manager.get_connection(
                broker.node_id,
                timeout_ms=timeout_ms,
                pop_on_close=False,
                refresh_metadata_on_err=False,
            )
            try:
                await conn
            except Exception as exc:  # noqa: BLE001 - sorted out here
                if _refused(exc):
                    return exc, False
                dropped = dropped or (
                    conn.sasl_enabled
                    and conn.broker_version_data is not None  # ApiVersions was answered
                    and isinstance(exc, kerr.KafkaConnectionError)
                    and "socket disconnected" in str(exc)
                )
                continue  # unreachable: the next server, or the real bootstrap's turn
            return None, False  # logged in: the real client will too
        return None, dropped

    try:
        result: tuple[BaseException | None, bool] = net.run(first_answer)
        return result
    finally:
        manager.close()
        net.close()


def _refused(exc: BaseException) -> bool:
    """A login the broker answered with "no" (not a timeout or a refused TCP connection)."""
    refusals = (
        kerr.SaslAuthenticationFailedError,
        kerr.UnsupportedSaslMechanismError,
        kerr.IllegalSaslStateError,
    )
    if isinstance(exc, refusals):
        return True
    return _tls_failure(exc) is not None


def _tls_failure(exc: BaseException) -> BaseException | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        if isinstance(seen, kerr.KafkaConnectionError) and "Handshake failed" in str(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # kafka-python's own wording: "[Error 58] SaslAuthenticationFailedError: <broker's words>"
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text


def refusal(
    settings: Settings,
    exc: BaseException,
    action: str,
    topics: Sequence[str] = (),
    group: str = "",
) -> KafkaAuthError | None:
    """The named auth error for a kafka-python exception, or ``None`` if it is not one."""
    if isinstance(exc, kerr.AuthorizationError):
        name = type(exc).__name__
        return authorization_error(settings, name, resource(name, topics, group), action)
    if isinstance(exc, kerr.SaslAuthenticationFailedError):
        return authentication_error(settings, _reason(exc))
    return None


__all__ = ["check_login", "refusal"]
