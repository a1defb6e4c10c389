"""The payload policy: what a service may put into an activity's payload.

A payload travels to every watcher and into the audit archive, so values that
look like credentials are redacted (or rejected) before the activity is
stored, and the payload's size is capped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from activity_producer.errors import PayloadPolicyError

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "REDACTED", "PayloadPolicy"]

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest serialized payload accepted by default, in bytes; large blobs belong in storage."""

REDACTED = "[redacted]"

_CREDENTIAL_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_ ]?key|authorization|private[-_ ]?key|credential",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PayloadPolicy:
    """How credential-like keys and large payloads are handled; configure once per service.

    `on_credential` is `redact` (replace the value with `[redacted]`) or
    `reject` (raise `PayloadPolicyError`). `max_bytes` caps the UTF-8 JSON
    encoding of the payload after redaction.
    """

    on_credential: Literal["redact", "reject"] = "redact"
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    credential_key: re.Pattern[str] = field(default=_CREDENTIAL_KEY)

    def apply(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Return the payload after the policy, and its JSON encoding."""
        cleaned = self._clean(payload, "payload")
        try:
            encoded = json.dumps(
                cleaned, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise PayloadPolicyError(
                f"payload is not JSON: {exc}; pass only str, int, float, bool, None, "
                "lists and dicts with string keys"
            ) from exc
        size = len(encoded.encode("utf-8"))
        if size > self.max_bytes:
            raise PayloadPolicyError(
                f"payload is {size} bytes once encoded; the limit is {self.max_bytes} bytes. "
                "Store large data elsewhere and put its id in the payload"
            )
        return cleaned, encoded

    def _clean(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            cleaned: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise PayloadPolicyError(
                        f"{path} has the non-string key {key!r}; JSON objects take string keys"
                    )
                item_path = f"{path}.{key}"
                if self.credential_key.search(key):
                    if self.on_credential == "reject":
                        raise PayloadPolicyError(
                            f"{item_path} looks like a credential; remove it from the payload "
                            "or configure PayloadPolicy(on_credential='redact')"
                        )
                    cleaned[key] = REDACTED
                else:
                    cleaned[key] = self._clean(item, item_path)
            return cleaned
        if isinstance(value, list | tuple):
            return [self._clean(item, f"{path}[{index}]") for index, item in enumerate(value)]
        return value
