"""The migrations create the tables the models describe; host platforms may plug in views."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from activity_producer.dsn import for_sqlalchemy_sync
from activity_producer.migrate import alembic_config
from activity_producer.tables import Base, check_reference_relations
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, text

from tests.conftest import TEST_DATABASE


def _differences(conn: Connection) -> list[Any]:
    """Return how the database differs from the models, ignoring tables other tests made."""
    context = MigrationContext.configure(
        conn,
        opts={
            "include_name": lambda name, kind, _parent: (
                kind != "table" or name in Base.metadata.tables
            )
        },
    )
    return list(compare_metadata(context, Base.metadata))


HOST_TABLES = """
CREATE TABLE {schema}.nodes (
    org uuid NOT NULL, node uuid NOT NULL, kind text NOT NULL, parent uuid, owner uuid,
    title text, PRIMARY KEY (org, node)
);
CREATE TABLE {schema}.grants (
    grant_id uuid PRIMARY KEY, org uuid NOT NULL, member uuid NOT NULL, node uuid NOT NULL,
    grant_role text NOT NULL, granted timestamptz NOT NULL DEFAULT now(), ended timestamptz
);
CREATE TABLE {schema}.follows (
    follow_id uuid PRIMARY KEY, org uuid NOT NULL, member uuid NOT NULL, node uuid NOT NULL,
    depth text NOT NULL, since timestamptz NOT NULL DEFAULT now(), until timestamptz
);
CREATE VIEW {schema}.resources AS
    SELECT org AS tenant_id, node AS id, kind AS type, parent AS parent_id,
           owner AS owner_principal_id, title AS name
    FROM {schema}.nodes;
CREATE VIEW {schema}.role_bindings AS
    SELECT grant_id AS id, org AS tenant_id, member AS principal_id, node AS resource_id,
           grant_role AS role, granted AS created_at, ended AS revoked_at
    FROM {schema}.grants;
CREATE VIEW {schema}.subscriptions AS
    SELECT follow_id AS id, org AS tenant_id, member AS principal_id, node AS resource_id,
           depth AS scope, since AS created_at, until AS revoked_at
    FROM {schema}.follows;
"""


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(for_sqlalchemy_sync(database_url))
    yield engine
    engine.dispose()


def _host_schema(engine: Engine) -> str:
    schema = f"host_{uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.exec_driver_sql(HOST_TABLES.format(schema=schema))
    return schema


def test_migrated_database_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        differences = _differences(conn)

    assert differences == []


def test_migrations_downgrade_to_nothing_and_upgrade_again(database_url: str) -> None:
    from activity_pipeline.demo.loader import drop_database, recreate_database

    name = f"{TEST_DATABASE}_migrations"
    url = recreate_database(database_url, name)
    try:
        command.downgrade(alembic_config(url), "base")
        engine = create_engine(for_sqlalchemy_sync(url))
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            differences = _differences(conn)
        engine.dispose()
    finally:
        drop_database(database_url, name)

    assert left == 1  # alembic_version only
    assert differences == []


def test_product_reference_tables_pass_the_check(engine: Engine) -> None:
    with engine.connect() as conn:
        problems = check_reference_relations(conn)

    assert problems == []


def test_host_views_with_the_expected_columns_pass_the_check(engine: Engine) -> None:
    schema = _host_schema(engine)

    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL search_path TO {schema}"))
        problems = check_reference_relations(conn)
        resolved = conn.execute(
            text(
                "SELECT relnamespace::regnamespace::text, relkind::text FROM pg_class "
                "WHERE oid = to_regclass('resources')"
            )
        ).one()

    assert problems == []
    assert tuple(resolved) == (schema, "v")


def test_subscription_written_through_a_host_view_lands_in_the_host_table(engine: Engine) -> None:
    schema = _host_schema(engine)
    subscription_id, tenant_id = uuid4(), uuid4()

    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL search_path TO {schema}"))
        conn.execute(
            text(
                "INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope) "
                "VALUES (:id, :t, :p, :r, 'descendants')"
            ),
            {"id": subscription_id, "t": tenant_id, "p": uuid4(), "r": uuid4()},
        )
        conn.execute(
            text("UPDATE subscriptions SET revoked_at = now() WHERE id = :id"),
            {"id": subscription_id},
        )
        stored = conn.execute(
            text(f"SELECT depth, until IS NOT NULL FROM {schema}.follows WHERE follow_id = :id"),
            {"id": subscription_id},
        ).one()

    assert tuple(stored) == ("descendants", True)


def test_host_view_with_a_missing_or_mistyped_column_is_reported(engine: Engine) -> None:
    schema = _host_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"DROP VIEW {schema}.resources"))
        conn.execute(
            text(
                f"CREATE VIEW {schema}.resources AS SELECT org AS tenant_id, node::text AS id, "
                f"kind AS type, parent AS parent_id, title AS name FROM {schema}.nodes"
            )
        )
        conn.execute(text(f"DROP VIEW {schema}.subscriptions"))

    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL search_path TO {schema}"))
        problems = check_reference_relations(conn)

    assert problems == [
        "resources.id: has type text; expected uuid",
        "resources.owner_principal_id: missing; add it (NULL::uuid AS owner_principal_id "
        "when the host has no such data)",
        "subscriptions: no table or view of that name on the search path; create it or run "
        "`activity migrate`",
    ]
