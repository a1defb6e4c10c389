"""Keep a per-tenant version of the reference data, bumped by triggers, for the workers' caches.

Revision ID: 0004
Revises: 0003

Every enrichment worker caches reference data between batches and reads the
versions of its batch's tenants once per batch; a tenant whose version moved
is forgotten and loaded again. The triggers are statement-level with
transition tables, so a bulk load costs one upsert per tenant, not per row.
A missing row means version 0.

Inserting a resource does not bump, because services insert resources
constantly and a bump makes every worker reload the whole tenant. Only the
worker that consumes the new resource's partition can have cached it as
missing, and the resource's own `resource.*` activity reaches that worker.
Moving a resource (`parent_id`), changing its owner, changing its key or
deleting it does bump. TRUNCATE bumps nothing because its tenants are
unknown, so the cache's lifetime covers it.

The upsert locks the tenant's row until the writing transaction ends: two
concurrent transactions that change one tenant's reference data serialize on
that row until the first commits or rolls back. That is acceptable because
such changes are rare and short next to activities, resource inserts never
take the lock, and readers never wait for it (the workers read the committed
version). In exchange the version commits together with the rows it covers,
and concurrent changes can never share one version. Tenants are upserted in
tenant-id order, so two statements touching several tenants lock them in the
same order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACCESS_TABLES = (
    "role_bindings",
    "subscriptions",
    "notification_preferences",
    "tenant_notification_defaults",
)
"""Tables whose every insert, update and delete bumps the versions of the tenants touched."""

_TOUCHED_TENANTS = {
    "inserted": "SELECT tenant_id FROM new_rows",
    "updated": "SELECT tenant_id FROM old_rows UNION SELECT tenant_id FROM new_rows",
    "deleted": "SELECT tenant_id FROM old_rows",
    # Resources: only what a cached chain depends on (parent, owner, key, the row itself).
    "moved": (
        "SELECT o.tenant_id FROM old_rows o "
        "LEFT JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id "
        "WHERE n.id IS NULL OR n.parent_id IS DISTINCT FROM o.parent_id "
        "OR n.owner_principal_id IS DISTINCT FROM o.owner_principal_id"
    ),
}
"""The tenants each bump function reads from the statement's transition tables."""

_BUMP_FUNCTION = """
CREATE FUNCTION reference_versions_bump_{kind}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One upsert per tenant the statement touched, however many rows it wrote.
    INSERT INTO reference_versions (tenant_id, version)
    SELECT tenant_id, 1 FROM ({tenants}) AS touched(tenant_id)
    GROUP BY tenant_id ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET version = reference_versions.version + 1;
    RETURN NULL;
END;
$$
"""

_TRANSITION_TABLES = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
}
"""PostgreSQL allows transition tables only on single-event triggers, so one trigger per event."""

_ACCESS_BUMPS = {"INSERT": "inserted", "UPDATE": "updated", "DELETE": "deleted"}
_RESOURCE_BUMPS = {"UPDATE": "moved", "DELETE": "deleted"}


def _triggers() -> list[tuple[str, str, str, str]]:
    """Return (trigger name, table, event, function) of every trigger this revision creates."""
    events = [(table, _ACCESS_BUMPS) for table in ACCESS_TABLES] + [("resources", _RESOURCE_BUMPS)]
    return [
        (
            f"{table}_bump_reference_version_{event.lower()}",
            table,
            event,
            f"reference_versions_bump_{kind}",
        )
        for table, bumps in events
        for event, kind in bumps.items()
    ]


def upgrade() -> None:
    op.create_table(
        "reference_versions",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("reference_versions_pkey")),
    )
    for kind, tenants in _TOUCHED_TENANTS.items():
        op.execute(_BUMP_FUNCTION.format(kind=kind, tenants=tenants))
    for name, table, event, function in _triggers():
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON {table} {_TRANSITION_TABLES[event]} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    # IF EXISTS: a host platform may have replaced a reference table with a view since.
    for name, table, _, _ in reversed(_triggers()):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for kind in _TOUCHED_TENANTS:
        op.execute(f"DROP FUNCTION reference_versions_bump_{kind}()")
    op.drop_table("reference_versions")
