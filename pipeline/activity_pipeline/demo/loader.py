"""Preparing the demo database: a fresh database, the migrations and the reference data."""

from __future__ import annotations

import psycopg
from activity_pipeline.demo.wikiticker import ReferenceData
from activity_producer.dsn import for_libpq
from activity_producer.migrate import upgrade_database
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = ["drop_database", "load_reference_data", "recreate_database"]


def recreate_database(server_url: str, database: str) -> str:
    """Drop and create `database` on the server of `server_url`, migrate it, return its URL."""
    admin_url = for_libpq(server_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_url(server_url).set(database=database).render_as_string(hide_password=False)
    upgrade_database(url)
    return url


def drop_database(server_url: str, database: str) -> None:
    """Drop `database` on the server of `server_url`, if it exists."""
    with psycopg.connect(for_libpq(server_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def load_reference_data(database_url: str, data: ReferenceData) -> None:
    """Bulk-load the reference tables with COPY, in one transaction."""
    with psycopg.connect(for_libpq(database_url)) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY resources (tenant_id, id, type, parent_id, owner_principal_id, name) FROM STDIN"
        ) as copy:
            for row in data.resources:
                copy.write_row(row)
        with cursor.copy(
            "COPY role_bindings (id, tenant_id, principal_id, resource_id, role) FROM STDIN"
        ) as copy:
            for row in data.role_bindings:
                copy.write_row(row)
        with cursor.copy(
            "COPY subscriptions (id, tenant_id, principal_id, resource_id, scope) FROM STDIN"
        ) as copy:
            for row in data.subscriptions:
                copy.write_row(row)
        with cursor.copy(
            "COPY notification_preferences (tenant_id, principal_id, filter_mode, custom_actions)"
            " FROM STDIN"
        ) as copy:
            for row in data.preferences:
                copy.write_row(row)
        cursor.execute("ANALYZE")
