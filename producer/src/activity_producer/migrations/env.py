"""Alembic environment for the producer library's tables.

`activity_producer.migrate.upgrade_database()` is the usual entry point; it
passes the database URL through the Alembic config.
"""

from __future__ import annotations

from activity_producer.tables import Base
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """Emit the migrations' SQL without a database connection."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations over one connection, in one transaction."""
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set in the Alembic config")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
