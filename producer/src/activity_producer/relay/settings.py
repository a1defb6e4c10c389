"""Settings of the relay, read from `ACTIVITY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["RelaySettings"]


class RelaySettings(BaseSettings):
    """Where the relay reads the outbox, where it produces, and how fast it polls."""

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
