"""Record why the relay sent an outbox row to the dead-letter topic.

Revision ID: 0002
Revises: 0001

A nullable column without a default: adding it rewrites nothing, so it is
safe on a large outbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("activity_outbox", sa.Column("dead_letter_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("activity_outbox", "dead_letter_reason")
