"""The payload policy: what a service may put into an activity's payload.

A payload travels to every watcher and into the audit archive, so values under
keys that look like credentials are redacted (or rejected) before the activity
is stored, non-JSON values are refused, and the payload's size and depth are
capped. A service configures one policy, once, through `configure_recording`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from activity_producer.errors import PayloadPolicyError, ProducerError

__all__ = [
    "DEFAULT_CREDENTIAL_KEYS",
    "DEFAULT_CREDENTIAL_MARKERS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_MAX_PAYLOAD_DEPTH",
    "REDACTED",
    "PayloadPolicy",
    "normalize_key",
]

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest payload accepted by default, in bytes of compact UTF-8 JSON after redaction.

A payload reaches every watcher over WebSocket and is kept in the audit archive;
16 KiB fits any list of changed fields and ids, while blobs belong in storage.
"""

DEFAULT_MAX_PAYLOAD_DEPTH = 32
"""Deepest nesting of objects and lists accepted by default, in levels; deeper is a blob."""

REDACTED = "[redacted]"
"""The value that replaces a credential-like key's value."""

DEFAULT_CREDENTIAL_MARKERS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "privatekey",
        "credential",
        "cookie",
    }
)
"""A normalized key holding one of these looks like a credential: `X-Api-Key`, `dbPassword`."""

DEFAULT_CREDENTIAL_KEYS = frozenset({"auth", "pass", "pin"})
"""Normalized keys that look like credentials only as a whole (so `author` is not one)."""

_SEPARATORS = re.compile(r"[^a-z0-9]")

_JSON_SCALARS = (str, int, bool, type(None))


@lru_cache(maxsize=4096)
def normalize_key(key: str) -> str:
    """Return `key` lowercased without separators: `X-API_Key` becomes `xapikey`."""
    return _SEPARATORS.sub("", key.lower())


@dataclass(frozen=True)
class PayloadPolicy:
    """Rules for credential-like keys, non-JSON values and large payloads.

    `on_credential` is `redact` (replace the value, whatever it contains, with
    `[redacted]`) or `reject` (raise `PayloadPolicyError`). A key at any depth
    looks like a credential when its normalized form (see `normalize_key`)
    contains one of `credential_markers` or equals one of `credential_keys`.
    Normalized keys in `allowed_keys`, such as `tokencount`, never count.
    `max_bytes` caps the compact UTF-8 JSON of the payload after redaction, and
    `max_depth` the nesting of objects and lists.
    """

    on_credential: Literal["redact", "reject"] = "redact"
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH
    credential_markers: frozenset[str] = field(default=DEFAULT_CREDENTIAL_MARKERS)
    credential_keys: frozenset[str] = field(default=DEFAULT_CREDENTIAL_KEYS)
    allowed_keys: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        if self.on_credential not in ("redact", "reject"):
            raise ProducerError(
                f"PayloadPolicy(on_credential={self.on_credential!r}) is not a mode; "
                "use 'redact' or 'reject'"
            )
        if self.max_bytes < 2 or self.max_depth < 1:
            raise ProducerError(
                f"PayloadPolicy(max_bytes={self.max_bytes}, max_depth={self.max_depth}) "
                "cannot hold any payload; use max_bytes >= 2 and max_depth >= 1"
            )

    def looks_like_credential(self, key: str) -> bool:
        """Whether a payload key looks like it holds a credential under this policy."""
        normalized = normalize_key(key)
        if normalized in self.allowed_keys:
            return False
        if normalized in self.credential_keys:
            return True
        return any(marker in normalized for marker in self.credential_markers)

    def apply(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Return the payload after the policy, and its compact JSON encoding.

        Raises `PayloadPolicyError` naming the offending path, e.g.
        `payload.auth.token`, when the payload breaks the policy.
        """
        cleaned = self._clean_object(payload, "payload", 1)

        encoded = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))

        size = len(encoded.encode("utf-8"))
        if size > self.max_bytes:
            raise PayloadPolicyError(
                f"payload is {size} bytes once encoded; the limit is {self.max_bytes} bytes. "
                "Store large data elsewhere and put its id in the payload, or raise "
                "PayloadPolicy(max_bytes=...)"
            )
        return cleaned, encoded

    def _clean_object(self, value: dict[Any, Any], path: str, depth: int) -> dict[str, Any]:
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadPolicyError(
                    f"payload is not JSON: {path} has the non-string key {key!r}; "
                    "JSON objects take string keys"
                )
            item_path = f"{path}.{key}"
            if not self.looks_like_credential(key):
                cleaned[key] = self._clean(item, item_path, depth)
            elif self.on_credential == "reject":
                raise PayloadPolicyError(
                    f"{item_path} looks like a credential; remove it from the payload, "
                    "or configure PayloadPolicy(on_credential='redact') to store "
                    f"{REDACTED!r} instead"
                )
            else:
                cleaned[key] = REDACTED
        return cleaned

    def _clean(self, value: Any, path: str, depth: int) -> Any:
        if isinstance(value, _JSON_SCALARS):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise PayloadPolicyError(
                    f"payload is not JSON: {path} is {value!r}; JSON has no NaN or infinity, "
                    "use null or a string"
                )
            return value
        if isinstance(value, dict | list | tuple) and depth >= self.max_depth:
            raise PayloadPolicyError(
                f"{path} nests deeper than {self.max_depth} levels; flatten the payload "
                "or store the document elsewhere and put its id in the payload"
            )
        if isinstance(value, dict):
            return self._clean_object(value, path, depth + 1)
        if isinstance(value, list | tuple):
            return [
                self._clean(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)
            ]
        raise PayloadPolicyError(
            f"payload is not JSON: {path} holds a {type(value).__name__}; pass only str, int, "
            "float, bool, None, lists and dicts with string keys (convert it first, e.g. "
            "str(uuid) or datetime.isoformat())"
        )
