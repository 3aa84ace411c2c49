"""Auth failures for the confluent backend: one watcher per client on librdkafka's error_cb.

librdkafka keeps retrying a rejected login (``_AUTHENTICATION`` through ``error_cb`` every few
hundred ms, then ``_ALL_BROKERS_DOWN``) and a flush without a timeout waits for ever; a missing
ACL arrives as a delivery report or a consumer message error (``TOPIC_AUTHORIZATION_FAILED``,
``GROUP_AUTHORIZATION_FAILED``). :class:`ErrorWatch` is the client's ``error_cb``: it logs as
before and keeps the first refusal, which the client raises from its next call (the calls
that wait poll in short slices so that is within a second). :meth:`ErrorWatch.refusal` names
an error code as :class:`~stream.errors.KafkaAuthenticationError` or
:class:`~stream.errors.KafkaAuthorizationError` with the messages of :mod:`stream.kafka.auth`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException

from stream.errors import KafkaAuthError
from stream.kafka.auth import authentication_error, authorization_error, is_authorization, resource
from stream.settings import Settings

log = logging.getLogger("stream.kafka.confluent")

AUTHENTICATION_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,  # a TLS handshake failure, e.g. a certificate not signed by our CA
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)


_CONNECTION_CODES = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT}


class ErrorWatch:
    """``error_cb`` of one client: log every error, keep the first auth refusal."""

    def __init__(self, settings: Settings, topics: Sequence[str] = (), group: str = "") -> None:
        self._settings, self._topics, self._group = settings, list(topics), group
        self.refused: KafkaAuthError | None = None
        # a broker connection failed (or all are down) since the client last confirmed one
        self.down = False

    def __call__(self, err: KafkaError) -> None:
        log.warning("librdkafka: %s", err.str())
        if err.code() in _CONNECTION_CODES:
            self.down = True
        self.keep(err, "connecting")

    def refusal(
        self, err: KafkaError, action: str, topic: str | None = None
    ) -> KafkaAuthError | None:
        """The named auth error for ``err`` (about ``topic``, if given), or ``None``."""
        if err.code() in AUTHENTICATION_CODES:
            return authentication_error(self._settings, _reason(err.str()))
        name = err.name() or ""
        if is_authorization(name):
            where = resource(name, [topic] if topic else self._topics, self._group)
            return authorization_error(self._settings, name, where, action)
        return None

    def keep(self, err: KafkaError, action: str, topic: str | None = None) -> None:
        """Keep ``err`` as the refusal if it is one and none is kept yet."""
        if self.refused is None:
            self.refused = self.refusal(err, action, topic)

    def raise_from(self, exc: KafkaException, action: str) -> None:
        """Raise the auth error behind ``exc`` (or the one kept), if there is one."""
        refused = self.refusal(exc.args[0], action) or self.refused
        if refused is not None:
            raise refused from exc

    def raise_if_refused(self) -> None:
        """Raise the kept refusal, if any (it stays: the client will not get better)."""
        if self.refused is not None:
            raise self.refused


def _reason(text: str) -> str:
    # "sasl_plaintext://127.0.0.1:9094/bootstrap: SASL authentication error: <broker's words>
    # (after 301ms in state AUTH_REQ)": the address is in our message already.
    text = re.sub(r"^\w+://\S+?: ", "", text)
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)


__all__ = ["AUTHENTICATION_CODES", "ErrorWatch"]
