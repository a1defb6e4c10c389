"""Apply the producer library's Alembic migrations to a database."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

from activity_producer.dsn import for_sqlalchemy_sync

__all__ = ["alembic_config", "upgrade_database"]


def alembic_config(database_url: str) -> Config:
    """Return an Alembic config whose scripts are the ones this package ships."""
    config = Config()
    config.set_main_option("script_location", str(files("activity_producer") / "migrations"))
    config.set_main_option("sqlalchemy.url", for_sqlalchemy_sync(database_url).replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Migrate the database at `database_url` up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)
