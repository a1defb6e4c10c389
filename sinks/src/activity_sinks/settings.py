"""Settings of the sink worker, read from `ACTIVITY_*` environment variables."""

from __future__ import annotations

from activity_streams.settings import StreamsSettings
from pydantic import Field, SecretStr

__all__ = ["SinkSettings"]


class SinkSettings(StreamsSettings):
    """Where the sinks publish and archive, on top of the Kafka and database settings."""

    centrifugo_api_url: str = Field(
        default="http://127.0.0.1:18000/api", description="Centrifugo HTTP API endpoint."
    )
    centrifugo_api_key: SecretStr = Field(
        default=SecretStr("dev-api-key"),
        description="Centrifugo HTTP API key; the default matches the local stack only.",
    )
    centrifugo_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds one Centrifugo API call may take."
    )
    centrifugo_retry_budget_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Seconds a batch keeps retrying transient Centrifugo errors before its "
            "deliveries go to the dead-letter topic; well inside Centrifugo's 5-minute "
            "idempotency window."
        ),
    )
    notification_max_bytes: int = Field(
        default=8192,
        ge=1024,
        description="Largest notification document pushed, in bytes; larger payloads are trimmed.",
    )
    notification_link_template: str = Field(
        default="/activities/{tenant_id}/{event_id}",
        description=(
            "Link put into a trimmed notification; `{tenant_id}`, `{event_id}` and "
            "`{resource_id}` are replaced."
        ),
    )
    sink_batch_size: int = Field(
        default=500, ge=1, description="Deliveries or audit records handled per batch."
    )
    sink_batch_window_s: float = Field(
        default=0.01,
        gt=0,
        description=(
            "Seconds a batch of deliveries waits to fill before it is published. Under load "
            "a batch fills without waiting, so this bounds the latency a thin stream adds."
        ),
    )
    archive_batch_window_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Seconds a batch of audit records waits to fill before it becomes a segment; "
            "longer windows write fewer, larger segments."
        ),
    )
    archive_dir: str = Field(
        default=".stack/archive",
        description="Directory or fsspec URL (e.g. s3://bucket/audit) of the audit archive.",
    )
    archive_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "Ed25519 key that signs the archive's digests: a PEM file path or the base64 of "
            "the raw 32-byte key; unset, a development key is generated into .stack/."
        ),
    )
    sink_web_port: int = Field(
        default=6067, ge=1, le=65535, description="Port of the sink worker's web server."
    )
