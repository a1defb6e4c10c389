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
    sink_batch_size: int = Field(
        default=500, ge=1, description="Deliveries or audit records handled per batch."
    )
    sink_batch_window_s: float = Field(
        default=0.05, gt=0, description="Seconds a batch waits to fill before it is handled."
    )
    archive_dir: str = Field(
        default=".stack/archive", description="Directory of the audit archive's segment files."
    )
    sink_web_port: int = Field(
        default=6067, ge=1, le=65535, description="Port of the sink worker's web server."
    )
