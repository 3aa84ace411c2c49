"""Errors of the compression selector (one root, specific subclasses)."""

from __future__ import annotations

from stream.errors import DwcpError


class CompressionModelError(DwcpError):
    """Root of the compression selector's errors."""


class CodecTableError(CompressionModelError, ValueError):
    """The codec table is missing, malformed or names an unknown action."""


class PortableFormatError(CompressionModelError, ValueError):
    """A portable (exported) policy cannot be read: wrong format, shape or version."""
