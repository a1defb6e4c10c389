"""The hash chain of the audit archive: canonical JSON, per-field hashes and record hashes.

Each archived record commits to one salted hash per personal-data field (a
JSON Pointer and its value) and one hash over all its other fields. A
personal-data field can therefore be erased while the chain still verifies:
the erased field keeps its hash, and its salt, without which the hash reveals
nothing about the value, is dropped with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from json.encoder import encode_basestring
from typing import Any

__all__ = [
    "GENESIS_HASH",
    "PERSONAL_DATA_POINTERS",
    "REST_POINTER",
    "SALT_BYTES",
    "canonical_json",
    "commit_fields",
    "decode_pointer",
    "digest_hash",
    "field_hash",
    "field_salt",
    "flatten_fields",
    "is_personal_data",
    "record_hash",
]

GENESIS_HASH = "0" * 64
"""The hash before the first record, and the digest before the first segment, of a chain."""

SALT_BYTES = 16
"""Size of a record's random salt, in bytes: 128 bits, beyond guessing."""

FIELD_SALT_BYTES = 16
"""Size of the salt derived for one personal-data field, in bytes."""

PERSONAL_DATA_POINTERS = (
    "/event/actor/display_name",
    "/event/payload",
    "/event/ui/title",
    "/event/ui/summary",
    "/event/authorization/reason",
)
"""Fields (and everything below them) that may hold personal data: salted, and erasable."""

REST_POINTER = "#rest"
"""Key of the one hash over every field that is not personal data, in a record's commitment."""

_RECORD_DOMAIN = b"activity-audit-record/v1\n"
_FIELD_DOMAIN = b"activity-audit-field/v1\n"


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_PERSONAL_EXACT = frozenset(PERSONAL_DATA_POINTERS)
_PERSONAL_PREFIXES = tuple(pointer + "/" for pointer in PERSONAL_DATA_POINTERS)


def canonical_json(value: Any) -> bytes:
    """Return the one byte encoding of a JSON value that every hash in the archive covers."""
    # Scalars take a short path, which yields exactly what the encoder yields for them.
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if type(value) is str:
        return encode_basestring(value).encode("utf-8")
    if type(value) is int:
        return int.__repr__(value).encode("ascii")
    return _ENCODER.encode(value).encode("utf-8")


def _escape(token: str) -> str:
    if "~" not in token and "/" not in token:
        return token
    return token.replace("~", "~0").replace("/", "~1")


def decode_pointer(pointer: str) -> list[str]:
    """Split a JSON Pointer such as `/event/payload/a~1b` into its unescaped tokens."""
    if pointer and not pointer.startswith("/"):
        raise ValueError(f"JSON Pointer {pointer!r} must start with '/', e.g. /event/payload/email")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]


def flatten_fields(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (JSON Pointer, value) for every leaf; lists and empty objects are leaves."""
    for key, value in document.items():
        pointer = f"{prefix}/{_escape(key)}"
        if isinstance(value, dict) and value:
            yield from flatten_fields(value, pointer)
        else:
            yield pointer, value


def is_personal_data(pointer: str) -> bool:
    """Return whether the field at `pointer` may hold personal data, so is salted and erasable."""
    return pointer in _PERSONAL_EXACT or pointer.startswith(_PERSONAL_PREFIXES)


def field_salt(record_salt: bytes, pointer: str) -> bytes:
    """Derive the salt of one personal-data field from its record's salt (keyed BLAKE2b)."""
    return hashlib.blake2b(
        pointer.encode("utf-8"), key=record_salt, digest_size=FIELD_SALT_BYTES
    ).digest()


def field_hash(pointer: str, value: Any, salt: bytes = b"") -> str:
    """Return the hex SHA-256 that a record commits to for one field."""
    return hashlib.sha256(
        b"".join(
            (_FIELD_DOMAIN, pointer.encode("utf-8"), b"\0", salt, b"\0", canonical_json(value))
        )
    ).hexdigest()


def commit_fields(
    document: Mapping[str, Any],
    salt_of: Callable[[str], bytes],
    erased: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Return a record's field hashes, and its personal-data fields with their values.

    Each personal-data field gets its own salted hash, or its kept hash when
    `erased` lists it. All other fields share one hash under `REST_POINTER`.
    """
    personal: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for pointer, value in flatten_fields(document):
        if is_personal_data(pointer):
            personal[pointer] = value
        else:
            rest[pointer] = value

    hashes = {
        pointer: erased[pointer]
        if erased is not None and pointer in erased
        else field_hash(pointer, value, salt_of(pointer))
        for pointer, value in personal.items()
    }
    hashes[REST_POINTER] = field_hash(REST_POINTER, rest)
    return hashes, personal


def record_hash(previous_hash: str, commitment: Mapping[str, Any]) -> str:
    """Return the chain hash of a record: SHA-256 over the previous hash and its commitment."""
    digest = hashlib.sha256(_RECORD_DOMAIN)
    digest.update(previous_hash.encode("ascii"))
    digest.update(b"\n")
    digest.update(canonical_json(commitment))
    return digest.hexdigest()


def digest_hash(body: Mapping[str, Any]) -> str:
    """Return the hash of a segment digest's signed body, which the next digest links to."""
    return hashlib.sha256(canonical_json(body)).hexdigest()
