"""Settings of the enrichment worker, read from `ACTIVITY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["StreamsSettings"]


class StreamsSettings(BaseSettings):
    """Where the enrichment worker reads reference data and Kafka, and how it batches."""

    model_config = SettingsConfigDict(env_prefix="ACTIVITY_", extra="ignore")

    database_url: str = Field(
        default="postgresql://activity:activity@127.0.0.1:55432/activity",
        description="PostgreSQL URL of the database that holds the reference tables.",
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated."
    )
    enrichment_batch_size: int = Field(
        default=500, ge=1, description="Activities resolved together with set-based queries."
    )
    enrichment_batch_window_s: float = Field(
        default=0.05,
        gt=0,
        description="Seconds a batch waits to fill before it is resolved anyway.",
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
        default=6, ge=1, description="Partitions of each topic the workers declare."
    )
    faust_data_dir: str = Field(
        default=".stack/faust",
        description="Directory where Faust workers keep their local state.",
    )
    enrichment_web_port: int = Field(
        default=6066, ge=1, le=65535, description="Port of the enrichment worker's web server."
    )

    def topic(self, name: str) -> str:
        """Return the physical name of the pipeline topic `name`."""
        return f"{self.topic_prefix}{name}"

    @property
    def asyncpg_dsn(self) -> str:
        """Return `database_url` without a SQLAlchemy driver suffix, as asyncpg takes it."""
        scheme, separator, rest = self.database_url.partition("://")
        return f"{scheme.split('+')[0]}{separator}{rest}"
