"""Settings of the relay, read from `ACTIVITY_*` environment variables."""

from __future__ import annotations

from activity_schemas.settings import ActivitySettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

__all__ = ["RelaySettings"]


class RelaySettings(ActivitySettings):
    """Settings of the relay: its outbox, its Kafka topics, polling, cleanup and metrics."""

    model_config = SettingsConfigDict(env_prefix="ACTIVITY_", extra="ignore")

    database_url: str = Field(
        default="postgresql://activity:activity@127.0.0.1:55432/activity",
        description="PostgreSQL URL of the database that holds the outbox.",
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated."
    )
    relay_batch_size: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Outbox rows read and produced per round trip.",
    )
    relay_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Seconds between polls when no NOTIFY arrives; NOTIFY wakes the relay at once."
        ),
    )
    relay_max_message_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=100_000_000,
        description=(
            "Largest record (value, key and headers) the relay produces; a larger outbox row "
            "goes to the dead-letter topic. Keep it at or below the broker's message.max.bytes."
        ),
    )
    relay_sent_retention_s: float = Field(
        default=86_400.0,
        ge=0,
        description=(
            "Seconds a sent outbox row is kept before the relay deletes it; 0 deletes each "
            "row as soon as Kafka acknowledged it, which is the fastest."
        ),
    )
    relay_cleanup_batch_size: int = Field(
        default=10_000,
        ge=0,
        le=1_000_000,
        description="Sent rows deleted per statement by the relay's cleanup; 0 turns cleanup off.",
    )
    relay_transaction_warning_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Age in seconds from which an open transaction in the outbox database is logged "
            "as a warning: it keeps vacuum from removing sent and deleted outbox rows."
        ),
    )
    relay_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the relay's metrics and health endpoint listens on.",
    )
    relay_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65_535,
        description="Port of the relay's /metrics and /healthz endpoint; 0 turns it off.",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description=(
            "Prefix of every topic and consumer group name, to run several pipelines "
            "on one Kafka cluster."
        ),
    )
    topic_partitions: int = Field(
        default=6, ge=1, description="Partitions of each topic the relay creates."
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of each topic the relay creates."
    )
    topic_retention_ms: int | None = Field(
        default=None,
        ge=-1,
        description=(
            "retention.ms of each topic the relay creates; unset keeps the broker's default, "
            "-1 keeps records forever."
        ),
    )
