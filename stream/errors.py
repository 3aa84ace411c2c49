"""The project's exception tree: one root, a subclass per area, the offending value in the message."""

from __future__ import annotations


class DwcpError(Exception):
    """Root of every error this package raises on purpose."""

    retriable = False


class SettingsError(DwcpError, ValueError):
    """A setting is unknown or has an invalid value."""


class SchemaError(DwcpError, ValueError):
    """A record does not match the schema."""


class KafkaUnavailableError(DwcpError):
    """The broker could not be reached in time."""

    retriable = True


class TopicError(DwcpError):
    """A topic could not be created or described."""


class CheckpointError(DwcpError):
    """A model checkpoint could not be written or read."""


class DeliveryError(DwcpError):
    """A produced record was not acknowledged by the broker (reported by ``flush``)."""

    retriable = True


class CommitError(DwcpError):
    """Consumer offsets could not be committed (e.g. the group rebalanced meanwhile)."""

    retriable = True


class KafkaAuthError(DwcpError):
    """The broker refused who we are or what we asked for; retrying the same call cannot help.

    The message names the principal (user and SASL mechanism, or the security protocol),
    the broker address and what to check; never a password.
    """


class KafkaAuthenticationError(KafkaAuthError):
    """The broker rejected the credentials (SASL login) or the TLS handshake failed."""


class KafkaAuthorizationError(KafkaAuthError):
    """The principal authenticated but may not use a topic, group or the cluster (ACLs)."""
