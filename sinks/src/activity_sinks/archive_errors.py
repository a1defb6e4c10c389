"""Exceptions of the audit archive: writing, reading, signing, erasing and exporting it."""

from __future__ import annotations

from activity_sinks.errors import SinkError

__all__ = ["ArchiveError", "ErasureError", "SigningKeyError"]


class ArchiveError(SinkError):
    """Raised when the audit archive cannot be written, read or exported."""


class SigningKeyError(ArchiveError):
    """Raised when the archive's Ed25519 signing or public key cannot be loaded."""


class ErasureError(ArchiveError):
    """Raised when a field of an archived record cannot be erased as requested."""
