"""The triggers of migration 0004 bump a tenant's reference-data version exactly when they should.

Each test uses tenants of its own in the session's database. The migration
test moves a database of its own down to 0003 and up again.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from activity_producer.dsn import for_sqlalchemy_sync
from activity_producer.migrate import alembic_config
from alembic import command
from sqlalchemy import Connection, Engine, create_engine, text

from tests.conftest import TEST_DATABASE


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(for_sqlalchemy_sync(database_url))
    yield engine
    engine.dispose()


def _version(conn: Connection, tenant: UUID) -> int:
    """Return the tenant's version, 0 without a row, as the enrichment worker reads it."""
    version = conn.execute(
        text("SELECT version FROM reference_versions WHERE tenant_id = :t"), {"t": tenant}
    ).scalar_one_or_none()
    return int(version or 0)


def _insert_resource(conn: Connection, tenant: UUID, parent: UUID | None = None) -> UUID:
    resource = uuid4()
    conn.execute(
        text(
            "INSERT INTO resources (tenant_id, id, type, parent_id) "
            "VALUES (:t, :id, 'document', :parent)"
        ),
        {"t": tenant, "id": resource, "parent": parent},
    )
    return resource


def _grant(conn: Connection, tenant: UUID, resource: UUID) -> UUID:
    binding = uuid4()
    conn.execute(
        text(
            "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role) "
            "VALUES (:id, :t, :p, :r, 'delegator')"
        ),
        {"id": binding, "t": tenant, "p": uuid4(), "r": resource},
    )
    return binding


def test_inserting_resources_leaves_the_version_alone(engine: Engine) -> None:
    tenant = uuid4()

    with engine.begin() as conn:
        root = _insert_resource(conn, tenant)
        for _ in range(3):
            _insert_resource(conn, tenant, root)
        version = _version(conn, tenant)

    assert version == 0


def test_resource_tree_changes_bump_renames_do_not(
    engine: Engine,
) -> None:
    tenant = uuid4()
    with engine.begin() as conn:
        root, other_root = _insert_resource(conn, tenant), _insert_resource(conn, tenant)
        child = _insert_resource(conn, tenant, root)
    keys = {"t": tenant, "id": child}
    versions: list[int] = []

    with engine.begin() as conn:
        conn.execute(text("UPDATE resources SET name = 'renamed' WHERE tenant_id = :t"), keys)
        versions.append(_version(conn, tenant))
        conn.execute(
            text("UPDATE resources SET parent_id = :p WHERE tenant_id = :t AND id = :id"),
            {**keys, "p": other_root},
        )
        versions.append(_version(conn, tenant))
        conn.execute(
            text("UPDATE resources SET owner_principal_id = :o WHERE tenant_id = :t AND id = :id"),
            {**keys, "o": uuid4()},
        )
        versions.append(_version(conn, tenant))
        conn.execute(text("DELETE FROM resources WHERE tenant_id = :t AND id = :id"), keys)
        versions.append(_version(conn, tenant))

    assert versions == [0, 1, 2, 3]


def test_access_changes_bump_once_per_statement(engine: Engine) -> None:
    tenant = uuid4()
    with engine.begin() as conn:
        resource = _insert_resource(conn, tenant)
    versions: list[int] = []

    with engine.begin() as conn:
        binding = _grant(conn, tenant, resource)
        versions.append(_version(conn, tenant))
        conn.execute(
            text("UPDATE role_bindings SET revoked_at = now() WHERE id = :id"), {"id": binding}
        )
        versions.append(_version(conn, tenant))
        conn.execute(
            text(
                "INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope) "
                "VALUES (:id, :t, :p, :r, 'resource')"
            ),
            {"id": uuid4(), "t": tenant, "p": uuid4(), "r": resource},
        )
        versions.append(_version(conn, tenant))
        conn.execute(
            text(
                "INSERT INTO notification_preferences (tenant_id, principal_id, filter_mode) "
                "VALUES (:t, :p, 'muted')"
            ),
            {"t": tenant, "p": uuid4()},
        )
        versions.append(_version(conn, tenant))
        conn.execute(
            text(
                "INSERT INTO tenant_notification_defaults (tenant_id, filter_mode) "
                "VALUES (:t, 'all')"
            ),
            {"t": tenant},
        )
        versions.append(_version(conn, tenant))
        conn.execute(text("DELETE FROM role_bindings WHERE tenant_id = :t"), {"t": tenant})
        versions.append(_version(conn, tenant))

    assert versions == [1, 2, 3, 4, 5, 6]


def test_bulk_binding_insert_bumps_tenant_once(engine: Engine) -> None:
    tenants = sorted([uuid4(), uuid4()])
    resource = uuid4()

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role) "
                "SELECT gen_random_uuid(), t, gen_random_uuid(), :r, 'viewer' "
                "FROM unnest(CAST(:tenants AS uuid[])) AS t, generate_series(1, 500)"
            ),
            {"r": resource, "tenants": tenants},
        )
        versions = [_version(conn, tenant) for tenant in tenants]

    assert versions == [1, 1]


def test_update_that_matches_no_row_bumps_nothing(engine: Engine) -> None:
    tenant = uuid4()

    with engine.begin() as conn:
        conn.execute(
            text("UPDATE role_bindings SET revoked_at = now() WHERE tenant_id = :t"),
            {"t": tenant},
        )
        rows = conn.execute(
            text("SELECT count(*) FROM reference_versions WHERE tenant_id = :t"), {"t": tenant}
        ).scalar_one()

    assert rows == 0


_VERSION_OBJECTS = text(
    """
    SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%bump_reference_version%'),
           (SELECT count(*) FROM pg_proc WHERE proname LIKE 'reference_versions_bump%'),
           to_regclass('reference_versions') IS NOT NULL
    """
)


def test_migration_0004_downgrades_to_0003_and_upgrades_again(database_url: str) -> None:
    from activity_pipeline.demo.loader import drop_database, recreate_database

    name = f"{TEST_DATABASE}_versions"
    url = recreate_database(database_url, name)
    engine = create_engine(for_sqlalchemy_sync(url))
    tenant = uuid4()
    try:
        command.downgrade(alembic_config(url), "0003")
        with engine.begin() as conn:
            downgraded = tuple(conn.execute(_VERSION_OBJECTS).one())
            _grant(conn, tenant, uuid4())
        command.upgrade(alembic_config(url), "head")
        with engine.begin() as conn:
            upgraded = tuple(conn.execute(_VERSION_OBJECTS).one())
            version_after_upgrade = _version(conn, tenant)
            _grant(conn, tenant, uuid4())
            version_after_grant = _version(conn, tenant)
    finally:
        engine.dispose()
        drop_database(database_url, name)

    assert downgraded == (0, 0, False)
    assert upgraded == (14, 4, True)
    assert (version_after_upgrade, version_after_grant) == (0, 1)
