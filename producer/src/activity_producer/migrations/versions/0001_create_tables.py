"""Create the activity, outbox and reference tables, and the relay's wake-up trigger.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


_NOTIFY_FUNCTION = """
CREATE FUNCTION activity_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One notification per statement; PostgreSQL delivers it when the transaction commits.
    PERFORM pg_notify('activity_outbox', '');
    RETURN NULL;
END;
$$
"""

_NOTIFY_TRIGGER = """
CREATE TRIGGER activity_outbox_notify AFTER INSERT ON activity_outbox
FOR EACH STATEMENT EXECUTE FUNCTION activity_outbox_notify()
"""


def upgrade() -> None:
    op.create_table(
        "activities",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("correlation_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.UUID(), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("actor_principal_id", sa.UUID(), nullable=False),
        sa.Column("target_principal_id", sa.UUID(), nullable=True),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "visibility IN ('private', 'resource', 'scope', 'tenant')",
            name=op.f("activities_visibility_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("activities_pkey")),
        sa.UniqueConstraint(
            "tenant_id",
            "correlation_id",
            "action",
            "resource_id",
            name=op.f("activities_tenant_id_correlation_id_action_resource_id_key"),
        ),
    )
    op.create_table(
        "activity_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("message_key", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("activity_outbox_pkey")),
    )
    op.create_index(
        "activity_outbox_unsent_idx",
        "activity_outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "inbox_notifications",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("principal_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("notification", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "principal_id", "event_id", name=op.f("inbox_notifications_pkey")
        ),
    )
    op.create_table(
        "notification_preferences",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("principal_id", sa.UUID(), nullable=False),
        sa.Column("filter_mode", sa.String(length=16), nullable=False),
        sa.Column(
            "custom_actions",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "filter_mode IN ('muted', 'all', 'mutations', 'custom')",
            name=op.f("notification_preferences_filter_mode_check"),
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "principal_id", name=op.f("notification_preferences_pkey")
        ),
    )
    op.create_table(
        "resources",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("owner_principal_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("resources_pkey")),
    )
    op.create_index("resources_parent_idx", "resources", ["tenant_id", "parent_id"], unique=False)
    op.create_table(
        "role_bindings",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("principal_id", sa.UUID(), nullable=False),
        sa.Column("resource_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("role_bindings_pkey")),
    )
    op.create_index(
        "role_bindings_active_idx",
        "role_bindings",
        ["tenant_id", "resource_id"],
        unique=False,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("principal_id", sa.UUID(), nullable=False),
        sa.Column("resource_id", sa.UUID(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scope IN ('resource', 'descendants')", name=op.f("subscriptions_scope_check")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("subscriptions_pkey")),
    )
    op.create_index(
        "subscriptions_active_idx",
        "subscriptions",
        ["tenant_id", "resource_id"],
        unique=False,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_index(
        "subscriptions_active_key",
        "subscriptions",
        ["tenant_id", "principal_id", "resource_id", "scope"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )

    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER activity_outbox_notify ON activity_outbox")
    op.execute("DROP FUNCTION activity_outbox_notify()")
    op.drop_index(
        "subscriptions_active_key",
        table_name="subscriptions",
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_index(
        "subscriptions_active_idx",
        table_name="subscriptions",
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_table("subscriptions")
    op.drop_index(
        "role_bindings_active_idx",
        table_name="role_bindings",
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_table("role_bindings")
    op.drop_index("resources_parent_idx", table_name="resources")
    op.drop_table("resources")
    op.drop_table("notification_preferences")
    op.drop_table("inbox_notifications")
    op.drop_index(
        "activity_outbox_unsent_idx",
        table_name="activity_outbox",
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_table("activity_outbox")
    op.drop_table("activities")
