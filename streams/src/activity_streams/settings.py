"""Settings of the enrichment worker, read from `ACTIVITY_*` environment variables."""

from __future__ import annotations

from typing import Annotated

from activity_schemas.settings import ActivitySettings
from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

__all__ = ["StreamsSettings"]


class StreamsSettings(ActivitySettings):
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
        default=0.01,
        gt=0,
        description=(
            "Seconds a batch waits to fill before it is resolved anyway. Under load a batch "
            "fills without waiting, so this bounds the latency a thin stream adds."
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
        default=6, ge=1, description="Partitions of each topic the workers declare."
    )
    faust_data_dir: str = Field(
        default=".stack/faust",
        description="Directory where Faust workers keep their local state.",
    )
    enrichment_web_port: int = Field(
        default=6066, ge=1, le=65535, description="Port of the enrichment worker's web server."
    )

    kafka_session_timeout_s: float = Field(
        default=60.0,
        ge=6,
        description=(
            "Seconds without a heartbeat before Kafka hands a worker's partitions to another; "
            "a crashed worker's partitions wait this long."
        ),
    )
    critical_actions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("security.*",),
        description=(
            "fnmatch patterns (case-sensitive) of critical actions, comma-separated: they reach "
            "their watchers even when a preference mutes or filters them."
        ),
    )
    mutation_actions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(
            "resource.created",
            "resource.updated",
            "resource.deleted",
            "transfer.*",
            "promotion.*",
        ),
        description="fnmatch patterns of the `mutations` preference mode, comma-separated.",
    )
    reference_cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Seconds cached reference data lives at most. A change to the reference tables "
            "reaches every worker's next batch through the tenant's version in "
            "`reference_versions`; this lifetime is the backstop for changes no trigger sees "
            "(a host platform's own tables, TRUNCATE). 0 turns the cache off."
        ),
    )
    enrichment_max_attempts: int = Field(
        default=6,
        ge=1,
        description="Attempts to resolve a batch before its records go to the dead-letter topic.",
    )
    enrichment_retry_backoff_s: float = Field(
        default=0.5,
        gt=0,
        description=(
            "Seconds before the second attempt, doubled for each further one: with 6 attempts "
            "a batch waits about 15 s, long enough for a PostgreSQL restart."
        ),
    )

    @field_validator("critical_actions", "mutation_actions", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def topic(self, name: str) -> str:
        """Return the physical name of the pipeline topic `name`."""
        return f"{self.topic_prefix}{name}"

    @property
    def asyncpg_dsn(self) -> str:
        """Return `database_url` without a SQLAlchemy driver suffix, as asyncpg takes it."""
        scheme, separator, rest = self.database_url.partition("://")
        return f"{scheme.split('+')[0]}{separator}{rest}"
