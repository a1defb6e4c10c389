"""Add the tenants' default notification preferences, which a principal's own overrides.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_notification_defaults",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
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
            name=op.f("tenant_notification_defaults_filter_mode_check"),
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("tenant_notification_defaults_pkey")),
    )


def downgrade() -> None:
    op.drop_table("tenant_notification_defaults")
