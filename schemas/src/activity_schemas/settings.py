"""The configuration convention every process of the pipeline shares.

A settings class derives from `ActivitySettings` and reads `ACTIVITY_*`
environment variables first, then the optional settings file that
`ACTIVITY_SETTINGS_FILE` names (TOML, or dotenv lines), then its defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "ENV_PREFIX",
    "SETTINGS_FILE_ENV",
    "TOML_SUFFIX",
    "ActivitySettings",
    "SettingsFileError",
    "settings_file_source",
]

ENV_PREFIX = "ACTIVITY_"
"""Prefix of every environment variable the pipeline reads."""

SETTINGS_FILE_ENV = "ACTIVITY_SETTINGS_FILE"
"""Environment variable naming the optional settings file."""

TOML_SUFFIX = ".toml"
"""A settings file with this suffix is read as TOML; any other as dotenv lines."""


class SettingsFileError(ActivityPipelineError):
    """Raised when the file named by ACTIVITY_SETTINGS_FILE cannot be used."""


def settings_file_source(settings_cls: type[BaseSettings]) -> PydanticBaseSettingsSource | None:
    """Return the source that reads the file named by `ACTIVITY_SETTINGS_FILE`, if one is set.

    A `.toml` file contains the field names as keys (`kafka_bootstrap_servers = "kafka:9092"`);
    any other file contains dotenv lines with the full variable names
    (`ACTIVITY_KAFKA_BOOTSTRAP_SERVERS=kafka:9092`). Keys that a class does not define are
    ignored, so one file can serve the relay and both workers.
    """
    raw = os.environ.get(SETTINGS_FILE_ENV, "").strip()
    if not raw:
        return None

    path = Path(raw)
    if not path.is_file():
        raise SettingsFileError(
            f"settings file {raw!r} named by {SETTINGS_FILE_ENV} does not exist or is not a "
            f"file: create it, or unset {SETTINGS_FILE_ENV} to use environment variables only"
        )

    if path.suffix.lower() == TOML_SUFFIX:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    return DotEnvSettingsSource(settings_cls, env_file=path)


class ActivitySettings(BaseSettings):
    """Base of every settings class: environment variables over the settings file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read arguments, then environment variables, then the settings file, then secrets."""
        file_source = settings_file_source(settings_cls)
        if file_source is None:
            return (init_settings, env_settings, dotenv_settings, file_secret_settings)
        return (init_settings, env_settings, file_source, dotenv_settings, file_secret_settings)
