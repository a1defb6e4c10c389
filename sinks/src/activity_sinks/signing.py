"""The Ed25519 key that signs the archive's segment digests and erasures.

The key comes from `ACTIVITY_ARCHIVE_SIGNING_KEY`: a path to a PEM file or
the base64 of a raw 32-byte private key. For local development, when it is
unset, a key is generated once into `.stack/archive-signing-key.pem`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from activity_sinks.archive_errors import SigningKeyError

__all__ = [
    "DEV_SIGNING_KEY_PATH",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
    "sign",
    "verify_signature",
]

log = structlog.get_logger(__name__)

DEV_SIGNING_KEY_PATH = Path(".stack/archive-signing-key.pem")
"""Path of the development key, generated when no signing key is configured."""

KEY_ID_HEX_CHARS = 16
"""Length of a key id: the first 64 bits of the SHA-256 of the raw public key, in hex."""

_RAW_KEY_BYTES = 32


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the short fingerprint that digests name their signing key by."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """Return the public key as PEM (SubjectPublicKeyInfo), as exports ship it."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private_key: Ed25519PrivateKey, message: bytes) -> str:
    """Return the base64 Ed25519 signature of `message`."""
    return base64.b64encode(private_key.sign(message)).decode("ascii")


def verify_signature(public_key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    """Return whether `signature` (base64) is the key's signature of `message`."""
    try:
        public_key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _generate_dev_key(path: Path) -> Ed25519PrivateKey:
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process generated it first; use theirs.
        return _read_private_key(path)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    log.warning(
        "archive_signing_key_generated",
        path=str(path),
        key_id=key_id(private_key.public_key()),
        hint="for local development only; set ACTIVITY_ARCHIVE_SIGNING_KEY in production",
    )
    return private_key


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip()))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SigningKeyError(
            f"cannot read an Ed25519 private key from {path}: {exc}; "
            "write a PKCS#8 PEM file or the base64 of the raw 32-byte key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"the key in {path} is a {type(key).__name__}, not Ed25519; "
            "generate one with `openssl genpkey -algorithm ed25519`"
        )
    return key


def load_signing_key(setting: str | None) -> Ed25519PrivateKey:
    """Load the signing key from a PEM path or base64 text; generate a dev key when unset."""
    if not setting:
        if DEV_SIGNING_KEY_PATH.exists():
            return _read_private_key(DEV_SIGNING_KEY_PATH)
        return _generate_dev_key(DEV_SIGNING_KEY_PATH)

    path = Path(setting)
    if len(setting) < 4096 and path.is_file():
        return _read_private_key(path)
    try:
        raw = base64.b64decode(setting, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(
            "ACTIVITY_ARCHIVE_SIGNING_KEY is neither an existing file nor base64; "
            "set it to a PEM file path or to the base64 of a raw 32-byte Ed25519 key"
        ) from exc
    if len(raw) != _RAW_KEY_BYTES:
        raise SigningKeyError(
            f"ACTIVITY_ARCHIVE_SIGNING_KEY decodes to {len(raw)} bytes; "
            f"a raw Ed25519 private key is {_RAW_KEY_BYTES} bytes"
        )
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_public_key(source: str | bytes) -> Ed25519PublicKey:
    """Load a public key from PEM bytes, a PEM file path, or base64 of the raw 32 bytes."""
    data: bytes
    if isinstance(source, bytes):
        data = source
    elif len(source) < 4096 and Path(source).is_file():
        data = Path(source).read_bytes()
    else:
        data = source.encode("ascii", errors="replace")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SigningKeyError(
            f"cannot read an Ed25519 public key: {exc}; pass the public-key.pem of an export "
            "or the base64 of the raw 32-byte public key"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"the public key is a {type(key).__name__}, not Ed25519")
    return key
